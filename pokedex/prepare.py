"""``python -m pokedex.prepare``: build the dataset zip from ``data.source`` (a no-op when it is up to date)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pokedex.config import CONFIG_PATH, register_resolvers
from pokedex.data.archive import DatasetIndex
from pokedex.data.sources import ensure_dataset

log = logging.getLogger(__name__)
register_resolvers()


def format_summary(index: DatasetIndex, zip_path: str | Path) -> str:
    """One human-readable block: classes, images per split, size and what was left out."""
    summary = index.meta.get("summary", {})
    counts = index.counts()
    path = Path(zip_path)
    size = path.stat().st_size if path.exists() else 0
    lines = [
        f"dataset   {path} ({size / 1e6:.1f} MB)",
        f"classes   {len(index.classes)}",
        "images    " + ", ".join(f"{split} {n}" for split, n in counts.items()) + f" (total {sum(counts.values())})",
    ]
    skipped = summary.get("skipped") or {}
    lines.append("skipped   " + (", ".join(f"{reason} {n}" for reason, n in skipped.items()) or "nothing"))
    for key in ("species_without_val", "species_without_test"):
        if summary.get(key):
            lines.append(f"note      {summary[key]} {key.replace('_', ' ')}")
    return "\n".join(lines)


def prepare(cfg: DictConfig) -> DatasetIndex:
    """Instantiate ``cfg.data.source`` and make sure ``cfg.data.zip_path`` holds its dataset."""
    source = hydra.utils.instantiate(cfg.data.source)
    start = time.perf_counter()
    index = ensure_dataset(source, cfg.data.zip_path, force=cfg.force)
    print(format_summary(index, cfg.data.zip_path))
    print(f"took      {time.perf_counter() - start:.1f} s")  # not in the index: the zip must be byte-reproducible
    return index


@hydra.main(config_path=CONFIG_PATH, config_name="prepare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
