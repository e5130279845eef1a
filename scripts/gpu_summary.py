#!/usr/bin/env python
"""The results of ``scripts/gpu_check.sh`` as Markdown: time per epoch, clean and suite top-1, and the data
paths' images/s against compute-only.

    python scripts/gpu_summary.py OUT

OUT holds what gpu_check.sh wrote: environment.txt, and bench_train.json and/or metrics.json + epochs.csv (the
training run's summary and its CSV log). The first epoch is shown apart: it pays for ``torch.compile``, cuDNN's
autotuning and the workers' start.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite_table import conditions, suite_order, within_five_points


def epochs(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if row.get("time/epoch_s")]
    if not rows:
        return [f"{path}: no epoch times (time/epoch_s) in it"]
    seconds = [float(r["time/epoch_s"]) for r in rows]
    rates = [float(r["time/images_per_s"]) for r in rows]
    lines = [f"- epochs: {len(rows)}; first {seconds[0]:.1f} s ({rates[0]:,.0f} images/s)"]
    if len(rows) > 1:
        rest = seconds[1:]
        lines.append(
            f"- later epochs: median {statistics.median(rest):.2f} s, range {min(rest):.2f}-{max(rest):.2f} s; "
            f"median {statistics.median(rates[1:]):,.0f} images/s (loading, augmentation and steps; no validation)"
        )
    return lines


def accuracy(path: Path) -> list[str]:
    metrics = json.loads(path.read_text(encoding="utf-8"))
    test = {k.removeprefix("test/"): v for k, v in metrics.get("test", {}).items()}
    lines = [
        f"- test split: top-1 {test['top1']:.1%}, top-5 {test['top5']:.1%}, macro-F1 {test['macro_f1']:.3f} "
        f"(best val top-1 {metrics['best_val_top1']:.1%})",
        "",
        "| condition | top-1 | top-5 | vs clean |",
        "| --- | ---: | ---: | ---: |",
    ]
    suite = conditions(path)
    clean, names = suite["clean"]["top1"], suite_order(suite)
    for name in names:
        top1 = suite[name]["top1"]
        lines.append(f"| `{name}` | {top1:.1%} | {suite[name]['top5']:.1%} | {100 * (top1 - clean):+.1f} |")
    lines.append(f"\n{within_five_points(suite, names)} of {len(names) - 1} conditions within 5 points of clean.")
    return lines


def throughput(path: Path) -> list[str]:
    results = json.loads(path.read_text(encoding="utf-8"))["results"]
    base = next((r["images_per_s"] for r in results if r["mode"] == "compute"), None)
    lines = ["| data path | images/s | × compute-only |", "| --- | ---: | ---: |"]
    for r in results:
        ratio = f"{r['images_per_s'] / base:.2f}" if base else "-"
        lines.append(f"| {r['mode']} | {r['images_per_s']:,.0f} | {ratio} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    print(f"# GPU check\n\n{(out / 'environment.txt').read_text(encoding='utf-8').strip()}\n")
    if (out / "metrics.json").is_file():
        print("## experiment=full\n")
        print("\n".join(epochs(out / "epochs.csv") + accuracy(out / "metrics.json")), end="\n\n")
    if (out / "bench_train.json").is_file():
        print("## bench_train\n")
        print("\n".join(throughput(out / "bench_train.json")))


if __name__ == "__main__":
    main()
