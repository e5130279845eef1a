"""Operating the service: honest health, the format whitelist, overload 503s, graceful SIGTERM, telemetry and drift."""

from __future__ import annotations

import base64
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pokedex.serve import ServeSettings, create_app
from tests.helpers.images import encode
from tests.helpers.serving import Exported, TrainedRun, free_port, serving, sprite_bytes, wait_http_ready
from tests.test_serve_api import SlowPredictor, post

pytest_plugins = ["tests.serve_fixtures"]


@pytest.fixture(scope="module")
def sprite(trained: TrainedRun) -> bytes:
    return sprite_bytes(trained.zip_path)[0][1]


def metric(client: TestClient, name: str) -> float | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# -- the format whitelist -------------------------------------------------------------------------------------
def test_format_whitelist_bm_prefix_is_415(exported: Exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """``BM`` + PNG bytes: only the BMP decoder may look at it (it refuses), so 415, and no other decoder ran."""
    import pokedex.preprocess

    allowed: list[tuple[str, ...] | None] = []
    real_open = pokedex.preprocess.Image.open

    def spy(fp, mode="r", formats=None):
        allowed.append(formats)
        return real_open(fp, mode, formats)

    png = encode(Image.new("RGBA", (8, 8), (255, 0, 0, 255)), "PNG")
    with serving(exported.onnx) as client:
        monkeypatch.setattr(pokedex.preprocess.Image, "open", spy)
        status, body = post(client, b"BM" + png)
        assert status == 415, body
        assert body["detail"] == "file: starts like BMP but is not a valid BMP image (send PNG, JPEG, GIF, WebP or BMP)"
        assert allowed == [("BMP",)]
        status, _ = post(client, png)  # the same bytes without the fake prefix: a PNG, read by the PNG decoder only
        assert status == 200 and allowed[-1] == ("PNG",)


# -- only decode errors are the client's ----------------------------------------------------------------------
def test_preprocessing_bug_is_a_logged_500(
    exported: Exported, sprite: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(image: Image.Image, size: int) -> None:
        raise ZeroDivisionError("a bug in the preprocessing")

    with serving(exported.onnx) as client:
        monkeypatch.setattr("pokedex.drift.records.image_to_canonical", broken)
        with caplog.at_level(logging.ERROR, logger="pokedex.serve.service"):
            status, body = post(client, sprite)
        assert status == 500, body
        assert (
            "internal error while preprocessing" in body["detail"]
            and "not a problem with your upload" in body["detail"]
        )
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "pokedex.serve.service"]
        assert errors and errors[0].exc_info and errors[0].exc_info[0] is ZeroDivisionError
        assert 'route="/predict",status="500"' in client.get("/metrics").text
        monkeypatch.undo()
        assert post(client, sprite)[0] == 200


# -- bounded concurrency --------------------------------------------------------------------------------------
def test_overload_answers_503_with_retry_after(sprite: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_inflight=2``: a third concurrent prediction is turned away at once (before its body is read)."""
    fake = SlowPredictor(delay=1.5)
    monkeypatch.setattr("pokedex.serve.service.load_predictor", lambda path, threads=None: fake)
    app = create_app(ServeSettings(model_path="slow.onnx", warmup=False, max_inflight=2, max_batch_size=1))
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        results: list[int] = []
        workers = [threading.Thread(target=lambda: results.append(post(client, sprite)[0])) for _ in range(2)]
        for w in workers:
            w.start()
        while metric(client, "pokedex_inflight_requests") != 2.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        response = client.post("/predict", files={"file": ("x.png", sprite)})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1" and "server busy" in response.json()["detail"]
        for w in workers:
            w.join()
        assert results == [200, 200]
        text = client.get("/metrics").text
        assert 'pokedex_http_requests_total{method="POST",route="/predict",status="503"} 1.0' in text  # the alert's
        assert 'pokedex_rejected_uploads_total{status="503"} 1.0' in text
        assert post(client, sprite)[0] == 200  # capacity is back


# -- threads: named for the OS (profiling) ---------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names in /proc are Linux's")
def test_decoding_and_model_threads_carry_their_names(sprite: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/bench_serve.py splits the server's CPU by these names (model, decode, the rest)."""
    import pokedex.serve.service

    seen: list[str] = []
    real_decode = pokedex.serve.service.decode_upload

    def spy(*args, **kwargs):  # runs in a decode thread
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())
        return real_decode(*args, **kwargs)

    monkeypatch.setattr("pokedex.serve.service.load_predictor", lambda path, threads=None: SlowPredictor(delay=0))
    monkeypatch.setattr("pokedex.serve.service.decode_upload", spy)
    with TestClient(create_app(ServeSettings(model_path="slow.onnx", warmup=False))) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert post(client, sprite)[0] == 200
        names = {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}
    assert seen == ["pokedex-decode"]
    assert "pokedex-infer" in names  # the model's threads (and ONNX Runtime's, which inherit the name)


# -- the process: exit codes and SIGTERM ----------------------------------------------------------------------
def _start(model: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "pokedex.serve", f"model_path={model}", f"port={port}", "access_log=false",
           f"hydra.run.dir={tmp_path / 'run'}", *extra]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ), f"http://127.0.0.1:{port}"


def test_model_load_failure_exits_non_zero(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    proc, _ = _start(broken, tmp_path)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output
    assert "model failed to load" in output and "metadata sidecar not found" in output


def _slow_upload(data: bytes, sent_head: threading.Event, pause: float) -> Iterator[bytes]:
    """A multipart body sent in two parts ``pause`` seconds apart: a request that stays in flight that long."""
    yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.png"\r\n\r\n' + data[:20]
    sent_head.set()
    time.sleep(pause)
    yield data[20:] + b"\r\n--b--\r\n"


def test_sigterm_drains_requests_in_flight(exported: Exported, sprite: bytes, tmp_path: Path) -> None:
    """SIGTERM during a request: it completes (200), a new one gets 503 + Retry-After, the process exits 0."""
    proc, url = _start(exported.onnx, tmp_path, "shutdown_grace_s=20")
    try:
        wait_http_ready(url, process=proc, timeout=120)
        sent_head, outcome = threading.Event(), {}

        def slow_client() -> None:
            response = httpx.post(f"{url}/predict", content=_slow_upload(sprite, sent_head, 3.0), timeout=60,
                                  headers={"content-type": "multipart/form-data; boundary=b"})  # fmt: skip
            outcome.update(status=response.status_code, body=response.json(), at=time.monotonic())

        worker = threading.Thread(target=slow_client)
        worker.start()
        assert sent_head.wait(10)
        deadline = time.monotonic() + 10
        while "pokedex_inflight_requests 1.0" not in httpx.get(f"{url}/metrics").text:
            assert time.monotonic() < deadline, "the slow request never got in flight"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        refused = httpx.post(f"{url}/predict", files={"file": ("s.png", sprite)}, timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
        assert "shutting down" in refused.json()["detail"] and refused.headers["connection"] == "close"
        assert httpx.get(f"{url}/ready").status_code == 503
        worker.join(timeout=30)
        assert outcome["status"] == 200 and len(outcome["body"]["predictions"]) == 5, outcome
        assert outcome["at"] > signalled  # it really was answered after the signal
        output = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "draining 1 request(s) in flight" in output


# -- telemetry, drift, thumbnails and the unsure notice -------------------------------------------------------
def test_drift_route_metrics_and_embeddings(exported: Exported, trained: TrainedRun) -> None:
    sprites = [data for _, data in sprite_bytes(trained.zip_path, n=6)]
    with serving(exported.onnx, drift_window=4) as client:
        report = client.get("/drift").json()
        assert (report["verdict"], report["filled"], report["window_size"]) == ("filling", 0, 4)
        text = client.get("/metrics").text
        assert "pokedex_drift_window_fill 0.0" in text and "pokedex_low_confidence_reference_ratio" in text
        for data in sprites:
            assert post(client, data)[0] == 200
        report = client.get("/drift").json()
        assert report["filled"] == 4 and report["requests_seen"] == 6
        assert report["verdict"] == "uncalibrated"  # the export calibrated windows of 200, not 4: no false verdicts
        assert report["signals"]["embedding"]["score"] is not None  # the second ONNX output reaches the monitor
        text = client.get("/metrics").text
        assert (
            "pokedex_prediction_confidence_count 6.0" in text and 'pokedex_input_format_total{format="PNG"} 6.0' in text
        )
        assert 'pokedex_drift_score{signal="embedding"}' in text and "pokedex_drift_window_fill 1.0" in text
    with serving(exported.onnx, telemetry=False) as client:
        assert client.get("/drift").status_code == 404
        assert post(client, sprites[0])[0] == 200
        assert "pokedex_prediction_confidence" not in client.get("/metrics").text


def test_prediction_log_has_no_image_and_no_filename(exported: Exported, sprite: bytes, tmp_path: Path) -> None:
    path = tmp_path / "log" / "predictions.jsonl"
    with serving(exported.onnx, prediction_log=str(path)) as client:
        client.post("/predict", files={"file": ("secret-name.png", sprite)})
    (entry,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert (
        entry["format"] == "PNG"
        and entry["had_alpha"] is True
        and entry["model"] == exported.sidecar["onnx_sha256"][:12]
    )
    assert "secret-name" not in path.read_text() and len(path.read_text()) < 400


def test_thumbnails_route(exported: Exported) -> None:
    thumbs = json.loads(exported.onnx.with_suffix(".thumbs.json").read_text())["thumbnails"]
    with serving(exported.onnx) as client:
        response = client.get("/classes/2/thumbnail")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content == base64.b64decode(thumbs["2"])
        assert client.get("/classes/6/thumbnail").status_code == 404
        assert client.get("/classes/x/thumbnail").status_code == 422


@pytest.mark.parametrize(("threshold", "unsure"), [(0.0, False), (1.01, True)])
def test_low_confidence_notice(exported: Exported, sprite: bytes, threshold: float, unsure: bool) -> None:
    with serving(exported.onnx, low_confidence=threshold) as client:
        status, body = post(client, sprite)
        assert status == 200 and body["low_confidence"] is unsure
        assert (body["notice"] is not None) is unsure
        if unsure:
            assert "doesn't look like the sprites I was trained on" in body["notice"]
        batch = client.post("/predict/batch", files=[("files", ("a.png", sprite))]).json()
        assert batch["results"][0]["low_confidence"] is unsure
        assert np.isclose(metric(client, "pokedex_low_confidence_total") or 0.0, 2.0 if unsure else 0.0)
