"""The API image keeps Cloud Run's container contract: it listens on ``$PORT`` and exits 0 within 10 s of SIGTERM.

Runs the image that ``make docker-test`` builds (``POKEDEX_API_IMAGE``, default ``pokedex-api:dev``) with the
session's tiny exported model mounted. Skipped when no Docker engine answers or the image has not been built;
``scripts/docker_test.sh`` makes the same checks on the images it has just built.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.serving import Exported, sprite_bytes

pytest_plugins = ["tests.serve_fixtures"]
pytestmark = pytest.mark.slow

IMAGE = os.environ.get("POKEDEX_API_IMAGE", "pokedex-api:dev")
PORT = 9123  # not the image's default (8000): only an app that reads $PORT answers on it
STOP_LIMIT_S = 10  # Cloud Run's grace period between SIGTERM and SIGKILL


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    if docker("info").returncode != 0:
        pytest.skip("no Docker engine answers (make docker-test starts one)")
    if docker("image", "inspect", IMAGE).returncode != 0:
        pytest.skip(f"{IMAGE} is not built: run make docker-test")
    return IMAGE


def model_dir(exported: Exported, tmp_path: Path) -> Path:
    """The export as the image expects it (/app/models/model.onnx + model.json), readable by its uid 10001."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(exported.onnx, models / "model.onnx")
    shutil.copy(exported.onnx.with_suffix(".json"), models / "model.json")
    for path in (models, *models.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return models


def wait_ready(url: str, container: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        running = docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip()
        assert running == "true", docker("logs", container).stderr[-3000:]
        time.sleep(0.5)
    pytest.fail(f"/ready did not answer 200 within {timeout} s")


def test_listens_on_port_and_exits_0_within_10_s_of_sigterm(
    image: str, exported: Exported, synthetic_zip: Path, tmp_path: Path
) -> None:
    name = f"pokedex-contract-{os.getpid()}"
    models = model_dir(exported, tmp_path)
    started = docker(
        "run", "-d", "--name", name, "-e", f"PORT={PORT}", "-p", f"127.0.0.1::{PORT}",
        "-v", f"{models}:/app/models:ro", image,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        # Only the container's $PORT is published: an app listening anywhere else would never answer here.
        url = "http://" + docker("port", name, f"{PORT}/tcp").stdout.split()[0]
        wait_ready(url, name)
        ((filename, data),) = sprite_bytes(synthetic_zip)
        reply = httpx.post(f"{url}/predict", files={"file": (filename, data, "image/png")}, timeout=30)
        assert reply.status_code == 200 and reply.json()["predictions"], reply.text
        start = time.monotonic()
        stopped = docker("stop", "-t", str(STOP_LIMIT_S), name, timeout=STOP_LIMIT_S + 30)
        seconds = time.monotonic() - start
        assert stopped.returncode == 0, stopped.stderr
        exit_code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        logs = docker("logs", name)
        assert exit_code == "0", logs.stderr[-3000:]
        assert seconds < STOP_LIMIT_S, f"took {seconds:.1f} s to stop"
        assert "Finished server process" in logs.stdout + logs.stderr
    finally:
        docker("rm", "-f", name)
