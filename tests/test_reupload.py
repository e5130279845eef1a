"""Re-uploaded training images: the same pixels serving computes for that upload, a ``p`` share, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pokedex.data.archive import read_index
from pokedex.data.cache import ensure_cache
from pokedex.data.reupload import Reupload, ReuploadDataset
from pokedex.evaluation.conditions import flatten
from pokedex.preprocess import bytes_to_array, image_to_array

SIZE = 64


def outlined_sprite() -> np.ndarray:
    """A canonical (4, S, S) sprite: an orange disc with a near-black outline, like most game sprites."""
    yy, xx = np.mgrid[:48, :40]
    distance = np.hypot(yy - 23.5, xx - 19.5)
    rgba = np.zeros((48, 40, 4), dtype=np.uint8)
    rgba[distance < 19] = (20, 16, 24, 255)
    rgba[distance < 16] = (240, 130, 40, 255)
    return image_to_array(Image.fromarray(rgba, mode="RGBA"), SIZE)


def upload_of(sprite: np.ndarray, colour: str, fmt: str = "PNG", quality: int | None = None) -> bytes:
    """What a person would upload, as the robustness suite's ``flatten`` condition makes it: the sprite flattened
    onto ``colour``, encoded without an alpha channel."""
    rgba = Image.fromarray(sprite.transpose(1, 2, 0), mode="RGBA")
    return flatten(rgba, np.random.default_rng(0), colour=colour, fmt=fmt, quality=quality)


@pytest.mark.parametrize("colour", ["white", "black"])
def test_a_reupload_is_what_serving_computes_for_that_upload(colour: str) -> None:
    sprite = outlined_sprite()
    out = Reupload(p=1.0, colours={colour: 1.0}, jpeg_p=0.0)(sprite, np.random.default_rng(0))
    assert np.array_equal(out, bytes_to_array(upload_of(sprite, colour), SIZE))


def test_on_black_the_dark_outline_goes_with_the_background() -> None:
    """The point of re-uploading for real: on black the preprocessing cannot tell outline from background, so
    the model must learn the sprite without it; on white the outline stays."""
    sprite = outlined_sprite()
    visible = (sprite[3] > 0).sum()
    on = {name: Reupload(p=1.0, colours={name: 1.0}, jpeg_p=0.0)(sprite, np.random.default_rng(0))
          for name in ("white", "black")}  # fmt: skip
    assert abs(int((on["white"][3] > 0).sum()) - visible) < 0.06 * visible  # antialiased rim pixels aside
    # the disc without its ring, scaled back up to fill the canvas: no dark outline pixels are left
    dark = (on["black"][:3].max(axis=0) < 60) & (on["black"][3] > 0)
    assert dark.sum() < 0.04 * (on["black"][3] > 0).sum()  # a resampled rim at most
    assert ((sprite[:3].max(axis=0) < 60) & (sprite[3] > 0)).sum() > 0.1 * visible


def test_jpeg_reuploads_carry_real_compression_artefacts() -> None:
    sprite = outlined_sprite()
    reupload = Reupload(p=1.0, colours={"white": 1.0}, jpeg_p=1.0, jpeg_quality=(30, 30))
    out = reupload(sprite, np.random.default_rng(0))
    assert np.array_equal(out, bytes_to_array(upload_of(sprite, "white", "JPEG", quality=30), SIZE))
    assert not np.array_equal(
        out, Reupload(p=1.0, colours={"white": 1.0}, jpeg_p=0.0)(sprite, np.random.default_rng(0))
    )


def test_a_p_share_of_the_batch_is_reuploaded_reproducibly() -> None:
    batch = np.stack([outlined_sprite()] * 400)
    reupload = Reupload(p=0.3, colours={"black": 1.0}, jpeg_p=0.0)
    first, second = batch.copy(), batch.copy()
    reupload.apply(first, np.random.default_rng(7))
    reupload.apply(second, np.random.default_rng(7))
    assert np.array_equal(first, second)
    changed = (first != batch).reshape(len(batch), -1).any(axis=1).sum()
    assert 90 <= changed <= 150  # binomial(400, 0.3): mean 120, sd 9
    untouched = batch.copy()
    Reupload(p=0.0).apply(untouched, np.random.default_rng(0))
    assert np.array_equal(untouched, batch)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"colours": {"purple": 1.0}}, "colours"), ({"colours": {"white": -1.0}}, "colours"),
     ({"jpeg_quality": (50, 100)}, "jpeg_quality"), ({"jpeg_quality": (80, 40)}, "jpeg_quality")],
)  # fmt: skip
def test_bad_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"data.reupload.{field}"):
        Reupload(p=0.5, **kwargs)


def test_wraps_the_decoded_cache_batch_reads_in_worker_processes(synthetic_zip: Path, tmp_path: Path) -> None:
    """The cache reads whole batches (``__getitems__``); the wrapper keeps that, and each worker draws its own
    stream, seeded by torch (so two workers do not re-upload the same way, and a seeded run repeats)."""
    cache = ensure_cache(synthetic_zip, tmp_path / "cache", 32)
    members = [(m.path, m.label) for m in read_index(synthetic_zip).split("train")]
    plain = cache.dataset(members)
    wrapped = ReuploadDataset(plain, Reupload(p=1.0, jpeg_p=0.0))

    def epoch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(wrapped, batch_size=8, num_workers=2, collate_fn=wrapped.collate_fn)
        images, labels = zip(*loader, strict=True)
        return torch.cat(images), torch.cat(labels)

    images, labels = epoch(0)
    reference, reference_labels = plain.__getitems__(list(range(len(plain))))
    assert torch.equal(labels, reference_labels)
    assert images.shape == reference.shape and images.dtype == torch.uint8
    assert not torch.equal(images, reference)
    assert torch.equal(epoch(0)[0], images)
    assert not torch.equal(epoch(1)[0], images)
