"""Measure the drift detector: false-alarm rate on in-distribution windows, detection rate and delay off-domain.

    python scripts/bench_drift.py [--ckpt best.ckpt] [--window 200] [--runs 20]

With ``--ckpt`` the model is exported (drift reference from its own val split, thresholds calibrated on its test
split, as ``pokedex.export`` does) and measured on its own dataset zip; without it, a throwaway resnet18 is trained
for a few batches on a generated synthetic dataset (40 classes, 64 px) and measured on that, which says how the
statistics behave, not how a real sprite model does. Every record is made as the service makes it: the upload's
bytes through ``decode_with_facts`` and the exported ONNX graph (probabilities + embeddings), no HTTP.

* false alarms: share of windows (``--windows`` random windows of distinct test-split images, and of val-split
  images) on which a fresh monitor alarms. The test split is what the thresholds were calibrated on, so its rate is
  an in-sample figure; the held-out figure is the calibration's own cross-fitted estimate (thresholds from one
  half of the test split scored on the other half), the rate to expect on new traffic like it. The val split is
  the reference's own data, and *not* a fair look: the class-group signal ranked its groups on half of it, so
  val windows over-represent the groups its lucky classes fell into (printed for completeness);
* detection: the window is first filled with test-split sprites, then an off-domain stream arrives one request at
  a time; the delay is the number of off-domain requests until ``/drift`` would say "drift" (``--runs`` random
  orders; a run that has not alarmed after two windows counts as missed). Streams: the test sprites flattened onto
  white and saved as JPEG (what people upload), and random shapes on noise (JPEG photos of nothing).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent


def flattened_jpeg(png: bytes) -> bytes:
    image = Image.open(io.BytesIO(png)).convert("RGBA")
    canvas = Image.new("RGB", image.size, (255, 255, 255))
    canvas.paste(image, mask=image.getchannel("A"))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def shapes_on_noise(rng: np.random.Generator, size: tuple[int, int] = (320, 240)) -> bytes:
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, size[0] - 40)), int(rng.integers(0, size[1] - 40))
        box = (x0, y0, x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 120)))
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def noise_blob_png(rng: np.random.Generator, size: int = 128) -> bytes:
    """Noise inside an ellipse on a transparent canvas: the same format, size and transparency as a sprite, so
    only the model-side signals (confidence, classes, embedding) and the foreground fraction can see it."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    mask = Image.new("L", (size, size), 0)
    margin = int(rng.integers(4, size // 4))
    ImageDraw.Draw(mask).ellipse((margin, margin, size - margin, size - margin), fill=255)
    noise = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert("RGBA")
    image.paste(noise, mask=mask)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def records_of(session, images: list[bytes], size: int) -> list:
    from pokedex.drift.records import PredictionRecord, decode_with_facts
    from pokedex.inference.onnx_backend import run_onnx_embeddings

    out = []
    for start in range(0, len(images), 64):
        decoded = [decode_with_facts(data, size) for data in images[start : start + 64]]
        probs, embeddings = run_onnx_embeddings(session, np.stack([a for a, _ in decoded]))
        out += [PredictionRecord.from_probs(p, f, e) for p, (_, f), e in zip(probs, decoded, embeddings, strict=True)]
    return out


def false_alarm_rate(reference: dict, records: list, window: int, count: int, rng: np.random.Generator) -> float:
    from pokedex.drift.monitor import DriftMonitor

    alarms = 0
    for _ in range(count):
        rows = rng.choice(len(records), size=window, replace=len(records) < window)
        monitor = DriftMonitor(reference, window=window)
        monitor.extend(records[i] for i in rows)
        alarms += monitor.report()["alarm"]
    return alarms / count


def delays(reference: dict, normal: list, shifted: list, window: int, runs: int, rng: np.random.Generator) -> list:
    from pokedex.drift.monitor import DriftMonitor

    out = []
    for _ in range(runs):
        monitor = DriftMonitor(reference, window=window)
        monitor.extend(normal[i] for i in rng.choice(len(normal), size=window, replace=len(normal) < window))
        found, signals = None, []
        for step, i in enumerate(rng.choice(len(shifted), size=2 * window, replace=len(shifted) < 2 * window), 1):
            monitor.add(shifted[i])
            report = monitor.report()  # what GET /drift would say after this request
            if report["alarm"]:
                found, signals = step, [n for n, e in report["signals"].items() if e["verdict"] == "drift"]
                break
        out.append((found, signals))
    return out


def split_bytes(zip_path: Path, split: str) -> list[bytes]:
    from pokedex.data.archive import read_index

    with zipfile.ZipFile(zip_path) as zf:
        return [zf.read(m.path) for m in read_index(zip_path).split(split)]


def prepare(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path | None]:
    """(checkpoint, dataset zip or None = the checkpoint's own): without --ckpt, a small synthetic model.

    40 classes × 4 animations × 8 frames at 64 px: 320 images per split, so a window of 200 holds distinct
    images (the default synthetic data has 18 per split); 2 epochs of 30 batches, enough to be well above chance.
    """
    if args.ckpt:
        return args.ckpt, args.zip
    run_dir, zip_path = workdir / "train", workdir / "synthetic.zip"
    cmd = [
        sys.executable, "-m", "pokedex.train", "model=resnet18", "data=synthetic", "data.image_size=64",
        f"data.zip_path={zip_path}", "data.source.num_classes=40", "data.source.frames_per_animation=8",
        "data.batch_size=32", "trainer=cpu", "trainer.max_epochs=2", "+trainer.limit_train_batches=30",
        "trainer.num_sanity_val_steps=0", "logger=none", "test=false", "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    print("training a small resnet18 on 40 synthetic classes at 64 px ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    return (ckpt if ckpt.exists() else run_dir / "checkpoints" / "last.ckpt"), zip_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path)
    parser.add_argument("--zip", type=Path, help="dataset zip of --ckpt (default: the one it was trained on)")
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--windows", type=int, default=2000, help="random windows for the false-alarm rate")
    parser.add_argument("--runs", type=int, default=10, help="random orders per off-domain stream")
    args = parser.parse_args()

    from pokedex.inference.onnx_export import DriftOptions, export_onnx
    from pokedex.onnx_session import onnx_session

    workdir = Path(tempfile.mkdtemp(prefix="pokedex-drift-"))
    ckpt, zip_path = prepare(args, workdir)
    options = DriftOptions(zip_path=str(zip_path) if zip_path else None, window_sizes=(args.window,))
    sidecar = export_onnx(ckpt, workdir / "model.onnx", drift=options)
    zip_path = Path(options.zip_path or sidecar["data"]["zip_path"])
    reference, size = sidecar["drift_reference"], int(sidecar["preprocess"]["image_size"])
    session = onnx_session(workdir / "model.onnx")
    test_png, val_png = split_bytes(zip_path, "test"), split_bytes(zip_path, "val")
    test, val = records_of(session, test_png, size), records_of(session, val_png, size)
    rng = np.random.default_rng(0)
    streams = {
        "test sprites flattened on white, JPEG": records_of(session, [flattened_jpeg(p) for p in test_png], size),
        "random shapes on noise, JPEG 320x240": records_of(session, [shapes_on_noise(rng) for _ in range(300)], size),
        "noise blobs on a transparent canvas, PNG (sprite-like file)": records_of(
            session, [noise_blob_png(rng, Image.open(io.BytesIO(test_png[0])).width) for _ in range(300)], size
        ),
    }
    result = {
        "model": f"{sidecar['model_name']} {size}px, {len(sidecar['class_names'])} classes ({ckpt})",
        "window": args.window,
        "thresholds": reference["calibration"]["thresholds"][str(args.window)],
        "false_alarm_rate_test_split": false_alarm_rate(reference, test, args.window, args.windows, rng),
        "false_alarm_rate_held_out_cross_fitted": reference["calibration"]["held_out_false_alarm_rate"][
            str(args.window)
        ],
        "false_alarm_rate_val_split": false_alarm_rate(reference, val, args.window, args.windows, rng),
        "records": {"test": len(test), "val": len(val)},
    }
    for name, shifted in streams.items():
        found = delays(reference, test, shifted, args.window, args.runs, rng)
        hits = [d for d, _ in found if d is not None]
        result[name] = {
            "detection_rate": len(hits) / len(found),
            "delay_median": statistics.median(hits) if hits else None,
            "delay_max": max(hits) if hits else None,
            "signals_at_alarm": sorted({n for _, names in found for n in names}),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
