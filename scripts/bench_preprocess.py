#!/usr/bin/env python
"""Per-image cost of the canonical preprocessing (today's version) against the fit-only path of version 1.

Why: ``image_to_array`` runs for every training sample of an uncached run, every evaluation image and every
HTTP upload, so content finding and background estimation must stay cheap (budget: ~1 ms per 512² image on
one core). Times, on constructed 512² images, ``estimate_background`` alone, the whole ``image_to_array`` and a
baseline measured in the same run: version 1's fit-only path (Lanczos fit + paste on a transparent canvas).
``bg step`` adds the full-resolution refinement and crop of the private ``_content_from_estimate``.
One thread; each figure is the best of ``--repeat`` rounds of ``--number`` calls, timed in CPU time of this
process (``time.process_time``): on a shared machine wall time also counts the waits for a core, and the best
round is the least disturbed one. With one thread, CPU time equals wall time on an idle machine.

    python scripts/bench_preprocess.py
    python scripts/bench_preprocess.py --size 1024 --image-size 128 64 --repeat 9
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import time  # noqa: E402
import timeit  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from pokedex.background import estimate_background  # noqa: E402
from pokedex.preprocess import _content_from_estimate, _to_rgb, image_to_array  # noqa: E402
from pokedex.reencode import photo  # noqa: E402


def sprite(size: int) -> Image.Image:
    """A sprite-like RGBA picture (outline, body, eye) filling about half of a ``size``² transparent canvas."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = size / 64
    draw.ellipse((12 * s, 8 * s, 40 * s, 44 * s), fill=(90, 160, 220, 255), outline=(40, 40, 40, 255), width=int(2 * s))
    draw.rectangle((20 * s, 18 * s, 24 * s, 22 * s), fill=(250, 250, 250, 255))
    return image


def cases(size: int) -> dict[str, Image.Image]:
    """The uploads to time: on white (PNG and JPEG q75), on noise (a textured border, removed), on an out-of-focus
    photo (a smooth border, removed), with real alpha."""
    rgba = sprite(size)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    on_white = white.convert("RGB")
    buffer = io.BytesIO()
    on_white.save(buffer, format="JPEG", quality=75)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).convert("RGBA")
    noise.alpha_composite(rgba)
    backdrop = photo(rgba.size, np.random.default_rng(0)).convert("RGBA")
    return {
        "sprite on white (RGB)": on_white,
        "sprite on white (JPEG q75)": Image.open(buffer),
        "sprite on noise (RGB)": noise.convert("RGB"),
        "sprite on photo (RGB)": Image.alpha_composite(backdrop, rgba).convert("RGB"),
        "sprite with alpha (RGBA)": rgba,
    }


def fit_only(image: Image.Image, image_size: int) -> np.ndarray:
    """Version 1 of ``image_to_array`` (the baseline): fit (never upscale), centre, zero hidden colour."""
    rgba = image.convert("RGBA")
    if max(rgba.size) > image_size:
        scale = image_size / max(rgba.size)
        size = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
        rgba = rgba.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (image_size, image_size), (0, 0, 0, 0))
    canvas.paste(rgba, ((image_size - rgba.width) // 2, (image_size - rgba.height) // 2))
    array = np.asarray(canvas, dtype=np.uint8).copy()
    array[array[..., 3] == 0] = 0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def best_ms(call: Callable[[], object], repeat: int, number: int) -> float:
    """Milliseconds per call of the fastest round."""
    call()  # warm-up (imports, first allocation)
    return min(timeit.repeat(call, repeat=repeat, number=number, timer=time.process_time)) / number * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="side of the constructed uploads (px)")
    parser.add_argument("--image-size", type=int, nargs="+", default=[128, 64], help="canonical sizes S")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=40)
    args = parser.parse_args()
    print(f"{args.size}² uploads, one thread, best of {args.repeat} × {args.number} calls (CPU ms/image)")
    header = f"{'case':<28}{'S':>5}{'estimate':>10}{'bg step':>9}{'total':>10}{'v1 fit':>9}{'ratio':>7}"
    print(header, "-" * len(header), sep="\n")
    for name, image in cases(args.size).items():
        rgb = _to_rgb(image)
        estimate = best_ms(lambda rgb=rgb: estimate_background(rgb), args.repeat, args.number)
        step = best_ms(lambda rgb=rgb: _content_from_estimate(rgb), args.repeat, args.number)
        for s in args.image_size:
            total = best_ms(lambda image=image, s=s: image_to_array(image, s), args.repeat, args.number)
            base = best_ms(lambda image=image, s=s: fit_only(image, s), args.repeat, args.number)
            print(f"{name:<28}{s:>5}{estimate:>10.3f}{step:>9.3f}{total:>10.3f}{base:>9.3f}{total / base:>7.2f}")
    print(
        "estimate: estimate_background on the RGB picture; bg step: + full-resolution refinement and crop\n"
        "(both as if the image were opaque: the real-alpha case never runs them inside image_to_array)"
    )


if __name__ == "__main__":
    main()
