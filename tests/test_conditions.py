"""Real-upload conditions: built from the suite config, deterministic, decoding as described, and recovered by
the version-2 preprocessing (flattened and off-centre uploads give back the clean sprite's canonical array)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from pokedex.evaluation.conditions import KINDS, Condition, Suite, condition_rng
from pokedex.preprocess import bytes_to_array, image_to_array
from tests.helpers.images import alpha_iou, foreground_diff

SUITE = Path(__file__).resolve().parents[1] / "conf" / "suite" / "default.yaml"
SIZE = 64


def sprite() -> Image.Image:
    """Pixel-art-like: binary alpha, dark outline, two body colours and a light patch, off the canvas centre."""
    image = Image.new("RGBA", (80, 72), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 6, 58, 66), fill=(220, 90, 60, 255), outline=(36, 30, 40, 255), width=2)
    draw.rectangle((22, 40, 46, 56), fill=(250, 220, 120, 255))
    draw.polygon([(50, 20), (74, 12), (56, 34)], fill=(90, 160, 220, 255), outline=(36, 30, 40, 255))
    return image


@pytest.fixture(scope="module")
def suite() -> dict[str, Condition]:
    built = instantiate(OmegaConf.load(SUITE))
    assert isinstance(built, Suite) and built.seed == 0
    return {c.name: c for c in built.conditions}


def upload(condition: Condition, image: Image.Image, seed: int, key: str) -> bytes:
    """How the suite calls a condition: its generator depends on (seed, condition, image key) only."""
    return condition(image, condition_rng(seed, condition.name, key))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_suite_config_builds_named_conditions(suite: dict[str, Condition]) -> None:
    assert len(suite) == len(OmegaConf.load(SUITE).conditions), "condition names are unique"
    with pytest.raises(ValueError, match="duplicate condition names"):
        Suite(conditions=(suite["white"], suite["white"]))
    assert all(isinstance(c, Condition) and c.kind in KINDS for c in suite.values())
    wanted = {"white", "black", "colour", "busy_noise", "jpeg95", "jpeg75", "jpeg50", "corner_half", "corner_3x"}
    assert wanted | {"blur", "resample_third", "white_opaque_rgba"} <= set(suite)


def test_same_seed_same_bytes_and_the_seed_matters(suite: dict[str, Condition]) -> None:
    image = sprite()
    for condition in suite.values():
        assert upload(condition, image, 0, "a/1.png") == upload(condition, image, 0, "a/1.png"), condition.name
    for name in ("colour", "busy_noise", "busy_gradient", "busy_photo"):  # conditions that draw from the generator
        assert upload(suite[name], image, 0, "a/1.png") != upload(suite[name], image, 1, "a/1.png"), name
    assert condition_rng(0, "x", "k").integers(1 << 30) == condition_rng(0, "x", "k").integers(1 << 30)


def test_decoded_uploads_look_as_described(suite: dict[str, Condition]) -> None:
    image = sprite()
    out = {name: decode(upload(c, image, 0, "k")) for name, c in suite.items()}
    for name in ("white", "black", "colour", "busy_noise", "busy_gradient", "busy_photo"):
        assert (out[name].format, out[name].mode, out[name].size) == ("PNG", "RGB", image.size), name
    assert out["white_opaque_rgba"].mode == "RGBA" and out["white_opaque_rgba"].getchannel("A").getextrema() == (
        255,
        255,
    )
    assert np.asarray(out["black"])[0, 0].tolist() == [0, 0, 0]
    for name in ("jpeg95", "jpeg75", "jpeg50"):
        assert (out[name].format, out[name].mode, out[name].size) == ("JPEG", "RGB", image.size), name
    for name, scale in (("corner", 1.0), ("corner_half", 0.5), ("corner_3x", 3.0)):
        placed = out[name]
        assert placed.mode == "RGBA" and placed.width == round(80 * scale * 2.5), name
        left, top, right, bottom = placed.getbbox()
        off_x, off_y = abs(left + right - placed.width) / 2, abs(top + bottom - placed.height) / 2
        assert min(off_x, off_y) > 0.15 * placed.width, f"{name}: off-centre, towards a corner"
    for name in ("blur", "resample_third"):
        assert out[name].mode == "RGBA" and out[name].size == image.size, name
    assert out["blur"].getchannel("A").getextrema() == (0, 255) and np.asarray(out["blur"])[..., 3].mean() > 0


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("white", 0.0),
        ("black", 0.0),
        ("colour", 0.0),
        ("white_opaque_rgba", 0.0),
        ("corner", 0.0),
        ("corner_3x", 4.0),  # 3× nearest then Lanczos down vs whole-multiple nearest up then Lanczos down
        ("jpeg95", 7.0),  # JPEG's own colour error: 6.0 with the true alpha mask
        ("jpeg75", 12.0),  # 9.4 with the true mask: ringing moves the found edge by about a pixel
        ("corner_half", 15.0),  # half the pixels are gone: a blurred copy, but at the right place and scale
    ],
)
def test_preprocessing_recovers_the_clean_sprite(suite: dict[str, Condition], name: str, tolerance: float) -> None:
    image = sprite()
    clean = image_to_array(image, SIZE)
    array = bytes_to_array(upload(suite[name], image, 0, "k"), SIZE)
    diff, overlap = foreground_diff(array, clean), alpha_iou(array, clean)
    assert diff <= tolerance and overlap > (0.85 if name == "corner_half" else 0.95), (name, diff, overlap)


def test_a_photo_like_background_is_smooth_unlike_noise(suite: dict[str, Condition]) -> None:
    """busy_photo is an out-of-focus photo, not per-pixel texture: neighbouring background pixels differ by a few
    levels (busy_noise: by far more), so the preprocessing removes it as a smooth background, not as texture."""
    image = sprite()
    background = np.asarray(image)[..., 3] == 0

    def roughness(name: str) -> float:
        pixels = np.asarray(decode(upload(suite[name], image, 0, "k")), dtype=np.int16)
        step = np.abs(np.diff(pixels, axis=1)).max(axis=-1)
        return float(step[background[:, 1:] & background[:, :-1]].mean())

    assert roughness("busy_photo") < 20 < 60 < roughness("busy_noise")


def eight_uploads(condition: Condition) -> tuple[list[float], list[float]]:
    """The preprocessed uploads of eight seeds (image keys) against the clean sprite: colour difference over its
    foreground, and overlap of the alphas."""
    image = sprite()
    clean = image_to_array(image, SIZE)
    arrays = [bytes_to_array(upload(condition, image, 0, key), SIZE) for key in "abcdefgh"]
    return [foreground_diff(a, clean) for a in arrays], [alpha_iou(a, clean) for a in arrays]


@pytest.mark.parametrize(("name", "worst"), [("busy_noise", 0.85), ("busy_gradient", 0.85), ("busy_photo", 0.7)])
def test_busy_backgrounds_are_removed(suite: dict[str, Condition], name: str, worst: float) -> None:
    """Preprocessing v3 removes per-pixel texture around flat content, v5 a smooth background up to the outline.
    A chance flat speck of the gradient's grain next to the outline can survive, and where a photo is as dark as
    the outline, the outline goes with it (one of these eight seeds): the typical upload is judged, and the
    worst one loosely."""
    diffs, overlaps = eight_uploads(suite[name])
    assert np.median(diffs) < 1.0 and np.median(overlaps) > 0.99 and min(overlaps) > worst, (diffs, overlaps)


def test_a_jpeg_photo_is_removed_up_to_its_ringing(suite: dict[str, Condition]) -> None:
    """JPEG rings around the outline and bleeds the photo's colours into the sprite's edge: the silhouette is
    found, but not exactly, and the edge colours are off (on white, jpeg75 differs by 9 levels; here up to 24).
    The typical upload is judged, and the worst one loosely: a patch of photo left beside the outline widens the
    content box, so the whole sprite shifts. On this drawn ellipse v9's learned segmentation, which judges shapes
    by what sprites look like, leaves such patches in two of the eight (137 and 47 pixels; over the eight, 234
    pixels of photo kept, v8's 65); on the suite's real test sprites it keeps less than v8 (docs/robustness.md)."""
    diffs, overlaps = eight_uploads(suite["busy_photo_jpeg"])
    assert np.median(diffs) < 20 and np.median(overlaps) > 0.9 and min(overlaps) > 0.6, (diffs, overlaps)


def test_conditions_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="unknown kind 'sepia'"):
        Condition(name="x", kind="sepia")
    with pytest.raises(ValueError, match="bad parameters for 'flatten'"):
        Condition(name="x", kind="flatten", params={"colur": "white"})
    condition = Condition(name="x", kind="flatten", params=OmegaConf.create({"colour": [10, 20, 30]}))
    assert condition.params == {"colour": (10, 20, 30)}
