"""The one preprocessing function: every mode, centring without upscaling, transparency, limits, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pokedex.model.classifier import normalize
from pokedex.preprocess import (
    ImageError,
    ImageTooLargeError,
    PreprocessSpec,
    bytes_to_array,
    image_to_array,
    open_image,
)
from tests.helpers.images import encode, png_header_only


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_canonical_rgba(mode: str) -> None:
    image = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode)
    array = image_to_array(image, 32)
    assert array.shape == (4, 32, 32) and array.dtype == np.uint8
    assert array[3, 16, 16] == 255  # the image is opaque where it was pasted
    assert array[3, 0, 0] == 0  # ...and the canvas around it is transparent


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    image = Image.frombytes("I;16", (4, 4), np.full((4, 4), 65535, dtype="<u2").tobytes())
    assert image_to_array(image, 4)[:3].min() == 255


def test_small_images_are_centred_never_upscaled() -> None:
    image = Image.new("RGBA", (10, 6), (255, 0, 0, 255))
    array = image_to_array(image, 32)
    ys, xs = np.nonzero(array[3])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (11, 20, 13, 18)  # 10×6 exactly, centred


def test_large_images_are_fitted_keeping_aspect() -> None:
    array = image_to_array(Image.new("RGB", (400, 200), (0, 0, 255)), 100)
    ys, xs = np.nonzero(array[3])
    assert xs.max() - xs.min() + 1 == 100 and ys.max() - ys.min() + 1 == 50


def test_transparent_pixels_carry_no_colour() -> None:
    image = Image.new("RGBA", (8, 8), (123, 45, 67, 0))  # hidden colour under alpha 0
    assert image_to_array(image, 8).max() == 0


def test_palette_transparency_is_kept() -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 1
    assert image_to_array(image, 8)[3].max() == 0


def test_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    array = bytes_to_array(buffer.getvalue(), 8)
    assert array[0, 4, 4] > 200 and array[1, 4, 4] < 50


@pytest.mark.parametrize("side", [2_000, 100_000])  # below and above Pillow's own bomb threshold
def test_decompression_bomb_rejected_before_decoding(side: int) -> None:
    with pytest.raises(ImageTooLargeError, match=rf"upload: .*{side * side} pixels.* limit .*1000000 pixels"):
        open_image(png_header_only(side, side), max_pixels=1_000_000, name="upload")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "x: empty file"),
        (b"hello, not an image", "x: not a recognised image format"),
    ],
)
def test_bad_bytes_have_specific_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        bytes_to_array(data, 8, name="x")


def test_truncated_png_is_reported() -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(ImageError, match="x: truncated or corrupt image data"):
        bytes_to_array(data[: len(data) // 2], 8, name="x")


def test_normalize_matches_spec_for_uint8_and_unit_float() -> None:
    spec = PreprocessSpec(image_size=8)
    batch = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 4, 2, 2).contiguous()
    out = normalize(batch, spec)
    assert out.dtype == torch.float32 and out.min() == -1.0 and out.max() == 1.0
    assert torch.equal(normalize(batch.float() / 255, spec), out)


def test_spec_round_trips_and_validates() -> None:
    spec = PreprocessSpec(image_size=64, mean=(0.1, 0.2, 0.3, 0.4))
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="one value per RGBA channel"):
        PreprocessSpec(mean=(0.5, 0.5, 0.5))
