"""What people do to a sprite before they upload it: composite it onto a background, shrink it to a thumbnail and
blow it back up, save it as PNG or JPEG.

Shared by the robustness suite (``pokedex.evaluation.conditions`` turns test sprites into uploads) and the
training re-uploads (``pokedex.data.reupload`` does the same to a share of the training images), so the suite
measures exactly what training imitates. A torch-free leaf: data, evaluation and the tests all import it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from types import MappingProxyType

import numpy as np
from PIL import Image

NAMED_COLOURS = MappingProxyType({"white": (255, 255, 255), "black": (0, 0, 0)})


def solid_colour(spec: str | Sequence[int], rng: np.random.Generator) -> tuple[int, int, int]:
    """'white', 'black', 'random' (three draws from ``rng``) or an explicit [r, g, b]."""
    if isinstance(spec, str):
        if spec == "random":
            red, green, blue = (int(v) for v in rng.integers(0, 256, size=3))
            return red, green, blue
        if spec not in NAMED_COLOURS:
            raise ValueError(f"colour: 'white', 'black', 'random' or [r, g, b], got {spec!r}")
        return NAMED_COLOURS[spec]
    red, green, blue = (int(c) for c in spec)
    return red, green, blue


def composite(sprite: Image.Image, background: Image.Image) -> Image.Image:
    """``sprite`` drawn over ``background`` (same size) as an RGBA image, opaque wherever the background is."""
    canvas = background.convert("RGBA")
    canvas.alpha_composite(sprite.convert("RGBA"))
    return canvas


def flatten(sprite: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """A screenshot or "save as": the sprite on an opaque ``colour``, transparency gone (RGB)."""
    return composite(sprite, Image.new("RGB", sprite.size, colour)).convert("RGB")


def photo(size: tuple[int, int], rng: np.random.Generator, *, noise: float = 4.0) -> Image.Image:
    """An out-of-focus photo (RGB): a smooth field of random colours (a 6×6 grid blown up bicubically) plus
    gaussian grain of ``noise`` levels."""
    grid = Image.fromarray(rng.integers(0, 256, size=(6, 6, 3)).astype(np.uint8), mode="RGB")
    smooth = np.asarray(grid.resize(size, Image.Resampling.BICUBIC), dtype=np.float64)
    pixels = smooth + rng.normal(0.0, noise, size=smooth.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), mode="RGB")


def on_photo(sprite: Image.Image, canvas: float, rng: np.random.Generator) -> Image.Image:
    """The sprite at a random place on an out-of-focus ``photo`` ``canvas`` times its size (RGB): a photo
    is larger than what is in it, and the preprocessing finds the sprite by the background around it."""
    width, height = max(sprite.width, round(sprite.width * canvas)), max(sprite.height, round(sprite.height * canvas))
    x, y = int(rng.integers(0, width - sprite.width + 1)), int(rng.integers(0, height - sprite.height + 1))
    placed = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    placed.paste(sprite.convert("RGBA"), (x, y))
    return composite(placed, photo((width, height), rng)).convert("RGB")


def thumbnail(sprite: Image.Image, factor: float) -> Image.Image:
    """A thumbnail blown back up: down by ``factor`` (Lanczos), up to the original size (bicubic), RGBA."""
    rgba = sprite.convert("RGBA")
    small = rgba.resize(
        (max(1, round(rgba.width * factor)), max(1, round(rgba.height * factor))), Image.Resampling.LANCZOS
    )
    return small.resize(rgba.size, Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str = "PNG", quality: int | None = None) -> bytes:
    """The file a user would send: PNG as is, JPEG (no alpha channel) at ``quality`` (default 75)."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality or 75)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()
