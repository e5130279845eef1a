"""Find the background of an opaque picture (an upload flattened onto a colour, on texture, or on an out-of-focus
photo), so the one preprocessing function (``pokedex.preprocess``) can turn it into transparency and crop to the
content.

``estimate_background`` decides at analysis resolution (a copy of at most ``ANALYSIS_SIZE`` px) which cells are
content; ``BackgroundEstimate.looks_like_background`` is the per-pixel test that ``refine_alpha`` then applies
at full resolution inside the content box. On a smooth background (a photo) a small learned segmentation
(``pokedex.segmenter``) then corrects the rules' silhouette. Connected-component labelling runs in C (``cc3d``).
No torch: the serving image has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import cc3d
import numpy as np
from PIL import Image

from pokedex.segmenter import refine

ANALYSIS_SIZE = 128  # background estimation runs on a box-averaged copy at most this big (speed)
BACKGROUND_TOLERANCE = 44  # max per-channel difference from the border colour of a lossy picture (JPEG q50 ringing)
JPEG_TOLERANCE = 16  # the same for a JPEG of the finest quantisation; coarser ones get more (jpeg_tolerance)
HALO_TOLERANCE = 88  # lossy pictures: a pixel this close to the border colour, next to a background one, is too
EXACT_TOLERANCE = 4  # the same for a lossless picture: a dark outline on black is content, not background
PALETTE_COLOURS = 8  # at most this many distinct colours between the two tolerances: a lossless fill (_tolerance)
BORDER_UNIFORMITY = 0.7  # share of border pixels that must match the border colour (or be texture) to estimate
BORDER_TOLERANCE = 32  # per-channel difference from the border's median colour that still matches it
FLAT_TOLERANCE = 4  # per-channel difference within which two neighbours belong to one flat area (_flat)
EDGE_STEP = 32  # a larger per-channel step to a 4-neighbour is an edge (a drawn outline), not a smooth gradient
SEED_SHARE = 0.25  # smooth backgrounds: regions touching the border less than this share of the longest contact
# (a sprite's outline where it touches the border) are not background
RINGS = 2  # smooth backgrounds: rings of edge pixels next to the background that still join it (_grow)
HOLE_OUTLINE = 0.8  # a rim pixel at least this share as dark (against the background) as the outline is outline
HOLE_RIM = 0.75  # an enclosed region of the background colour is a hole when this share of its rim is outline
HOLE_CONTRAST = 96  # ... and only when the outline stands out from the background (not a dark outline on black)
SPECK_CELLS = 4  # content blobs smaller than this many analysis cells are noise (dithering, JPEG mosquitoes)


BackgroundKind = Literal["colour", "texture", "smooth"]


class BackgroundEstimate(NamedTuple):
    """Result of ``estimate_background``: a foreground mask at analysis resolution (``None``: keep opaque)."""

    foreground: np.ndarray | None  # bool (h', w'), True = content; one cell covers factor×factor input pixels
    factor: int
    colour: tuple[int, int, int] | None  # the border colour; None for a textured or smooth background
    tolerance: int = BACKGROUND_TOLERANCE  # per-channel distance from ``colour`` that still counts as background
    kind: BackgroundKind = "colour"

    def looks_like_background(self, planes: Sequence[np.ndarray]) -> np.ndarray:
        """Per pixel of R, G, B ``planes``: could this be background? The same test at every resolution."""
        if self.kind == "texture":
            return ~_flat(planes)
        if self.kind == "smooth":
            return ~_steps(planes)[0]
        assert self.colour is not None
        return _similar(planes, self.colour, self.tolerance)

    @property
    def lossy(self) -> bool:
        """A lossy picture (JPEG) on a colour: its background needs a halo ring (``with_halo``)."""
        return self.kind == "colour" and self.tolerance > EXACT_TOLERANCE

    def with_halo(self, planes: Sequence[np.ndarray], background: np.ndarray) -> np.ndarray:
        """``background`` (bool, per pixel of R, G, B ``planes``) and, for a lossy picture on a colour, one more
        ring of pixels within ``HALO_TOLERANCE``: the outer ring of ringing and colour bleed, which no tolerance
        that keeps a pale sprite takes. One ring only, from the background itself: a chain of such pixels
        (through a pale sprite's highlights) would leak into the content."""
        if not self.lossy:
            return background
        assert self.colour is not None
        ring = _from_neighbours(background, np.logical_or)
        return background | (ring & _similar(planes, self.colour, HALO_TOLERANCE))


def jpeg_tolerance(image: Image.Image) -> int:
    """How far a JPEG's background may stray from its colour: ``JPEG_TOLERANCE`` plus its mean luma quantisation
    step, at most ``BACKGROUND_TOLERANCE`` (q95: 22, q90: 28, q85: 33, q75 and coarser: 44). Ringing grows with
    the step, and a pale sprite within the loose tolerance of white would go with the background of a fine JPEG.
    ``BACKGROUND_TOLERANCE`` for any other picture; pass the decoded image itself (a copy has no tables).
    """
    tables = getattr(image, "quantization", None)
    if not tables or 0 not in tables:
        return BACKGROUND_TOLERANCE
    step = float(np.mean(tables[0]))
    return int(min(BACKGROUND_TOLERANCE, round(JPEG_TOLERANCE + step)))


def _similar(
    planes: Sequence[np.ndarray], colour: tuple[int, int, int], tolerance: int = BACKGROUND_TOLERANCE
) -> np.ndarray:
    """Per-pixel: every channel within ``tolerance`` of ``colour``; ``planes``: R, G, B (uint8).

    One channel at a time on contiguous planes (``rgb_planes``), and in uint8: ``p - low`` wraps around below
    ``low``, so a single comparison tests both ends of the range. No int16 copies, no slow ``axis=-1``.
    """
    close = None
    for plane, c in zip(planes, colour, strict=True):
        low, high = max(0, c - tolerance), min(255, c + tolerance)
        within = (plane - np.uint8(low)) <= np.uint8(high - low)
        close = within if close is None else np.logical_and(close, within, out=close)
    assert close is not None
    return close


def rgb_planes(rgb: Image.Image) -> list[np.ndarray]:
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
    """Connected regions of a 2-D boolean mask: labels 1..count (0 = not in the mask), C speed.

    cc3d 4.1.1's 8-connected labelling of 2-D masks sometimes labels a pixel outside the mask next to a region,
    and then returns a count below its largest label: labels are cut back to the mask, and ``count`` is the
    largest label (some below it may be unused), so arrays sized by it hold every label."""
    labels = cc3d.connected_components(mask, connectivity=connectivity, out_dtype=np.uint32)
    labels = np.multiply(labels, mask, dtype=np.intp)  # intp: bincount and take convert nothing
    return labels, int(labels.max(initial=0))


def _keep_blobs(foreground: np.ndarray, share: float = 0.0, touching: np.ndarray | None = None) -> np.ndarray:
    """The blobs (8-connected) of at least ``SPECK_CELLS`` cells and ``share`` of the largest one: isolated specks
    (palette dithering, compression noise, chance flat pairs in texture) are not content. With ``touching``
    (bool, the rules' silhouette), only the blobs that share a cell with it count: the learned segmentation moves
    the rules' outline; it adds no content where they found none (a bright patch of photo can look like one)."""
    labels, count = _label(foreground, 8)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0  # label 0 = not in the mask
    if touching is not None:
        overlaps = np.zeros(count + 1, dtype=bool)
        overlaps[labels[touching]] = True
        sizes[~overlaps] = 0
    return (sizes >= max(SPECK_CELLS, share * sizes.max())).take(labels)


def _tolerance(planes: Sequence[np.ndarray], colour: tuple[int, int, int], lossy_tolerance: int) -> int:
    """How far background pixels may stray from the border colour: ``EXACT_TOLERANCE`` for a lossless fill,
    ``lossy_tolerance`` otherwise.

    Between the exact and the loose tolerance lie either a few palette colours of a lossless picture (a dark
    outline on black, a pale belly on white: content) or the ringing of a lossy one, hundreds of distinct
    colours (background). On the robustness suite's flattened PNGs there are at most 3, on JPEG q95 at least 23.
    ``planes`` must hold exact pixel values (no averaging, which would invent colours).
    """
    loose = _similar(planes, colour, BACKGROUND_TOLERANCE)
    between = np.logical_and(loose, ~_similar(planes, colour, EXACT_TOLERANCE), out=loose)
    red, green, blue = (plane[between].astype(np.uint32) for plane in planes)
    distinct = np.unique((red << 16) | (green << 8) | blue).size
    return EXACT_TOLERANCE if distinct <= PALETTE_COLOURS else lossy_tolerance


_RIGHT, _DOWN = (np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])  # (pixel, its neighbour)
_DIAGONALS = (np.s_[:-1, :-1], np.s_[1:, 1:]), (np.s_[:-1, 1:], np.s_[1:, :-1])  # down-right, down-left


def _close_pairs(planes: Sequence[np.ndarray], pairs: Sequence[tuple], tolerance: int) -> list[np.ndarray]:
    """Per (pixel, neighbour) slice pair: every channel of the two within ``tolerance``.

    uint8 wrap-around: ``a - b + t <= 2t`` is ``|a - b| <= t``, with no int16 copies.
    """
    t = np.uint8(tolerance)
    closes = []
    for here, there in pairs:
        same = None
        for plane in planes:
            close = (plane[here] - plane[there] + t) <= 2 * t
            same = close if same is None else np.logical_and(same, close, out=same)
        closes.append(same)
    return closes


def _flat(planes: Sequence[np.ndarray]) -> np.ndarray:
    """Pixels with an 8-neighbour of nearly their colour (``FLAT_TOLERANCE``): drawn content, not texture.

    Pixel art and cartoons are flat areas and 1-px lines (a diagonal line's pixels touch at corners); per-pixel
    noise rarely repeats a colour next to itself, and a tight tolerance keeps such chance pairs, which would glue
    noise to an outline, rare.
    """
    flat = np.zeros(planes[0].shape, dtype=bool)
    pairs = (_RIGHT, _DOWN, *_DIAGONALS)
    for (here, there), same in zip(pairs, _close_pairs(planes, pairs, FLAT_TOLERANCE), strict=True):
        flat[here] |= same
        flat[there] |= same
    return flat


def _steps(planes: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Edge pixels (a step above ``EDGE_STEP`` in some channel to a 4-neighbour: both sides of it), and per
    neighbour pair (right, down) whether the two are close."""
    edge = np.zeros(planes[0].shape, dtype=bool)
    closes = _close_pairs(planes, (_RIGHT, _DOWN), EDGE_STEP)
    for (here, there), close in zip((_RIGHT, _DOWN), closes, strict=True):
        step = ~close
        edge[here] |= step
        edge[there] |= step
    return edge, closes


def _smooth_background(edge: np.ndarray, closes: list[np.ndarray]) -> np.ndarray:
    """The smooth regions (no edge pixel) that touch the border along at least ``SEED_SHARE`` of the longest
    contact, grown by ``RINGS`` (``_grow``). ``edge``, ``closes``: from ``_steps``."""
    return _grow(_background_regions(~edge, share=SEED_SHARE), closes)


def _grow(background: np.ndarray, closes: list[np.ndarray]) -> np.ndarray:
    """``background`` grown by ``RINGS`` rings across neighbour pairs without a step: the pixels between a smooth
    background and the content's outline are edge pixels too (the step is on their other side), and JPEG ringing
    widens that band. A few rings only: the background reaches no further into the edges of the content."""
    for _ in range(RINGS):
        grown = background.copy()
        for (here, there), close in zip((_RIGHT, _DOWN), closes, strict=True):
            grown[here] |= close & background[there]
            grown[there] |= close & background[here]
        background = grown
    return background


def _from_neighbours(grid: np.ndarray, combine: np.ufunc) -> np.ndarray:
    """Per cell, its four neighbours' values combined (``np.logical_or``: next to a True; ``np.maximum``: the
    largest label next to it); nothing comes from beyond the grid's edge."""
    out = np.zeros_like(grid)
    combine(out[1:], grid[:-1], out=out[1:])
    combine(out[:-1], grid[1:], out=out[:-1])
    combine(out[:, 1:], grid[:, :-1], out=out[:, 1:])
    combine(out[:, :-1], grid[:, 1:], out=out[:, :-1])
    return out


def _mostly(cells: np.ndarray) -> bool:
    """At least ``BORDER_UNIFORMITY`` of these (border) cells are True: enough of the border to go by."""
    return np.count_nonzero(cells) / cells.size >= BORDER_UNIFORMITY


def _background_regions(passable: np.ndarray, share: float = 0.0) -> np.ndarray:
    """The cells of ``passable`` 4-connected to the border: enclosed ones (a white belly) stay content. With a
    ``share``, only the regions that touch the border along at least that share of the longest contact."""
    labels, count = _label(passable, 4)
    return _touching_border(labels, count, share).take(labels)


def _touching_border(labels: np.ndarray, count: int, share: float = 0.0) -> np.ndarray:
    """Per label of a labelling of ``count`` regions: does it touch the border (along at least ``share`` of the
    longest contact)? Label 0 (not a region) does not."""
    contact = np.bincount(_edges(labels), minlength=count + 1)
    contact[0] = 0
    return contact >= max(1.0, share * contact.max())


def _colour_background(planes: Sequence[np.ndarray], colour: tuple[int, int, int], passable: np.ndarray) -> np.ndarray:
    """The regions of the background colour that touch the border, and the enclosed ones that are holes.

    An enclosed region may be a hole (between a tail and a body) or content of the background's colour (a white
    belly). A hole is ringed by the same dark outline as the outside (``_holes``); a belly by its shading.
    """
    labels, count = _label(passable, 4)
    outside = _touching_border(labels, count)
    if count and not outside[1:].all():  # some region is enclosed
        outside |= _holes(planes, colour, labels, outside)
    return outside.take(labels)


def _holes(
    planes: Sequence[np.ndarray], colour: tuple[int, int, int], labels: np.ndarray, outside: np.ndarray
) -> np.ndarray:
    """Per label: an enclosed region (of ``SPECK_CELLS`` cells or more) most of whose rim (``HOLE_RIM``) is as
    dark as the outline of the outside, which is the median darkness of the outside's rim.

    Sprites are drawn with dark outlines. Only when the outline stands out from the background
    (``HOLE_CONTRAST``): on black, outline and black content look alike, and both ring holes and content.
    """
    neighbour = _from_neighbours(labels, np.maximum)  # the largest label among a pixel's 4-neighbours
    rim = (labels == 0) & (neighbour > 0)
    region, dark = neighbour[rim], _darkness([plane[rim] for plane in planes], colour)
    outline = dark[outside[region]]
    level = float(np.median(outline)) if outline.size else 0.0
    if level < HOLE_CONTRAST:
        return np.zeros_like(outside)
    ringed = np.bincount(region, weights=dark >= HOLE_OUTLINE * level, minlength=outside.size)
    rims = np.bincount(region, minlength=outside.size)
    sizes = np.bincount(labels.ravel(), minlength=outside.size)
    return (ringed >= HOLE_RIM * rims) & (rims > 0) & (sizes >= SPECK_CELLS) & ~outside


def _darkness(planes: Sequence[np.ndarray], colour: tuple[int, int, int]) -> np.ndarray:
    """Per pixel of R, G, B ``planes`` (uint8): how much darker than ``colour`` in its most darkened channel (0:
    not darker). A dark outline on a light background is dark; shading and pale colours much less so."""
    out = None
    for plane, c in zip(planes, colour, strict=True):
        level = np.uint8(c)
        dark = level - np.minimum(plane, level)
        out = dark if out is None else np.maximum(out, dark, out=out)
    assert out is not None
    return out


def estimate_background(
    rgb: Image.Image, lossy_tolerance: int = BACKGROUND_TOLERANCE, *, learned: bool = True
) -> BackgroundEstimate:
    """Find the background of an opaque image: a uniform colour, texture, or a smooth photo, from the border.

    Uniform: the border colour is the per-channel median of the image's outermost pixels, and at least
    ``BORDER_UNIFORMITY`` of them match it. Then, on a box-averaged copy of at most ``ANALYSIS_SIZE`` px (fast;
    JPEG noise averages out), every region of matching colour (``_tolerance``) that touches the border
    (C connected-component labelling, 4-connected) is background. Matching regions *enclosed* by content (a
    white Pokémon's belly behind its outline) stay content, unless they are holes (``_holes``). A lossy picture's
    tolerance is ``lossy_tolerance`` (``jpeg_tolerance``), and a halo ring joins its background (``with_halo``).

    Texture: otherwise, if as much of the border is per-pixel texture (``_flat`` finds no neighbour of its
    colour: noise, grain), the texture connected to the border is background, found on a nearest-neighbour copy
    (averaging would make noise look flat).

    Smooth: otherwise, if as much of the border has no edge (``_steps``: no step above ``EDGE_STEP`` to a
    4-neighbour, on the box-averaged copy), the smooth regions along the border are background
    (``_smooth_background``): an out-of-focus photo ends where the content's outline begins. Then, in a
    picture of at most ``ANALYSIS_SIZE`` px and unless ``learned=False`` (the network's own training input),
    the learned segmentation (``pokedex.segmenter``) corrects that silhouette: on a JPEG of a photo the outline
    is smeared, and edges alone keep or lose about 12% of the sprite. Larger pictures keep the rules' silhouette:
    the network was trained at the sprites' own pixel scale, and on a box-averaged copy, where the smear is a
    fraction of a cell, it trims the outline instead. A border busy at every scale, or no content left, gives
    ``foreground=None``: the picture is kept whole.
    """
    rgb = rgb if rgb.mode == "RGB" else rgb.convert("RGB")
    factor = max(1, math.ceil(max(rgb.size) / ANALYSIS_SIZE))
    grid = (math.ceil(rgb.width / factor), math.ceil(rgb.height / factor))  # the size of rgb.reduce(factor)
    sample = rgb_planes(rgb if factor == 1 else rgb.resize(grid, Image.Resampling.NEAREST))  # exact pixel values
    border = _border(rgb)  # full resolution: averaging would make noise look uniform
    red, green, blue = np.median(border, axis=0).round().astype(int).tolist()
    colour = (red, green, blue)
    if _mostly(_similar(border.T, colour, BORDER_TOLERANCE)):
        tolerance = _tolerance(sample, colour, lossy_tolerance)
        averaged = sample if factor == 1 else rgb_planes(rgb.reduce(factor))
        estimate = BackgroundEstimate(None, factor, colour, tolerance)
        background = _colour_background(averaged, colour, _similar(averaged, colour, tolerance))
        if factor == 1:  # the halo is per pixel: a box-averaged cell across the outline would take its pixels too
            background = estimate.with_halo(averaged, background)
        foreground = _keep_blobs(~background)
        return estimate._replace(foreground=foreground if foreground.any() else None)
    rough = ~_flat(sample)
    if _mostly(_edges(rough)):
        foreground = _keep_blobs(~_background_regions(rough), share=0.05)
        return BackgroundEstimate(foreground if foreground.any() else None, factor, None, kind="texture")
    averaged = sample if factor == 1 else rgb_planes(rgb.reduce(factor))
    edge, closes = _steps(averaged)
    if not _mostly(_edges(~edge)):
        return BackgroundEstimate(None, factor, None, kind="smooth")  # busy at every scale: keep it whole
    foreground = _keep_blobs(~_smooth_background(edge, closes), share=0.05)
    if learned and factor == 1 and foreground.any():  # the network knows sprites at their own pixel scale
        foreground = _keep_blobs(refine(averaged, foreground), share=0.05, touching=foreground)
    return BackgroundEstimate(foreground if foreground.any() else None, factor, None, kind="smooth")


def refine_alpha(passable: np.ndarray, cells: np.ndarray, f: int, *, shallow: bool = False) -> np.ndarray:
    """Full-resolution alpha inside the content box, so no band of background is left around the content.

    ``passable``: the box's pixels that look like background, in whole f×f ``cells`` (True = content cell).
    Background cells, and passable pixels 4-connected to them or to the box edge (beyond it all is background),
    become alpha 0; enclosed ones stay content. ``shallow`` (a smooth background, whose per-pixel test is only
    "no edge here"): the background reaches no further than the content cells next to a background cell, so a
    gap in an outline cannot empty the flat inside of a sprite. One labelling of the box; a background cell is
    passable throughout, so one pixel names its label.
    """
    rows = passable.reshape(cells.shape[0], f, -1)  # a view: the f pixel rows of each row of cells
    rows |= np.repeat(~cells, f, axis=1)[:, None, :]
    if shallow:
        inner = np.zeros_like(cells)  # content cells whose four neighbours are content (beyond the box: not)
        inner[1:-1, 1:-1] = cells[1:-1, 1:-1] & cells[:-2, 1:-1] & cells[2:, 1:-1] & cells[1:-1, :-2] & cells[1:-1, 2:]
        rows &= ~np.repeat(inner, f, axis=1)[:, None, :]
    labels, count = _label(passable, 4)
    alpha = np.full(count + 1, 255, dtype=np.uint8)  # per label; label 0 = unlike the background
    alpha[labels[::f, ::f][~cells]] = 0
    alpha[_edges(labels)] = 0
    alpha[0] = 255
    return alpha.take(labels)
