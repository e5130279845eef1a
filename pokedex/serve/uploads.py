"""Untrusted request bodies: the size cap enforced while streaming, and uploaded bytes → model input.

Decoding goes through ``pokedex.preprocess.bytes_to_array`` (the one shared image path); this module only
decides which bytes may reach it and maps its errors to HTTP statuses:

* 400 empty, truncated or corrupt data;
* 413 a body over ``max_upload_mb`` (before it is read in full) or an image over ``max_pixels`` (checked from
  the header, before decoding);
* 415 anything that is not PNG, JPEG, GIF, WebP or BMP (text, PDF, TIFF, EPS...), recognised from its magic
  bytes so that Pillow never parses other formats from the network.
"""

from __future__ import annotations

import logging

import numpy as np
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pokedex.preprocess import ImageError, ImageTooLargeError, bytes_to_array

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
_SUPPORTED_TEXT = "PNG, JPEG, GIF, WebP or BMP"


class UploadError(Exception):
    """A rejected upload: an HTTP status and a message naming the problem."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def sniff_format(data: bytes) -> str | None:
    """The image format announced by the magic bytes, if it is one we accept."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    return None


def decode_upload(data: bytes, *, image_size: int, max_pixels: int, name: str = "upload") -> np.ndarray:
    """Uploaded bytes → canonical uint8 RGBA (4, S, S) array, or ``UploadError`` with status and message.

    ``name`` appears in messages; it is ours ("upload", "file #2"), never the client's filename.
    """
    if not data:
        raise UploadError(400, f"{name}: empty file")
    if sniff_format(data) is None:
        raise UploadError(415, f"{name}: not a supported image format (send {_SUPPORTED_TEXT})")
    try:
        return bytes_to_array(data, image_size, max_pixels=max_pixels, name=name)
    except ImageTooLargeError as exc:
        raise UploadError(413, str(exc)) from exc
    except ImageError as exc:
        raise UploadError(400, str(exc)) from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError... for some corrupt headers: still a 400
        log.info("%s: decoder raised %s: %s", name, type(exc).__name__, exc)
        raise UploadError(400, f"{name}: truncated or corrupt image data ({exc})") from exc


def too_large_message(limit_bytes: int, size: int | None = None) -> str:
    got = f"{size} bytes" if size is not None else "the request body"
    return f"upload: {got} exceeds the limit of {limit_bytes / 2**20:g} MB"


class BodySizeLimitMiddleware:
    """413 for request bodies over ``max_bytes``: from Content-Length before reading, else while streaming.

    The byte count is checked in ``receive``, so a chunked upload is cut off as soon as it crosses the limit
    instead of being spooled in full by the multipart parser.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": too_large_message(self.max_bytes, int(length))}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)
