#!/usr/bin/env python
"""How much of a suite condition's loss is the background estimation's: top-1 on the same uploaded pixels as the
preprocessing finds the sprite, without the background it keeps, with the sprite it removes put back, and with
the true silhouette.

Why: a condition that loses points against ``clean`` loses them either to the segmentation (what the
preprocessing keeps or removes) or to the pixels themselves (JPEG, colour bleed). Putting the true alpha back on
the same pixels separates the two, and tells which of the two errors to work on. Only conditions whose upload
is the opaque sprite at its own size (``flatten``, ``busy``) have a true silhouette on the upload's pixels, and
only uploads of at most ``ANALYSIS_SIZE`` px, where the estimate is the alpha itself; the "as found" column is
checked to equal the real preprocessing of each upload.

    python scripts/segmentation_gap.py --model models/model.onnx --conditions busy_photo_jpeg jpeg50
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from pokedex.background import ANALYSIS_SIZE, estimate_background, jpeg_tolerance
from pokedex.config import CONFIG_PATH
from pokedex.data.archive import read_index
from pokedex.evaluation.conditions import Suite, condition_rng
from pokedex.evaluation.metrics import Evaluation
from pokedex.evaluation.suite import load_sprites, spread_subset
from pokedex.inference.loader import load_predictor
from pokedex.preprocess import bytes_to_array, image_to_array

VARIANTS = ("as found", "without kept background", "with lost sprite", "true silhouette")


def load_suite() -> Suite:
    """The robustness suite as ``conf/suite`` defines it (the conditions ``pokedex.evaluate`` scores)."""
    with initialize_config_dir(str(CONFIG_PATH), version_base=None):
        return instantiate(compose("evaluate", overrides=["ckpt_path=unused"]).suite)


def found_silhouette(image: Image.Image, rgb: Image.Image, *, learned: bool = True) -> np.ndarray:
    """The silhouette the preprocessing finds in an opaque picture (bool; all of it when it finds none), with
    ``learned=False`` by its rules alone. ``image`` is the decoded file (its JPEG tables set the tolerance),
    ``rgb`` the same picture as RGB."""
    estimate = estimate_background(rgb, jpeg_tolerance(image), learned=learned)
    return estimate.foreground if estimate.foreground is not None else np.ones(rgb.size[::-1], dtype=bool)


def silhouettes(data: bytes, sprite: Image.Image, name: str) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """(the decoded upload as RGB, the alpha the preprocessing finds, the sprite's true alpha), both bool."""
    image = Image.open(io.BytesIO(data))
    rgb = image.convert("RGB")
    opaque = image.mode in ("RGB", "L") or (image.mode == "RGBA" and image.getchannel("A").getextrema()[0] == 255)
    if not opaque or rgb.size != sprite.size or max(rgb.size) > ANALYSIS_SIZE:
        raise SystemExit(f"{name}: not an opaque upload of the sprite at its own size (<= {ANALYSIS_SIZE} px)")
    return rgb, found_silhouette(image, rgb), np.asarray(sprite)[..., 3] > 0


def with_alpha(rgb: Image.Image, alpha: np.ndarray, size: int) -> np.ndarray:
    """The canonical array of ``rgb`` cut out by ``alpha`` (bool): a silhouette scored through the one
    preprocessing path."""
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(alpha.astype(np.uint8) * 255))
    return image_to_array(rgba, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/model.onnx", help="a .onnx or .ckpt of this preprocessing version")
    parser.add_argument("--zip", default="data/pokemon.zip")
    parser.add_argument("--conditions", nargs="+", default=["busy_photo_jpeg"], help="suite condition names")
    parser.add_argument("--limit", type=int, default=1000, help="test images, spread over the classes (as the suite)")
    args = parser.parse_args()

    suite = load_suite()
    conditions = {c.name: c for c in suite.conditions}
    unknown = sorted(set(args.conditions) - set(conditions))
    if unknown:
        raise SystemExit(f"unknown condition(s) {unknown}; conf/suite has {sorted(conditions)}")
    predictor = load_predictor(args.model, threads=2)
    size = predictor.spec.image_size
    members = spread_subset(read_index(args.zip).split("test"), args.limit)
    sprites, labels = load_sprites(args.zip, members), np.array([m.label for m in members])

    print(f"{len(members)} test images; pixels as a share of the true sprite's; top-1 of {args.model}")
    print(f"{'condition':<18}{'kept':>7}{'lost':>7}" + "".join(f"{v:>26}" for v in VARIANTS))
    for name in args.conditions:
        arrays: dict[str, list[np.ndarray]] = {v: [] for v in VARIANTS}
        kept = lost = sprite_pixels = 0
        for member, sprite in zip(members, sprites, strict=True):
            data = conditions[name](sprite, condition_rng(suite.seed, name, member.path))
            rgb, found, true = silhouettes(data, sprite, f"{name}:{member.path}")
            kept, lost = kept + np.count_nonzero(found & ~true), lost + np.count_nonzero(true & ~found)
            sprite_pixels += np.count_nonzero(true)
            as_found = with_alpha(rgb, found, size)
            if not np.array_equal(as_found, bytes_to_array(data, size)):
                raise SystemExit(f"{name}:{member.path}: the estimate is not what the preprocessing does")
            arrays["as found"].append(as_found)
            arrays["without kept background"].append(with_alpha(rgb, found & true, size))
            arrays["with lost sprite"].append(with_alpha(rgb, found | true, size))
            arrays["true silhouette"].append(with_alpha(rgb, true, size))
        top1 = {v: Evaluation(predictor.predict_arrays(np.stack(a)), labels).top_k(1) for v, a in arrays.items()}
        shares = f"{kept / sprite_pixels:>7.1%}{lost / sprite_pixels:>7.1%}"
        print(f"{name:<18}{shares}" + "".join(f"{top1[v]:>26.1%}" for v in VARIANTS))


if __name__ == "__main__":
    main()
