"""The one image → tensor path shared by data preparation, training, evaluation, export and serving.

Two halves, so the expensive half runs once:

* ``image_to_array`` turns any decoded PIL image into the canonical ``uint8`` RGBA array (4×S×S). People
  upload sprites flattened onto white, as JPEGs, off-centre or tiny, so the canonical form depends only on the
  *content*, never on its placement, margins or scale:

  1. find the content: from the alpha channel when the image carries real transparency; otherwise the
     background is estimated from the image border and removed (``estimate_background``): a uniform colour
     (exactly, when the picture is lossless; within JPEG's noise when it is not), or per-pixel texture (noise,
     grain) around flat drawn content. A border that is neither (a photo) keeps the image opaque as a whole;
  2. crop to the content's bounding box (with real transparency: of the pixels at least half as opaque as the
     most opaque one, so a soft rim does not count) and fit it to S×S keeping the aspect ratio, centred on a
     transparent canvas. Small content is scaled *up* too: first by nearest neighbour to the next integer
     multiple (pixel art stays crisp), then Lanczos to the exact size; Lanczos premultiplies alpha, so hidden
     colours never bleed into the edge;
  3. the alpha becomes binary, as the dataset's sprites have it: a pixel at least half as opaque as the most
     opaque one is content (alpha 255), any other is background (alpha 0, RGB 0, so hidden palette colours
     can't leak into the model). Soft alpha only ever comes from resampling (the fit's own rim, a blur, a
     blown-up thumbnail); at 64 px, giving the model the sprite's crisp silhouette back was worth 5 to 7 points
     of top-1 on blown-up thumbnails. An image with no visible pixel at all becomes the empty (all-zero) canvas.

  ``image_to_canonical`` returns the same array plus ``InputFacts`` (was there transparency, how was the
  background found, how much of the picture is foreground) for serving telemetry, without a second pass.
* ``PreprocessSpec`` records the input size, channel order and normalisation; the normalisation itself runs
  inside the model's ``forward`` (``pokedex.model.classifier.normalize``, and therefore inside the exported
  ONNX graph), so a served model receives exactly the bytes a trained one did. No torch here: the serving
  image has none.

Any change to the output of ``image_to_array`` must bump ``PREPROCESS_VERSION``: datasets, caches, checkpoints
and ONNX sidecars record it (through ``PreprocessSpec``) so stale artifacts are detected, not trusted.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pokedex.background import BACKGROUND_TOLERANCE, estimate_background, jpeg_tolerance, refine_alpha, rgb_planes

CHANNELS = "RGBA"
DEFAULT_MAX_PIXELS = 4096 * 4096
PREPROCESS_VERSION = 9  # 1: fit (never upscale) + centre; 2: crop to content, background estimation, upscale;
# 3: exact background colour for lossless pictures, textured backgrounds removed; 4: binary alpha; 5: smooth
# (photo-like) backgrounds removed up to the content's outline; 6: holes ringed by the outline removed too;
# 7: a JPEG's tolerance follows its quantisation, plus a halo ring; 8: a learned segmentation on smooth ones;
# 9: that segmentation sees twice as far (a half-resolution branch)
ALPHA_VISIBLE = 16  # alpha below this (~6%) is near-invisible noise: it never widens the content box

BackgroundKind = Literal["alpha", "estimated", "texture", "smooth", "none"]


class ImageError(ValueError):
    """An input image that cannot be used; the message says which and why."""


class UnrecognisedImageError(ImageError):
    """No allowed decoder can read the header: with ``formats=`` the bytes are not that format, whatever their
    first bytes claim (the HTTP service answers 415, while a header that parses but data that don't is a 400)."""


class ImageTooLargeError(ImageError):
    """The image header announces more pixels than allowed (a decompression bomb guard)."""


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to reproduce the model input; stored inside every checkpoint and ONNX sidecar."""

    image_size: int = 128
    channels: str = CHANNELS
    mean: tuple[float, ...] = field(default=(0.5, 0.5, 0.5, 0.5))
    std: tuple[float, ...] = field(default=(0.5, 0.5, 0.5, 0.5))
    preprocess_version: int = PREPROCESS_VERSION

    def __post_init__(self) -> None:
        if self.channels != CHANNELS:
            raise ValueError(f"preprocess.channels must be {CHANNELS!r}, got {self.channels!r}")
        if self.image_size < 8:
            raise ValueError(f"preprocess.image_size must be >= 8, got {self.image_size}")
        if len(self.mean) != 4 or len(self.std) != 4:
            raise ValueError("preprocess.mean and preprocess.std need one value per RGBA channel (4 each)")
        if int(self.preprocess_version) < 1:
            raise ValueError(f"preprocess.preprocess_version must be >= 1, got {self.preprocess_version}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "preprocess_version", int(self.preprocess_version))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std), "dtype": "uint8", "layout": "NCHW"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Artifacts written before versioning carry no ``preprocess_version``: they were made by version 1."""
        return cls(
            image_size=int(data["image_size"]),
            channels=data.get("channels", CHANNELS),
            mean=tuple(data.get("mean", cls.mean)),
            std=tuple(data.get("std", cls.std)),
            preprocess_version=int(data.get("preprocess_version", 1)),
        )


@dataclass(frozen=True)
class InputFacts:
    """What the preprocessing learnt about one input; cheap by-products for serving telemetry and drift."""

    had_transparency: bool  # some pixel had alpha < 255
    background: BackgroundKind  # how the content was found: alpha channel, a border colour, texture, or not at all
    foreground_fraction: float  # share of the input's pixels that are content (1.0 when kept opaque; estimated
    # backgrounds measure it on the analysis grid)
    background_colour: tuple[int, int, int] | None = None  # the estimated border colour, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "had_transparency": self.had_transparency,
            "background": self.background,
            "foreground_fraction": self.foreground_fraction,
            "background_colour": None if self.background_colour is None else list(self.background_colour),
        }


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
        raise UnrecognisedImageError(f"{name}: not a recognised image format") from exc
    except Exception as exc:  # a recognised format with a corrupt header: OSError, SyntaxError, struct.error...
        raise UnrecognisedImageError(f"{name}: corrupt image header ({exc})") from exc
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


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else _to_rgba(image).convert("RGB")


def _content_from_alpha(rgba: Image.Image, alpha: Image.Image) -> tuple[Image.Image | None, InputFacts]:
    """Crop to the content of an image that carries real transparency; never touch its alpha.

    The box holds the pixels at least half as opaque as the most opaque one: the soft rim of a blurred or
    blown-up picture fades out beyond where its content ends, and would shrink the content within the canvas
    (a sprite blown up from a third of its size lost 3.6 points of top-1 to it). Visible pixels (alpha >=
    ``ALPHA_VISIBLE``) are what the facts count.
    """
    opacity = np.asarray(alpha)
    visible = opacity >= ALPHA_VISIBLE
    facts = InputFacts(True, "alpha", np.count_nonzero(visible) / visible.size)
    if not visible.any():
        return None, facts
    solid = _solid(opacity)
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    return rgba.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)), facts


def _content_from_estimate(
    rgb: Image.Image, lossy_tolerance: int = BACKGROUND_TOLERANCE
) -> tuple[Image.Image | None, InputFacts]:
    """Opaque image: remove the estimated background (alpha 0) and crop to what is left (RGBA).

    A busy border or a flat picture comes back whole and opaque (RGB: ``_fit`` pastes it with alpha 255).
    ``lossy_tolerance``: the background tolerance if the picture is lossy (``jpeg_tolerance``).
    """
    estimate = estimate_background(rgb, lossy_tolerance)
    if estimate.foreground is None:
        return rgb, InputFacts(False, "none", 1.0, estimate.colour)
    mask, f = estimate.foreground, estimate.factor
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    cells, box = mask[y0:y1, x0:x1], (x0 * f, y0 * f, x1 * f, y1 * f)  # whole cells, even past the image edge
    content = rgb.crop(box)
    if f == 1:
        alpha = cells.view(np.uint8) * np.uint8(255)
    else:
        planes = rgb_planes(content)
        passable = estimate.looks_like_background(planes)
        passable[rgb.height - box[1] :] = True  # beyond the image edge all is background
        passable[:, rgb.width - box[0] :] = True
        alpha = refine_alpha(passable, cells, f, shallow=estimate.kind == "smooth")
        if estimate.lossy:
            alpha[estimate.with_halo(planes, alpha == 0)] = 0
    alpha_image = Image.frombuffer("L", content.size, np.ascontiguousarray(alpha), "raw", "L", 0, 1)
    tight = alpha_image.getbbox()
    kind: BackgroundKind = "estimated" if estimate.kind == "colour" else estimate.kind
    facts = InputFacts(False, kind, np.count_nonzero(mask) / mask.size, estimate.colour)
    content.putalpha(alpha_image)  # our own copy: RGB becomes RGBA in place
    return (content.crop(tight) if tight else None), facts


def _fit(content: Image.Image | None, image_size: int, upscale: bool = True) -> np.ndarray:
    """Scale the content (RGBA, or RGB = opaque) so its long side is exactly S, centred on a transparent canvas.

    ``upscale=False`` only ever shrinks: data preparation stores content at its native size (a small, crisp PNG)
    and leaves the one resize to the model's input size to training.
    """
    if content is None:
        return np.zeros((4, image_size, image_size), dtype=np.uint8)
    width, height = content.size
    scale = image_size / max(width, height)
    if not upscale:
        scale = min(scale, 1.0)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale > 1:  # nearest to an integer multiple first: pixel art stays crisp, then Lanczos down to S
        k = math.ceil(scale)
        content = content.resize((width * k, height * k), Image.Resampling.NEAREST)
    if content.size != size:
        content = content.resize(size, Image.Resampling.LANCZOS)  # Pillow premultiplies alpha for this
    canvas = Image.new("RGBA", (image_size, image_size), (0, 0, 0, 0))
    canvas.paste(content, ((image_size - size[0]) // 2, (image_size - size[1]) // 2))
    planar = np.asarray(canvas).transpose(2, 0, 1)  # a view; the multiply writes the one contiguous copy
    solid = _solid(planar[3])
    canonical = np.multiply(planar, solid, out=np.empty(planar.shape, np.uint8))
    np.multiply(solid, np.uint8(255), out=canonical[3])
    return canonical


def _solid(alpha: np.ndarray) -> np.ndarray:
    """Pixels at least half as opaque as the most opaque one (and visible): content, in a picture whose soft
    alpha (a resampled rim, a blur, a blown-up thumbnail) only ever comes from resampling the binary alpha of a
    sprite. The canonical alpha is that binary mask, as the dataset's sprites have it."""
    return alpha >= max(ALPHA_VISIBLE, (int(alpha.max(initial=0)) + 1) // 2)


def image_to_canonical(image: Image.Image, image_size: int, *, upscale: bool = True) -> tuple[np.ndarray, InputFacts]:
    """THE preprocessing function, with its by-products: (canonical uint8 RGBA array (4, S, S), InputFacts)."""
    lossy_tolerance = jpeg_tolerance(image)  # before any copy: only the decoded JPEG carries its tables
    oriented = ImageOps.exif_transpose(image) if image.format == "JPEG" else image
    rgb = oriented
    if "A" in oriented.mode or "transparency" in oriented.info:  # only these modes can carry transparency
        rgba = _to_rgba(oriented)
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:
            content, facts = _content_from_alpha(rgba, alpha)
            return _fit(content, image_size, upscale), facts
        rgb = rgba.convert("RGB")
    content, facts = _content_from_estimate(_to_rgb(rgb), lossy_tolerance)
    return _fit(content, image_size, upscale), facts


def image_to_array(image: Image.Image, image_size: int, *, upscale: bool = True) -> np.ndarray:
    """THE preprocessing function: any PIL image → canonical uint8 RGBA array of shape (4, S, S)."""
    return image_to_canonical(image, image_size, upscale=upscale)[0]


def bytes_to_canonical(
    data: bytes, image_size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image"
) -> tuple[np.ndarray, InputFacts]:
    """Untrusted encoded bytes → (canonical array, InputFacts); every failure is reported as an ``ImageError``."""
    image = open_image(data, max_pixels=max_pixels, name=name)
    try:
        return image_to_canonical(image, image_size)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"{name}: cannot convert {image.mode} image ({exc})") from exc


def bytes_to_array(
    data: bytes, image_size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image"
) -> np.ndarray:
    """Untrusted encoded bytes → canonical array, with every failure reported as an ``ImageError``."""
    return bytes_to_canonical(data, image_size, max_pixels=max_pixels, name=name)[0]
