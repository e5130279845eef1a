"""The learned segmentation (``pokedex.segmenter``): the shipped weights are the ones the preprocessing version
names, it runs on smooth (photo) backgrounds only, deterministically, and on a sprite on a photo saved as JPEG it
finds the silhouette better than the edge rules alone."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
from importlib.resources import files

import numpy as np
import pytest
from PIL import Image

import pokedex.background as background
from pokedex import segmenter
from pokedex.background import estimate_background, jpeg_tolerance
from pokedex.preprocess import image_to_canonical
from pokedex.reencode import composite, photo
from tests.helpers.images import encode, flatten, make_sprite


def test_the_shipped_weights_are_the_ones_the_preprocessing_version_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """New weights change every photo's canonical array: they need a new digest and a PREPROCESS_VERSION bump,
    and other weights than the named ones are refused, not used."""
    shipped = files("pokedex").joinpath(segmenter.SEGMENTER_FILE).read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == segmenter.SEGMENTER_SHA256
    monkeypatch.setattr(segmenter, "SEGMENTER_SHA256", "0" * 64)
    monkeypatch.setattr(segmenter, "_sessions", {})
    with pytest.raises(
        RuntimeError, match=r"segmenter\.onnx has sha256 [0-9a-f]{64}, not the 0{64}.*PREPROCESS_VERSION"
    ):
        segmenter.refine([np.zeros((8, 8), np.uint8)] * 3, np.zeros((8, 8), bool))


def test_a_missing_network_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segmenter, "SEGMENTER_FILE", "assets/absent.onnx")
    monkeypatch.setattr(segmenter, "_sessions", {})
    with pytest.raises(RuntimeError, match=r"pokedex/assets/absent\.onnx is missing.*reinstall"):
        segmenter.refine([np.zeros((8, 8), np.uint8)] * 3, np.zeros((8, 8), bool))


def _on_photo_jpeg(seed: int, quality: int = 75) -> tuple[Image.Image, np.ndarray]:
    """A sprite-like picture at a random place on an out-of-focus photo twice its size, saved as JPEG (4:2:0):
    the decoded file and the sprite's true silhouette."""
    sprite, rng = make_sprite(body=_BODIES[seed % len(_BODIES)]), np.random.default_rng(seed)
    placed = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    placed.paste(sprite, tuple(int(v) for v in rng.integers(0, 128 - sprite.width + 1, 2)))
    upload = composite(placed, photo(placed.size, rng)).convert("RGB")
    return Image.open(io.BytesIO(encode(upload, "JPEG", quality=quality))), np.asarray(placed)[..., 3] > 0


_BODIES = ((90, 160, 220), (200, 120, 90), (120, 200, 110), (230, 210, 120))


def _errors(found: np.ndarray, truth: np.ndarray) -> int:
    """Pixels kept from the background plus pixels of the sprite lost."""
    return int(np.count_nonzero(found != truth))


def test_on_a_photo_saved_as_jpeg_the_network_finds_the_sprite_better_than_the_rules() -> None:
    rules = learned = 0
    for seed in range(8):
        image, truth = _on_photo_jpeg(seed)
        rgb = image.convert("RGB")
        by_rules = estimate_background(rgb, jpeg_tolerance(image), learned=False)
        by_network = estimate_background(rgb, jpeg_tolerance(image))
        assert by_rules.kind == by_network.kind == "smooth", seed
        rules += _errors(by_rules.foreground, truth)
        learned += _errors(by_network.foreground, truth)
    assert learned < rules


def test_only_a_small_picture_on_a_smooth_background_runs_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transparent sprites, flat colours (JPEG too) and texture keep their rule-based silhouettes: the network
    costs milliseconds and was trained on photos only; so do photos larger than the analysis size, analysed on a
    box-averaged copy unlike the pictures it was trained on."""

    def refuse(*_: object) -> np.ndarray:
        raise AssertionError("the network ran")

    monkeypatch.setattr(background, "refine", refuse)
    sprite = make_sprite()
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    uploads = {
        "alpha": sprite,
        "estimated": Image.open(io.BytesIO(encode(flatten(sprite, (255, 255, 255)), "JPEG", quality=75))),
        "texture": composite(sprite, noise).convert("RGB"),
        "smooth": _on_photo_jpeg(0)[0].resize((256, 256), Image.Resampling.NEAREST),
    }
    for kind, upload in uploads.items():
        assert image_to_canonical(upload, 32)[1].background == kind
    with pytest.raises(AssertionError, match="the network ran"):
        image_to_canonical(_on_photo_jpeg(0)[0], 32)


def _foreground(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    return estimate_background(image.convert("RGB"), jpeg_tolerance(image)).foreground


def test_the_network_gives_the_same_silhouette_every_time_and_in_a_forked_worker() -> None:
    """One thread, one session per process: a DataLoader worker forked after the parent used the network gets
    the parent's answer."""
    data = encode(_on_photo_jpeg(3)[0], "PNG")
    first = _foreground(data)
    assert np.array_equal(first, _foreground(data))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert np.array_equal(first, pool.apply(_foreground, (data,)))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_labels_stay_in_the_mask_and_within_the_count(connectivity: int) -> None:
    """cc3d 4.1.1 labels a few pixels outside the mask with 8-connectivity, and returns a count below its
    largest label: a per-label array sized by it crashed the network's blob filter (``_keep_blobs`` with
    ``touching``) in training, and such a pixel would join a kept blob."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        mask = rng.random(tuple(int(v) for v in rng.integers(5, 80, 2))) < rng.random()
        labels, count = background._label(mask, connectivity)
        assert labels.max(initial=0) == count and np.array_equal(labels > 0, mask)
        assert np.array_equal(background._keep_blobs(mask, touching=mask), background._keep_blobs(mask))


def test_the_blob_filter_keeps_only_blobs_that_touch_the_rules_silhouette() -> None:
    """The network moves the rules' outline but adds no blob of its own; the share is of the largest blob kept."""
    learned = np.zeros((20, 40), dtype=bool)
    learned[2:12, 2:12] = True  # 100 cells, touches the rules' silhouette
    learned[2:6, 20:24] = True  # 16 cells, touches it: 16% of the largest kept
    learned[5:19, 26:40] = True  # 196 cells, the network's own: dropped, and not the share's reference
    rules = np.zeros_like(learned)
    rules[5, 5] = rules[3, 21] = True
    kept = background._keep_blobs(learned, share=0.15, touching=rules)
    assert np.array_equal(kept, learned & (np.arange(40) < 26))
    assert not background._keep_blobs(learned, share=0.2, touching=rules)[2:6, 20:24].any()
