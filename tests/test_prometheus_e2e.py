"""End to end: a real Prometheus scrapes a real ``python -m pokedex.serve`` and evaluates the real drift alert.

Test-split sprites keep ``PokedexDrift`` inactive (with the drift window full, so that the verdict is a real
one); off-domain photos (random-noise JPEGs) turn it to firing, as seen through Prometheus's own
``/api/v1/alerts``. The only change to ``monitoring/`` is a shorter ``for`` on the drift alert and a 1 s scrape.

What the service must provide (see the report of the ops branch): the sidecar key ``drift_reference`` read at
startup, the ``drift_window`` setting, ``GET /drift`` and the ``pokedex_drift_*`` gauges on ``/metrics``.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from pokedex.data.archive import read_index
from pokedex.drift.calibration import calibrate
from pokedex.drift.records import PredictionRecord, decode_with_facts
from pokedex.drift.reference import SIDECAR_KEY, build_reference

pytest_plugins = ["tests.serve_fixtures"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus not installed (apt-get install prometheus)"
    ),
]

REPO = Path(__file__).resolve().parent.parent
WINDOW = 12  # < the 18 test sprites of the synthetic data, so calibration windows hold distinct images
DRIFT_FOR = "4s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def split_bytes(zip_path: Path, split: str) -> list[bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return [zf.read(m.path) for m in read_index(zip_path).split(split)]


def onnx_records(model: Path, sidecar: dict[str, Any], images: list[bytes]) -> list[PredictionRecord]:
    """What the served model says about ``images``, as the service's telemetry will record it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    size = int(sidecar["preprocess"]["image_size"])
    decoded = [decode_with_facts(data, size) for data in images]
    (probs,) = session.run([sidecar["output"]["name"]], {sidecar["input"]["name"]: np.stack([a for a, _ in decoded])})
    return [PredictionRecord.from_probs(p, facts) for p, (_, facts) in zip(probs, decoded, strict=True)]


@pytest.fixture(scope="module")
def model_with_reference(exported: Any, trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's exported model whose sidecar carries a drift reference calibrated for WINDOW.

    Reference from the val split, thresholds from the test split, as the export step does; alpha 0.001 so
    that the in-distribution phase (a few dozen sliding windows) practically never alarms.
    """
    folder = tmp_path_factory.mktemp("e2e-model")
    model = folder / "model.onnx"
    shutil.copy(exported.onnx, model)
    sidecar = json.loads(exported.onnx.with_suffix(".json").read_text(encoding="utf-8"))
    val = onnx_records(model, sidecar, split_bytes(trained.zip_path, "val"))
    test = onnx_records(model, sidecar, split_bytes(trained.zip_path, "test"))
    reference = build_reference(val, None, sidecar["class_names"])
    sidecar[SIDECAR_KEY] = calibrate(reference, test, window_sizes=(WINDOW,), alpha=0.001, n_windows=4000)
    model.with_suffix(".json").write_text(json.dumps(sidecar), encoding="utf-8")
    return model


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def service(model_with_reference: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    args = [f"model_path={model_with_reference}", f"port={port}", f"drift_window={WINDOW}", "access_log=false",
            f"hydra.run.dir={tmp_path / 'serve-run'}"]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "pokedex.serve", *args], cwd=REPO, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or httpx.get(f"{url}/ready").status_code == 200, 120, "/ready")
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def prometheus(service: str, tmp_path: Path) -> Iterator[str]:
    """Prometheus 1 s scrape/evaluation on the service, with the repository's rules (drift ``for`` shortened)."""
    rules = yaml.safe_load((REPO / "monitoring" / "rules" / "pokedex.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "PokedexDrift":
                rule["for"] = DRIFT_FOR
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "pokedex", "static_configs": [{"targets": [service.removeprefix("http://")]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    command = ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
               f"--storage.tsdb.path={tmp_path / 'tsdb'}"]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/-/ready").status_code == 200, 60, "Prometheus /-/ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def drift_alert_state(prometheus: str) -> str:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
    states = [a["state"] for a in alerts if a["labels"]["alertname"] == "PokedexDrift"]
    return states[0] if states else "inactive"


def query(prometheus: str, expr: str) -> float | None:
    result = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def photo(rng: np.random.Generator) -> bytes:
    """An off-domain upload: a 320×240 noise photo, JPEG, no transparency."""
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def send(service: str, images: list[bytes]) -> None:
    with httpx.Client(base_url=service, timeout=30) as client:
        for data in images:
            response = client.post("/predict", files={"file": ("x", data)})
            assert response.status_code == 200, response.text


def test_drift_alert_fires_on_off_domain_traffic_only(
    service: str, prometheus: str, trained: Any, tmp_path: Path
) -> None:
    sprites = split_bytes(trained.zip_path, "test")
    random.Random(0).shuffle(sprites)
    send(service, sprites * 3)  # 54 in-distribution requests: the window is full and judged
    wait_for(lambda: query(prometheus, 'pokedex_drift_window_fill{job="pokedex"}') == 1.0, 30, "a scraped full window")
    time.sleep(8)  # twice the alert's `for`, at 1 s evaluations
    assert httpx.get(f"{service}/drift").json()["verdict"] == "ok"
    assert drift_alert_state(prometheus) != "firing", httpx.get(f"{service}/drift").json()

    rng = np.random.default_rng(0)
    start = time.monotonic()
    send(service, [photo(rng) for _ in range(2 * WINDOW)])
    wait_for(lambda: drift_alert_state(prometheus) == "firing", 60, "PokedexDrift firing")
    print(f"PokedexDrift firing {time.monotonic() - start:.1f} s after the first off-domain request")
    report = httpx.get(f"{service}/drift").json()
    assert report["verdict"] == "drift" and report["signals"]["format"]["verdict"] == "drift"
    assert query(prometheus, 'pokedex_drift_score{job="pokedex", signal="format"}') == 1.0
