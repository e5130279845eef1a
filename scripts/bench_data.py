#!/usr/bin/env python
"""Loader-only throughput (images/s) by ``num_workers``: how fast each data path can feed a trainer.

Why: ``bench_train.py`` shows whether the trainer waits; this shows by how much each loader could outrun (or
fall behind) a faster model. Each (path, num_workers) pair iterates a fresh DataLoader over the train split,
skips the first ``--warmup`` batches (worker start-up) and times the next ``--batches``. The last rows time the
batch augmentation alone on this process's CPU threads (on a GPU it runs on the device instead).

    python scripts/bench_data.py                               # data/pokemon.zip, or a generated zip
    python scripts/bench_data.py --workers 0 1 2 --paths zip,cache --batch-size 256
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import datamodule, naive_loader, resolve_zip

from pokedex.data.archive import read_index
from pokedex.data.augment import BatchAugment

PATHS = ("naive", "zip", "cache")


def loader_rate(args: argparse.Namespace, zip_path: Path, path: str, workers: int) -> tuple[float, float]:
    """(images/s over the timed batches, seconds to the first batch)."""
    args.num_workers = workers
    if path == "naive":
        loader = naive_loader(args, zip_path)
    else:
        loader = datamodule(args, zip_path, cache=path == "cache").train_dataloader()
    start = time.perf_counter()
    batches, first, images, timed_from = iter(loader), 0.0, 0, 0.0
    for i in range(args.warmup + args.batches):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        if i == 0:
            first = time.perf_counter() - start
        if i == args.warmup - 1 or (args.warmup == 0 and i == 0):
            timed_from = time.perf_counter()
        elif i >= args.warmup:
            images += len(batch[0])
    seconds = time.perf_counter() - timed_from
    del batches, loader
    return images / seconds, first


def augment_rate(args: argparse.Namespace, threads: int) -> float:
    torch.set_num_threads(threads)
    batch = torch.randint(0, 256, (args.batch_size, 4, args.image_size, args.image_size), dtype=torch.uint8)
    augment = BatchAugment()
    augment(batch)
    start, n = time.perf_counter(), 10
    for _ in range(n):
        augment(batch)
    return n * args.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zip", help="dataset zip (default: data/pokemon.zip, else a generated one)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)}")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=20, help="timed batches per row")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--prefetch-factor", type=int, default=4)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: pinned memory, like training")
    p.add_argument("--cache-dir", default=str(Path(__file__).resolve().parents[1] / "data" / "cache"))
    args = p.parse_args(argv)
    paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    zip_path = resolve_zip(args)
    counts = read_index(zip_path).counts()

    rows = []
    for path in paths:
        for workers in args.workers:
            rate, first = loader_rate(args, zip_path, path, workers)
            rows.append(f"| {path} | {workers} | {rate:.0f} | {first:.2f} |")
            print(f"[bench_data] {path} num_workers={workers}: {rate:.0f} images/s", file=sys.stderr, flush=True)
    aug = [f"| {t} | {augment_rate(args, t):.0f} |" for t in sorted({1, torch.get_num_threads()})]

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"data {zip_path} ({counts['train']} train images), {args.image_size} px, batch {args.batch_size}, "
        f"{args.batches} timed batches after {args.warmup}; {os.cpu_count()} CPUs; torch {torch.__version__}; "
        f"load average after the run {load}\n"
    )
    print("| loader | num_workers | images/s | s to first batch |\n| --- | ---: | ---: | ---: |")
    print("\n".join(rows))
    print("\n| batch augmentation on CPU, torch threads | images/s |\n| --- | ---: |")
    print("\n".join(aug))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
