"""Helpers for the export / predictor / serving tests (the fixtures built on them are in serve_fixtures.py)."""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from pokedex.data.archive import read_index
from pokedex.serve import ServeSettings, create_app
from tests.conftest import compose_config, synthetic_overrides

IMAGE_SIZE = 32


@dataclass(frozen=True)
class TrainedRun:
    checkpoint: Path
    zip_path: Path
    output_dir: Path


@dataclass(frozen=True)
class Exported:
    onnx: Path
    sidecar: dict[str, Any]
    checkpoint: Path


def train_tiny(out: Path, zip_path: Path, *extra: str) -> TrainedRun:
    """The smallest real training run: synthetic 32 px data, resnet18, two batches of one epoch on the CPU."""
    from pokedex.train import train

    overrides = synthetic_overrides(
        zip_path,
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=2",
        "+trainer.enable_progress_bar=false",
        "logger=none",
        "test=false",
        f"paths.output_dir={out}",
        *extra,
    )
    summary = train(compose_config("train", overrides, out))
    checkpoint = out / (summary["best_checkpoint"] or "checkpoints/last.ckpt")  # relative to the run directory
    assert checkpoint.is_file(), summary
    return TrainedRun(checkpoint, zip_path, out)


def sprite_bytes(zip_path: Path, split: str = "test", n: int = 1) -> list[tuple[str, bytes]]:
    """PNG members of the synthetic dataset, straight out of the zip (what the model was trained on)."""
    index = read_index(zip_path)
    members = index.split(split)[:n]
    with zipfile.ZipFile(zip_path) as zf:
        return [(m.path, zf.read(m.path)) for m in members]


def encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims ``width``×``height`` RGBA pixels: a decompression bomb, cheaply."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/ready")
        if response.status_code == 200:
            return
        assert response.status_code == 503, response.text
        if "failed" in response.json()["detail"]:
            raise AssertionError(response.json()["detail"])
        time.sleep(0.02)
    raise AssertionError("service did not become ready")


@contextmanager
def serving(model_path: Path, **settings: Any) -> Iterator[TestClient]:
    """A TestClient on a fresh app (own metrics, own model), returned once ``/ready`` says 200."""
    app = create_app(ServeSettings(model_path=str(model_path), **settings))
    with TestClient(app) as client:
        wait_ready(client)
        yield client
