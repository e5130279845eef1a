"""Real-upload conditions for the robustness suite: what people actually send instead of the stored sprite.

The model is trained on sprites as stored (transparent background, binary alpha, pixel art). Uploads are
screenshots flattened onto white or black, JPEGs, crops placed anywhere in a bigger picture, blurred or
resampled copies. Each condition turns a clean RGBA sprite into the *encoded bytes* a user would upload, so the
suite exercises the whole path (decode → ``pokedex.preprocess`` → model) exactly like the HTTP service does.

A ``Condition`` names one ``kind`` (a function of the ``KINDS`` registry) with its parameters; Hydra builds
them from ``conf/suite/*.yaml`` via ``_target_``. Output is deterministic: the same sprite and the same
generator state give the same bytes; call ``condition(sprite, condition_rng(seed, condition.name, key))`` so
the state depends on the suite's seed, the condition and the image's key, never on evaluation order.
Torch-free, so it runs anywhere the evaluation runs.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from pokedex import reencode

__all__ = ["KINDS", "Condition", "ConditionFn", "Suite", "condition_rng"]  # Suite: the Hydra target of conf/suite

ConditionFn = Callable[..., bytes]  # (sprite: RGBA Image, rng: np.random.Generator, **params) -> encoded bytes


def condition_rng(seed: int, name: str, key: str) -> np.random.Generator:
    """A generator for one (condition, image): stable across runs, processes and evaluation order."""
    digest = hashlib.blake2b(f"{seed}\0{name}\0{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def identity(sprite: Image.Image, rng: np.random.Generator) -> bytes:
    """The sprite as stored (RGBA PNG): the reference every other condition is compared with."""
    return reencode.encode(sprite.convert("RGBA"))


def flatten(
    sprite: Image.Image,
    rng: np.random.Generator,
    *,
    colour: str | Sequence[int] = "white",
    fmt: str = "PNG",
    quality: int | None = None,
    keep_alpha_channel: bool = False,
) -> bytes:
    """A screenshot or "save as": the sprite composited onto an opaque colour, the transparency gone.

    ``keep_alpha_channel`` writes an RGBA PNG whose alpha is 255 everywhere (an opaque PNG from an editor);
    JPEG has no alpha channel at all.
    """
    flat = reencode.flatten(sprite, reencode.solid_colour(colour, rng))
    return reencode.encode(flat.convert("RGBA") if keep_alpha_channel else flat, fmt, quality)


def busy(
    sprite: Image.Image,
    rng: np.random.Generator,
    *,
    style: str = "noise",
    noise: float = 24.0,
    fmt: str = "PNG",
    quality: int | None = None,
) -> bytes:
    """The sprite on a busy background, no uniform border: uniform per-pixel noise; a gradient between two random
    colours plus gaussian grain of ``noise`` levels; or a ``photo``: a smooth field of random colours (a 6×6 grid
    blown up bicubically, like an out-of-focus photo) plus grain. Saved as ``fmt`` (a photo is usually a JPEG).
    The preprocessing removes per-pixel texture, and a smooth background up to the content's outline."""
    height, width = sprite.height, sprite.width
    if style == "photo":
        background = reencode.photo((width, height), rng, noise=noise)
    elif style in ("noise", "gradient"):
        if style == "noise":
            pixels = rng.integers(0, 256, size=(height, width, 3)).astype(np.float64)
        else:
            start, end = rng.integers(0, 256, size=(2, 3)).astype(np.float64)
            ramp = (np.arange(width, dtype=np.float64) / max(1, width - 1))[None, :, None]
            pixels = start + (end - start) * ramp + rng.normal(0.0, noise, size=(height, width, 3))
        background = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), mode="RGB")
    else:
        raise ValueError(f"busy: style must be 'noise', 'gradient' or 'photo', got {style!r}")
    return reencode.encode(reencode.composite(sprite, background).convert("RGB"), fmt, quality)


def placed(
    sprite: Image.Image, rng: np.random.Generator, *, scale: float = 1.0, canvas: float = 2.5, jitter: float = 0.1
) -> bytes:
    """The sprite at ``scale`` (nearest up: pixel art; Lanczos down) in a random corner of a transparent canvas
    ``canvas`` times its (scaled) size, up to ``jitter`` of the canvas away from the corner."""
    width, height = max(1, round(sprite.width * scale)), max(1, round(sprite.height * scale))
    method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    scaled = sprite.convert("RGBA").resize((width, height), method)
    side = max(1, round(max(width, height) * canvas))
    room = max(0, round(side * jitter))
    dx, dy = (int(v) for v in rng.integers(0, room + 1, size=2))
    right, bottom = (bool(v) for v in rng.integers(0, 2, size=2))
    x = side - width - dx if right else dx
    y = side - height - dy if bottom else dy
    out = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    out.paste(scaled, (x, y))
    return reencode.encode(out)


def blur(sprite: Image.Image, rng: np.random.Generator, *, radius: float = 1.0) -> bytes:
    """A soft, out-of-focus copy (gaussian, premultiplied so hidden colours don't darken the edge)."""
    soft = sprite.convert("RGBa").filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
    return reencode.encode(soft)


def resample(sprite: Image.Image, rng: np.random.Generator, *, factor: float = 1 / 3) -> bytes:
    """A thumbnail blown back up: down by ``factor`` (Lanczos), up to the original size (bicubic)."""
    return reencode.encode(reencode.thumbnail(sprite, factor))


KINDS: Mapping[str, ConditionFn] = MappingProxyType(
    {fn.__name__: fn for fn in (identity, flatten, busy, placed, blur, resample)}
)


def _plain(value: Any) -> Any:
    """YAML/OmegaConf containers → plain, immutable-ish Python (dict, tuple), so conditions compare and print."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return tuple(_plain(v) for v in value)
    return value


@dataclass(frozen=True)
class Condition:
    """One named real-upload condition: ``KINDS[kind](sprite, rng, **params)``. Checked when built."""

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"condition {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(KINDS)})")
        params = _plain(self.params or {})
        try:
            inspect.signature(KINDS[self.kind]).bind(None, None, **params)
        except TypeError as exc:
            raise ValueError(f"condition {self.name!r}: bad parameters for {self.kind!r} ({exc})") from exc
        object.__setattr__(self, "params", MappingProxyType(params))

    def __call__(self, sprite: Image.Image, rng: np.random.Generator) -> bytes:
        """The upload a user would send for ``sprite`` under this condition (encoded bytes)."""
        return KINDS[self.kind](sprite, rng, **self.params)


@dataclass(frozen=True)
class Suite:
    """The conditions of one robustness suite and its seed (``conf/suite/*.yaml``); names are unique."""

    conditions: tuple[Condition, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        conditions = tuple(self.conditions)
        names = [c.name for c in conditions]
        if len(set(names)) != len(names):
            raise ValueError(f"suite: duplicate condition names in {names}")
        object.__setattr__(self, "conditions", conditions)
