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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

import cc3d
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CHANNELS = "RGBA"
DEFAULT_MAX_PIXELS = 4096 * 4096
PREPROCESS_VERSION = 4  # 1: fit (never upscale) + centre; 2: crop to content, background estimation, upscale;
# 3: exact background colour for lossless pictures, textured backgrounds removed; 4: binary alpha
ALPHA_VISIBLE = 16  # alpha below this (~6%) is near-invisible noise: it never widens the content box
ANALYSIS_SIZE = 128  # background estimation runs on a box-averaged copy at most this big (speed)
BACKGROUND_TOLERANCE = 44  # max per-channel difference from the border colour of a lossy picture (JPEG q50 ringing)
EXACT_TOLERANCE = 4  # the same for a lossless picture: a dark outline on black is content, not background
PALETTE_COLOURS = 8  # at most this many distinct colours between the two tolerances: a lossless fill (_tolerance)
BORDER_UNIFORMITY = 0.7  # share of border pixels that must match the border colour (or be texture) to estimate
BORDER_TOLERANCE = 32  # per-channel difference from the border's median colour that still matches it
FLAT_TOLERANCE = 4  # per-channel difference within which two neighbours belong to one flat area (_flat)
SPECK_CELLS = 4  # content blobs smaller than this many analysis cells are noise (dithering, JPEG mosquitoes)

BackgroundKind = Literal["alpha", "estimated", "texture", "none"]


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


class BackgroundEstimate(NamedTuple):
    """Result of ``estimate_background``: a foreground mask at analysis resolution (``None``: keep opaque)."""

    foreground: np.ndarray | None  # bool (h', w'), True = content; one cell covers factor×factor input pixels
    factor: int
    colour: tuple[int, int, int] | None  # the border colour; None for a textured background
    tolerance: int = BACKGROUND_TOLERANCE  # per-channel distance from ``colour`` that still counts as background

    def looks_like_background(self, planes: Sequence[np.ndarray]) -> np.ndarray:
        """Per pixel of R, G, B ``planes``: could this be background? The same test at every resolution."""
        if self.colour is None:
            return ~_flat(planes)
        return _similar(planes, self.colour, self.tolerance)


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


def _similar(
    planes: Sequence[np.ndarray], colour: tuple[int, int, int], tolerance: int = BACKGROUND_TOLERANCE
) -> np.ndarray:
    """Per-pixel: every channel within ``tolerance`` of ``colour``; ``planes``: R, G, B (uint8).

    One channel at a time on contiguous planes (``_planes``), and in uint8: ``p - low`` wraps around below
    ``low``, so a single comparison tests both ends of the range. No int16 copies, no slow ``axis=-1``.
    """
    close = None
    for plane, c in zip(planes, colour, strict=True):
        low, high = max(0, c - tolerance), min(255, c + tolerance)
        within = (plane - np.uint8(low)) <= np.uint8(high - low)
        close = within if close is None else np.logical_and(close, within, out=close)
    assert close is not None
    return close


def _planes(rgb: Image.Image) -> list[np.ndarray]:
    """The R, G, B bands of an RGB image as contiguous uint8 arrays: one packed copy each, no ``split``."""
    return [np.frombuffer(rgb.tobytes("raw", band), np.uint8).reshape(rgb.height, rgb.width) for band in "RGB"]


def _edges(grid: np.ndarray) -> np.ndarray:
    """The border cells of a 2-D (or 2-D × channels) grid, each once."""
    if grid.shape[0] <= 2 or grid.shape[1] <= 2:
        return grid.reshape(-1, *grid.shape[2:])
    return np.concatenate([grid[0], grid[-1], grid[1:-1, 0], grid[1:-1, -1]])


def _border(rgb: Image.Image) -> np.ndarray:
    """The outermost pixels of an RGB image as (n, 3), read as four one-pixel strips (no full-size copy)."""
    width, height = rgb.size
    strips = ((0, 0, width, 1), (0, height - 1, width, height), (0, 0, 1, height), (width - 1, 0, width, height))
    return np.frombuffer(b"".join(rgb.crop(box).tobytes() for box in strips), np.uint8).reshape(-1, 3)


def _label(mask: np.ndarray, connectivity: Literal[4, 8]) -> tuple[np.ndarray, int]:
    """Connected regions of a 2-D boolean mask: labels 1..count (0 = not in the mask), C speed."""
    labels, count = cc3d.connected_components(mask, connectivity=connectivity, return_N=True, out_dtype=np.uint32)
    return labels.astype(np.intp, copy=False), int(count)  # intp: bincount and take convert nothing


def _drop_specks(foreground: np.ndarray) -> np.ndarray:
    """Forget isolated blobs of a few cells (8-connected): palette dithering and compression noise, not content."""
    labels, _ = _label(foreground, 8)
    keep = np.bincount(labels.ravel()) >= SPECK_CELLS
    keep[0] = False
    return keep.take(labels)


def _tolerance(planes: Sequence[np.ndarray], colour: tuple[int, int, int]) -> int:
    """How far background pixels may stray from the border colour: ``EXACT_TOLERANCE`` for a lossless fill.

    Between the exact and the loose tolerance lie either a few palette colours of a lossless picture (a dark
    outline on black, a pale belly on white: content) or the ringing of a lossy one, hundreds of distinct
    colours (background). On the robustness suite's flattened PNGs there are at most 3, on JPEG q95 at least 23.
    ``planes`` must hold exact pixel values (no averaging, which would invent colours).
    """
    loose = _similar(planes, colour, BACKGROUND_TOLERANCE)
    between = np.logical_and(loose, ~_similar(planes, colour, EXACT_TOLERANCE), out=loose)
    red, green, blue = (plane[between].astype(np.uint32) for plane in planes)
    distinct = np.unique((red << 16) | (green << 8) | blue).size
    return EXACT_TOLERANCE if distinct <= PALETTE_COLOURS else BACKGROUND_TOLERANCE


def _flat(planes: Sequence[np.ndarray]) -> np.ndarray:
    """Pixels with an 8-neighbour of nearly their colour (``FLAT_TOLERANCE``): drawn content, not texture.

    Pixel art and cartoons are flat areas and 1-px lines (a diagonal line's pixels touch at corners); per-pixel
    noise rarely repeats a colour next to itself, and a tight tolerance keeps such chance pairs, which would glue
    noise to an outline, rare. uint8 wrap-around: ``a - b + t <= 2t`` is ``|a - b| <= t``.
    """
    flat = np.zeros(planes[0].shape, dtype=bool)
    t = np.uint8(FLAT_TOLERANCE)
    pairs = (  # (this pixel, its neighbour) for the right, down, down-right and down-left neighbours
        (np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :]),
        (np.s_[:-1, :-1], np.s_[1:, 1:]), (np.s_[:-1, 1:], np.s_[1:, :-1]),
    )  # fmt: skip
    for here, there in pairs:
        same = None
        for plane in planes:
            close = (plane[here] - plane[there] + t) <= 2 * t
            same = close if same is None else np.logical_and(same, close, out=same)
        flat[here] |= same
        flat[there] |= same
    return flat


def _keep_large(foreground: np.ndarray, share: float = 0.05) -> np.ndarray:
    """Blobs of at least ``share`` of the largest one (8-connected): chance flat specks of texture are not content."""
    labels, count = _label(foreground, 8)
    if not count:
        return foreground
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= max(SPECK_CELLS, share * sizes.max())
    return keep.take(labels)


def _background_regions(passable: np.ndarray) -> np.ndarray:
    """The cells of ``passable`` 4-connected to the border: enclosed ones (a white belly) stay content."""
    labels, count = _label(passable, 4)
    background = np.zeros(count + 1, dtype=bool)  # per label
    background[_edges(labels)] = True
    background[0] = False  # label 0 = not passable
    return background.take(labels)


def estimate_background(rgb: Image.Image) -> BackgroundEstimate:
    """Find the background of an opaque image: a uniform colour, or texture, connected to the border.

    Uniform: the border colour is the per-channel median of the image's outermost pixels, and at least
    ``BORDER_UNIFORMITY`` of them match it. Then, on a box-averaged copy of at most ``ANALYSIS_SIZE`` px (fast;
    JPEG noise averages out), every region of matching colour (``_tolerance``) that touches the border
    (C connected-component labelling, 4-connected) is background. Matching regions *enclosed* by content (a
    white Pokémon's belly behind its outline) stay content.

    Texture: otherwise, if as much of the border is per-pixel texture (``_flat`` finds no neighbour of its
    colour: noise, grain), the texture connected to the border is background, found on a nearest-neighbour copy
    (averaging would make noise look flat). A border that is neither (a photo), or no content left, gives
    ``foreground=None``: the picture is kept whole.
    """
    rgb = _to_rgb(rgb)
    factor = max(1, math.ceil(max(rgb.size) / ANALYSIS_SIZE))
    grid = (math.ceil(rgb.width / factor), math.ceil(rgb.height / factor))  # the size of rgb.reduce(factor)
    sample = _planes(rgb if factor == 1 else rgb.resize(grid, Image.Resampling.NEAREST))  # exact pixel values
    border = _border(rgb)  # full resolution: averaging would make noise look uniform
    red, green, blue = np.median(border, axis=0).round().astype(int).tolist()
    colour = (red, green, blue)
    if np.count_nonzero(_similar(border.T, colour, BORDER_TOLERANCE)) / len(border) >= BORDER_UNIFORMITY:
        tolerance = _tolerance(sample, colour)
        averaged = sample if factor == 1 else _planes(rgb.reduce(factor))
        foreground = _drop_specks(~_background_regions(_similar(averaged, colour, tolerance)))
        return BackgroundEstimate(foreground if foreground.any() else None, factor, colour, tolerance)
    rough = ~_flat(sample)
    if np.count_nonzero(_edges(rough)) / _edges(rough).size < BORDER_UNIFORMITY:
        return BackgroundEstimate(None, factor, None)  # a photo: keep it whole
    foreground = _keep_large(~_background_regions(rough))
    return BackgroundEstimate(foreground if foreground.any() else None, factor, None)


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


def _refine(passable: np.ndarray, cells: np.ndarray, f: int) -> np.ndarray:
    """Full-resolution alpha inside the content box, so no band of background is left around the content.

    ``passable``: the box's pixels that look like background, in whole f×f ``cells`` (True = content cell).
    Background cells, and passable pixels 4-connected to them or to the box edge (beyond it all is background),
    become alpha 0; enclosed ones stay content. One labelling of the box; a background cell is passable
    throughout, so one pixel names its label.
    """
    rows = passable.reshape(cells.shape[0], f, -1)  # a view: the f pixel rows of each row of cells
    rows |= np.repeat(~cells, f, axis=1)[:, None, :]
    labels, count = _label(passable, 4)
    alpha = np.full(count + 1, 255, dtype=np.uint8)  # per label; label 0 = unlike the background
    alpha[labels[::f, ::f][~cells]] = 0
    alpha[_edges(labels)] = 0
    alpha[0] = 255
    return alpha.take(labels)


def _content_from_estimate(rgb: Image.Image) -> tuple[Image.Image | None, InputFacts]:
    """Opaque image: remove the estimated background (alpha 0) and crop to what is left (RGBA).

    A busy border or a flat picture comes back whole and opaque (RGB: ``_fit`` pastes it with alpha 255).
    """
    estimate = estimate_background(rgb)
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
        passable = estimate.looks_like_background(_planes(content))
        passable[rgb.height - box[1] :] = True  # beyond the image edge all is background
        passable[:, rgb.width - box[0] :] = True
        alpha = _refine(passable, cells, f)
    alpha_image = Image.frombuffer("L", content.size, np.ascontiguousarray(alpha), "raw", "L", 0, 1)
    tight = alpha_image.getbbox()
    kind: BackgroundKind = "texture" if estimate.colour is None else "estimated"
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
    oriented = ImageOps.exif_transpose(image) if image.format == "JPEG" else image
    rgb = oriented
    if "A" in oriented.mode or "transparency" in oriented.info:  # only these modes can carry transparency
        rgba = _to_rgba(oriented)
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:
            content, facts = _content_from_alpha(rgba, alpha)
            return _fit(content, image_size, upscale), facts
        rgb = rgba.convert("RGB")
    content, facts = _content_from_estimate(_to_rgb(rgb))
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
