"""The one set of test-image builders: small PNGs of a coloured square, any format, and decompression bombs."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from PIL import Image


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
