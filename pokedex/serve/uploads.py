"""Untrusted request bodies: the size cap enforced while streaming, and uploaded bytes → model input.

Decoding goes through the one shared image path (``pokedex.drift.records.decode_with_facts``: the canonical
array and the upload's facts in one pass); this module only decides which bytes may reach it and maps its
errors to HTTP statuses:

* 400 empty, truncated or corrupt data;
* 413 a body over ``max_upload_mb`` (before it is read in full) or an image over ``max_pixels`` (checked from
  the header, before decoding);
* 415 anything that is not PNG, JPEG, GIF, WebP or BMP (text, PDF, TIFF, EPS...), recognised from its magic
  bytes, and bytes that carry one format's magic but that format's decoder does not recognise: Pillow is only
  ever allowed the one decoder the magic bytes name (``formats=(fmt,)``), never its other ~40.

Only decoding errors are the client's: anything else raised by the preprocessing propagates (the service
answers 500 and logs it at ERROR).
"""

from __future__ import annotations

import logging

import numpy as np
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pokedex.drift.records import UploadFacts, decode_with_facts
from pokedex.preprocess import ImageError, ImageTooLargeError, UnrecognisedImageError

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


def decode_upload(
    data: bytes, *, image_size: int, max_pixels: int, name: str = "upload"
) -> tuple[np.ndarray, UploadFacts]:
    """Uploaded bytes → (canonical uint8 RGBA (4, S, S) array, facts), or ``UploadError`` with status and message.

    ``name`` appears in messages; it is ours ("upload", "file #2"), never the client's filename.
    """
    if not data:
        raise UploadError(400, f"{name}: empty file")
    fmt = sniff_format(data)
    if fmt is None:
        raise UploadError(415, f"{name}: not a supported image format (send {_SUPPORTED_TEXT})")
    try:
        return decode_with_facts(data, image_size, max_pixels=max_pixels, formats=(fmt,), name=name)
    except ImageTooLargeError as exc:
        raise UploadError(413, str(exc)) from exc
    except UnrecognisedImageError as exc:
        raise UploadError(
            415, f"{name}: starts like {fmt} but is not a valid {fmt} image (send {_SUPPORTED_TEXT})"
        ) from exc
    except ImageError as exc:  # open_image reports every decoder failure (OSError, SyntaxError...) as one
        log.info("%s: %s", name, exc)
        raise UploadError(400, str(exc)) from exc


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
