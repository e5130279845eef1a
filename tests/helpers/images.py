"""The one set of test-image builders: small PNGs of a coloured square, any format, decompression bombs, and a
sprite-like picture with an outline (flattened onto a colour as people upload it)."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def square_sprite(colour: tuple[int, ...], size: int = 40, square: int | None = None) -> Image.Image:
    """A centred opaque square of ``colour`` on a transparent canvas: the simplest sprite-like RGBA image."""
    square = square or size // 2
    fill = (*colour[:3], colour[3] if len(colour) > 3 else 255)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (square, square), fill), ((size - square) // 2, (size - square) // 2))
    return image


def png_bytes(colour: tuple[int, ...], size: int = 40, square: int | None = None) -> bytes:
    return encode(square_sprite(colour, size, square), "PNG")


def png_header_only(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims ``width``×``height`` RGBA pixels: a decompression bomb, cheaply."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def make_sprite(body: tuple[int, int, int] = (90, 160, 220), size: int = 64) -> Image.Image:
    """A sprite-like RGBA picture: binary alpha, a 2-px dark outline, a light eye, centred-ish on transparency."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((12, 8, 52, 58), fill=(*body, 255), outline=(40, 40, 40, 255), width=2)
    draw.rectangle((24, 22, 28, 26), fill=(250, 250, 250, 255))
    return image


def flatten(sprite: Image.Image, colour: tuple[int, int, int], size: int | None = None, at=(0, 0)) -> Image.Image:
    """What an upload looks like: the sprite composited onto an opaque colour, alpha dropped."""
    canvas = Image.new("RGBA", (size or sprite.width, size or sprite.height), (*colour, 255))
    canvas.alpha_composite(sprite, at)
    return canvas.convert("RGB")


def foreground_diff(array: np.ndarray, clean: np.ndarray) -> float:
    """Mean absolute RGB difference over the clean sprite's foreground."""
    mask = clean[3] > 0
    return float(np.abs(array[:3].astype(int) - clean[:3].astype(int))[:, mask].mean())


def alpha_iou(array: np.ndarray, clean: np.ndarray) -> float:
    """Overlap of two canonical alphas: the content found, at the place and scale the fit gives it."""
    found, true = array[3] > 0, clean[3] > 0
    return float((found & true).sum() / (found | true).sum())
