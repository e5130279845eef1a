"""Helpers for the export / predictor / serving tests (the fixtures built on them are in tests/serve_fixtures.py)."""

from __future__ import annotations

import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from pokedex.data.archive import read_index
from pokedex.serve import ServeSettings, create_app
from tests.helpers.hydra import compose_config, synthetic_overrides

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ready(url: str, *, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Poll ``GET {url}/ready`` until 200; fail early if ``process`` (the server) exits, or at ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:  # not listening yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not become ready within {timeout:.0f} s")


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    """The in-process variant for a ``TestClient``: also fails at once when the model failed to load."""
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
