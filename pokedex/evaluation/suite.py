"""The robustness suite: the test split re-encoded the way people really upload pictures, scored per condition.

Each sprite is turned into the bytes of an upload (``conditions.Condition``: flattened onto white, JPEG, in a
corner, blurred, ...), decoded and preprocessed exactly like an HTTP upload (``bytes_to_array``), and scored by
any ``Predictor``, so the numbers describe the service a user talks to. A seeded, evenly spread subset of the
split keeps it to seconds per condition.
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pokedex.data.archive import Member
from pokedex.evaluation.conditions import Condition, Suite, condition_rng
from pokedex.evaluation.metrics import Evaluation
from pokedex.inference.base import Predictor
from pokedex.preprocess import bytes_to_array

log = logging.getLogger(__name__)


def spread_subset(members: Sequence[Member], limit: int | None) -> list[Member]:
    """Up to ``limit`` members evenly spaced over the split (which is sorted by class): every class counts."""
    if not limit or len(members) <= limit:
        return list(members)
    return [members[(i * len(members)) // limit] for i in range(limit)]


def load_sprites(zip_path: str | Path, members: Sequence[Member]) -> list[Image.Image]:
    """The stored RGBA sprites of ``members``, decoded once and reused by every condition."""
    with zipfile.ZipFile(zip_path) as zf:
        return [Image.open(io.BytesIO(zf.read(m.path))).convert("RGBA") for m in members]


def score_condition(
    predictor: Predictor, condition: Condition, suite: Suite, sprites: Sequence[Image.Image],
    keys: Sequence[str], labels: np.ndarray, *, batch_size: int = 256, pool: ThreadPoolExecutor | None = None,
) -> dict[str, float]:  # fmt: skip
    """top-1 / top-5 of ``predictor`` on the uploads this condition makes of ``sprites``."""
    size = predictor.spec.image_size

    def upload_to_array(index: int) -> np.ndarray:  # encode + decode release the GIL: threads overlap them
        sprite, key = sprites[index], keys[index]
        data = condition(sprite, condition_rng(suite.seed, condition.name, key))
        return bytes_to_array(data, size, name=f"{condition.name}:{key}")

    arrays = np.stack(list((pool.map if pool else map)(upload_to_array, range(len(sprites)))))
    batches = range(0, len(arrays), batch_size)
    probs = np.concatenate([predictor.predict_arrays(arrays[i : i + batch_size]) for i in batches])
    evaluation = Evaluation(probs, labels)
    return {"top1": evaluation.top_k(1), "top5": evaluation.top_k(5), "images": len(labels)}


def run_suite(
    predictor: Predictor, zip_path: str | Path, members: Sequence[Member], suite: Suite, *,
    limit: int | None = 1000, batch_size: int = 256, threads: int = 2,
) -> dict[str, Any]:  # fmt: skip
    """``{condition name: {top1, top5, images}}`` plus the worst condition and the gap to clean."""
    chosen = spread_subset(members, limit)
    sprites = load_sprites(zip_path, chosen)
    keys, labels = [m.path for m in chosen], np.array([m.label for m in chosen])
    results: dict[str, Any] = {}
    start = time.perf_counter()
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for condition in suite.conditions:
            results[condition.name] = score_condition(
                predictor, condition, suite, sprites, keys, labels, batch_size=batch_size, pool=pool
            )
            log.info("suite %-18s top-1 %.3f", condition.name, results[condition.name]["top1"])
    log.info("suite: %d conditions x %d images in %.1f s", len(results), len(chosen), time.perf_counter() - start)
    return results


def summarize(results: dict[str, dict[str, float]], clean: str = "clean") -> dict[str, Any]:
    """The headline numbers: worst condition, mean top-1, and the largest drop from the clean condition."""
    top1 = {name: r["top1"] for name, r in results.items()}
    worst = min(top1, key=top1.get)
    summary = {"worst": worst, "worst_top1": top1[worst], "mean_top1": float(np.mean(list(top1.values())))}
    if clean in top1:
        summary["max_drop_from_clean"] = top1[clean] - top1[worst]
    return summary
