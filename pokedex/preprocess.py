"""The one image → tensor path shared by data preparation, training, evaluation, export and serving.

Two halves, so the expensive half runs once:

* ``image_to_array`` turns any decoded PIL image into the canonical ``uint8`` RGBA array (4×S×S): the
  image is fitted (never upscaled) and centred on a transparent square canvas, and the colour of fully
  transparent pixels is zeroed so hidden palette colours can't leak into the model. Datasets, the decoded
  cache and the HTTP service all call it; nothing else converts images.
* ``PreprocessSpec`` records the input size, channel order and normalisation; the normalisation itself runs
  inside the model's ``forward`` (``pokedex.model.classifier.normalize``, and therefore inside the exported
  ONNX graph), so a served model receives exactly the bytes a trained one did. No torch here: the serving
  image has none.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CHANNELS = "RGBA"
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageError(ValueError):
    """An input image that cannot be used; the message says which and why."""


class ImageTooLargeError(ImageError):
    """The image header announces more pixels than allowed (a decompression bomb guard)."""


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to reproduce the model input; stored inside every checkpoint and ONNX sidecar."""

    image_size: int = 128
    channels: str = CHANNELS
    mean: tuple[float, ...] = field(default=(0.5, 0.5, 0.5, 0.5))
    std: tuple[float, ...] = field(default=(0.5, 0.5, 0.5, 0.5))

    def __post_init__(self) -> None:
        if self.channels != CHANNELS:
            raise ValueError(f"preprocess.channels must be {CHANNELS!r}, got {self.channels!r}")
        if self.image_size < 8:
            raise ValueError(f"preprocess.image_size must be >= 8, got {self.image_size}")
        if len(self.mean) != 4 or len(self.std) != 4:
            raise ValueError("preprocess.mean and preprocess.std need one value per RGBA channel (4 each)")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std), "dtype": "uint8", "layout": "NCHW"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        return cls(
            image_size=int(data["image_size"]),
            channels=data.get("channels", CHANNELS),
            mean=tuple(data.get("mean", cls.mean)),
            std=tuple(data.get("std", cls.std)),
        )


def open_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str = "image",
    formats: tuple[str, ...] | None = None,
) -> Image.Image:
    """Open untrusted bytes, checking the pixel count from the header *before* decoding anything.

    ``formats`` restricts which Pillow decoders may parse the bytes (the HTTP service allows five).
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
            image = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: {exc} (our limit is {max_pixels} pixels)") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a recognised image format") from exc
    except Exception as exc:  # a recognised format with a corrupt header: OSError, SyntaxError, struct.error...
        raise ImageError(f"{name}: corrupt image header ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} pixels"
        )
    try:
        image.seek(0)  # first frame of animations
        image.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for corrupt data
        raise ImageError(f"{name}: truncated or corrupt image data ({exc})") from exc
    return image


def _to_rgba(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8), mode="L")
    elif mode == "CMYK":
        image = image.convert("RGB")
    elif mode == "P" and "transparency" in image.info:
        image = image.convert("PA")
    return image.convert("RGBA")


def image_to_array(image: Image.Image, image_size: int) -> np.ndarray:
    """THE preprocessing function: any PIL image → canonical uint8 RGBA array of shape (4, S, S)."""
    rgba = _to_rgba(ImageOps.exif_transpose(image) if image.format == "JPEG" else image)
    width, height = rgba.size
    if width > image_size or height > image_size:
        scale = image_size / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgba = rgba.resize(size, Image.Resampling.LANCZOS)  # Pillow premultiplies alpha for this
    canvas = Image.new("RGBA", (image_size, image_size), (0, 0, 0, 0))
    canvas.paste(rgba, ((image_size - rgba.width) // 2, (image_size - rgba.height) // 2))
    array = np.asarray(canvas, dtype=np.uint8).copy()
    array[array[..., 3] == 0] = 0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def bytes_to_array(
    data: bytes, image_size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image"
) -> np.ndarray:
    """Untrusted encoded bytes → canonical array, with every failure reported as an ``ImageError``."""
    image = open_image(data, max_pixels=max_pixels, name=name)
    try:
        return image_to_array(image, image_size)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"{name}: cannot convert {image.mode} image ({exc})") from exc
