"""scripts/gpu_summary.py: what a GPU run reports (a device is lent for minutes, so its summary must be right)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_run(out: Path) -> None:
    (out / "environment.txt").write_text("python 3.12.3, torch 2.11.0, NVIDIA H200\n")
    (out / "epochs.csv").write_text(
        "epoch,step,time/epoch_s,time/images_per_s,train/loss\n"
        "0,39,30.0,680.0,\n0,39,,,5.1\n1,79,2.0,10200.0,\n2,119,4.0,5100.0,\n"
    )
    suite = {"clean": (0.75, 0.9), "white": (0.74, 0.9), "busy_photo_jpeg": (0.6, 0.8)}
    metrics = {
        "best_val_top1": 0.76,
        "test": {"test/top1": 0.745, "test/top5": 0.9, "test/macro_f1": 0.7},
        "suite": {"conditions": {k: {"top1": a, "top5": b, "images": 1000} for k, (a, b) in suite.items()}},
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    results = [{"mode": "compute", "images_per_s": 50000.0}, {"mode": "cache", "images_per_s": 40000.0}]
    (out / "bench_train.json").write_text(json.dumps({"args": {}, "results": results}))


def test_summary_reports_epochs_suite_and_throughput(tmp_path: Path) -> None:
    write_run(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_summary.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    text = result.stdout
    assert "NVIDIA H200" in text
    assert "epochs: 3; first 30.0 s" in text  # the compile epoch apart from the others
    assert "later epochs: median 3.00 s, range 2.00-4.00 s; median 7,650 images/s" in text
    assert "test split: top-1 74.5%, top-5 90.0%" in text
    assert "| `white` | 74.0% | 90.0% | -1.0 |" in text and "| `busy_photo_jpeg` | 60.0% | 80.0% | -15.0 |" in text
    assert "1 of 2 conditions within 5 points of clean." in text
    assert "| cache | 40,000 | 0.80 |" in text


def test_summary_counts_a_drop_of_exactly_five_points_as_within(tmp_path: Path) -> None:
    """The same count as scripts/suite_table.py (the README's table): 0.75 - 0.70 is 5 points, float noise aside."""
    write_run(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["suite"]["conditions"]["jpeg50"] = {"top1": 0.70, "top5": 0.85, "images": 1000}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    text = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_summary.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "2 of 3 conditions within 5 points of clean." in text
