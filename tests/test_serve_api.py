"""The HTTP service through FastAPI's TestClient: every route, every bad-input class, batching and metrics."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from pokedex.data.datasets import ZipImageDataset
from pokedex.inference.base import Predictor
from pokedex.inference.loader import load_predictor
from pokedex.inference.torch_backend import load_checkpoint
from pokedex.preprocess import PreprocessSpec, bytes_to_array
from pokedex.serve import ServeSettings, create_app
from pokedex.serve.batching import MicroBatcher, QueueFullError
from tests.helpers.images import encode, png_header_only
from tests.helpers.serving import IMAGE_SIZE, Exported, TrainedRun, free_port, serving, sprite_bytes, wait_http_ready

pytest_plugins = ["tests.serve_fixtures"]

MAX_UPLOAD_MB = 0.25


@pytest.fixture(scope="module")
def client(exported: Exported) -> Iterator[TestClient]:
    with serving(exported.onnx, max_upload_mb=MAX_UPLOAD_MB, max_files=4) as c:
        yield c


@pytest.fixture(scope="module")
def sprite(trained: TrainedRun) -> bytes:
    return sprite_bytes(trained.zip_path)[0][1]


def post(client: TestClient, data: bytes, *, name: str = "sprite.png", query: str = "") -> tuple[int, dict]:
    response = client.post(f"/predict{query}", files={"file": (name, data, "application/octet-stream")})
    return response.status_code, response.json()


def assert_still_serving(client: TestClient, sprite: bytes) -> None:
    status, body = post(client, sprite)
    assert status == 200, body
    assert len(body["predictions"]) == 5


# -- ops routes -----------------------------------------------------------------------------------------------
def test_health_ready_model(client: TestClient, exported: Exported) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": {"name": "resnet18", "sha256": exported.sidecar["onnx_sha256"]}}
    info = client.get("/model").json()
    assert info["backend"] == "onnx" and info["class_names"] == exported.sidecar["class_names"]
    assert info["num_classes"] == 6 and info["preprocess"]["image_size"] == IMAGE_SIZE
    assert info["limits"]["max_upload_mb"] == MAX_UPLOAD_MB and info["limits"]["top_k_max"] == 50
    assert info["file"] == "model.onnx"  # a file name, not the server's directory layout


def test_page_static_and_docs(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[0]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/..%2Fapp.py").status_code == 404  # no way out of the static folder
    for docs in (client.get("/docs"), client.get("/redoc")):  # no CDN: the JS/CSS are served from here
        assert docs.status_code == 200 and "/static-offline-docs/" in docs.text and "https://" not in docs.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert client.get(f"/static-offline-docs/{asset}").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/health", "/ready", "/model", "/metrics"} <= set(paths)


# -- predictions ----------------------------------------------------------------------------------------------
def test_predict_response_shape(client: TestClient, sprite: bytes, exported: Exported) -> None:
    status, body = post(client, sprite)
    assert status == 200
    assert set(body) == {"predictions", "low_confidence", "notice", "model", "elapsed_ms"}
    assert body["model"] == {"name": "resnet18", "sha256": exported.sidecar["onnx_sha256"]}
    assert isinstance(body["elapsed_ms"], float) and body["elapsed_ms"] >= 0
    preds = body["predictions"]
    assert len(preds) == 5 and all(set(p) == {"label", "index", "probability"} for p in preds)
    assert [p["probability"] for p in preds] == sorted((p["probability"] for p in preds), reverse=True)
    assert all(p["label"] == exported.sidecar["class_names"][p["index"]] for p in preds)
    assert len(post(client, sprite, query="?top_k=2")[1]["predictions"]) == 2
    assert len(post(client, sprite, query="?top_k=50")[1]["predictions"]) == 6  # clipped to the classes


@pytest.mark.parametrize("top_k", ["0", "-1", "51", "abc"])
def test_top_k_out_of_range(client: TestClient, sprite: bytes, top_k: str) -> None:
    status, body = post(client, sprite, query=f"?top_k={top_k}")
    assert status == 422
    assert body["detail"][0]["loc"] == ["query", "top_k"]
    assert body["detail"][0]["msg"]


def test_served_equals_predictor_and_model_on_stored_array(
    client: TestClient, exported: Exported, trained: TrainedRun
) -> None:
    """No train/serve skew: HTTP answer == Predictor on the same bytes == the trained model on the dataset's array."""
    predictor = load_predictor(exported.onnx)
    classifier, _ = load_checkpoint(trained.checkpoint)
    name, data = sprite_bytes(trained.zip_path, n=3)[2]
    stored, _ = ZipImageDataset(trained.zip_path, [(name, 0)], IMAGE_SIZE)[0]  # what training fed the model

    status, body = post(client, data, query="?top_k=6")
    assert status == 200
    served = np.zeros(6)
    for p in body["predictions"]:
        served[p["index"]] = p["probability"]
    direct = predictor.predict_arrays(bytes_to_array(data, IMAGE_SIZE)[None])[0]
    with torch.inference_mode():
        trained_probs = classifier(stored[None]).softmax(dim=1)[0].numpy()
    np.testing.assert_allclose(served, direct, atol=1e-6)
    np.testing.assert_allclose(served, trained_probs, atol=1e-4)
    assert body["predictions"][0]["index"] == int(trained_probs.argmax())


def _modes(sprite: bytes) -> list[tuple[str, str, bytes]]:
    rgba = Image.open(io.BytesIO(sprite)).convert("RGBA")
    grey16 = Image.fromarray(np.asarray(rgba.convert("L"), dtype=np.uint16) * 257)
    palette = rgba.convert("P")
    palette.info["transparency"] = 0
    frames = [rgba, rgba.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return [
        ("RGBA", "PNG", sprite),
        ("L", "PNG", encode(rgba.convert("L"), "PNG")),
        ("LA", "PNG", encode(rgba.convert("LA"), "PNG")),
        ("P", "PNG", encode(palette, "PNG", transparency=0)),
        ("I;16", "PNG", encode(grey16, "PNG")),
        ("RGB", "JPEG", encode(rgba.convert("RGB"), "JPEG", quality=95)),
        ("L", "JPEG", encode(rgba.convert("L"), "JPEG")),
        ("CMYK", "JPEG", encode(rgba.convert("RGB").convert("CMYK"), "JPEG")),
        ("P", "GIF", encode(rgba, "GIF")),
        ("P", "GIF-animated", animated.getvalue()),
        ("RGBA", "WEBP", encode(rgba, "WEBP", lossless=True)),
        ("RGB", "WEBP", encode(rgba.convert("RGB"), "WEBP", quality=90)),
        ("RGB", "BMP", encode(rgba.convert("RGB"), "BMP")),
        ("1", "BMP", encode(rgba.convert("1"), "BMP")),
    ]


def test_all_modes_and_formats(client: TestClient, sprite: bytes, exported: Exported) -> None:
    predictor = load_predictor(exported.onnx)
    for mode, fmt, data in _modes(sprite):
        assert Image.open(io.BytesIO(data)).mode == mode, (mode, fmt)
        status, body = post(client, data, name=f"x.{fmt.lower()}", query="?top_k=6")
        assert status == 200, (mode, fmt, body)
        expected = predictor.top_k(predictor.predict_arrays(bytes_to_array(data, IMAGE_SIZE)[None])[0], 6)
        assert [p["index"] for p in body["predictions"]] == [p["index"] for p in expected], (mode, fmt)
        got = [p["probability"] for p in body["predictions"]]
        np.testing.assert_allclose(got, [p["probability"] for p in expected], atol=1e-6)


# -- bad input: status + message, and the server keeps serving -------------------------------------------------
def _bad_inputs(sprite: bytes) -> list[tuple[str, bytes, int, str]]:
    """(what, bytes, expected status, regex the message must match)."""
    tiff = encode(Image.new("RGB", (8, 8)), "TIFF")
    unsupported = r"file: not a supported image format \(send PNG, JPEG, GIF, WebP or BMP\)"
    return [
        ("empty", b"", 400, r"file: empty file"),
        ("truncated png", sprite[: len(sprite) // 2], 400, r"file: truncated or corrupt image data"),
        ("png header only", sprite[:60], 400, r"file: truncated or corrupt image data"),
        ("text", b"hello, I am not an image\n" * 10, 415, unsupported),
        ("json", b'{"image": "nope"}', 415, unsupported),
        ("tiff (unsupported)", tiff, 415, unsupported),
        ("pdf (unsupported)", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", 415, unsupported),
        ("bmp magic, garbage", b"BM" + b"\x00" * 64, 415, r"file: starts like BMP but is not a valid BMP image"),
        ("bomb 5000x5000", png_header_only(5000, 5000), 413, r"file: 5000x5000 .*exceeds the limit of 16777216"),
        ("bomb 100000x100000", png_header_only(100_000, 100_000), 413, r"file: .*exceed.*limit"),
    ]


def test_bad_inputs(client: TestClient, sprite: bytes) -> None:
    for label, data, status, pattern in _bad_inputs(sprite):
        got_status, body = post(client, data, name="../../etc/passwd")
        assert got_status == status, (label, body)
        assert re.match(pattern, body["detail"]), (label, body)
        assert "passwd" not in body["detail"]  # the client's filename is never used
        assert_still_serving(client, sprite)


def test_missing_file_field(client: TestClient) -> None:
    response = client.post("/predict", data={"other": "x"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_oversize_upload_rejected_from_content_length(client: TestClient, sprite: bytes) -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * int(MAX_UPLOAD_MB * 2**20)
    status, body = post(client, big)
    assert status == 413
    assert body["detail"].startswith("upload: ") and "exceeds the limit of 0.25 MB" in body["detail"]
    assert_still_serving(client, sprite)


def test_oversize_upload_rejected_while_streaming(client: TestClient, sprite: bytes) -> None:
    """No Content-Length (chunked): 413 once the body crosses the limit, without reading the rest of it.

    Driven at the ASGI level, because TestClient buffers a request body before the app sees it.
    """
    chunk, total_chunks = b"x" * 16384, 200  # 3.2 MB, far over the 0.25 MB limit
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    received, sent = 0, []

    async def receive() -> dict:
        nonlocal received
        received += 1
        body = head if received == 1 else chunk
        return {"type": "http.request", "body": body, "more_body": received <= total_chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"multipart/form-data; boundary=b")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert b"exceeds the limit of 0.25 MB" in b"".join(m.get("body", b"") for m in sent[1:])
    assert received <= MAX_UPLOAD_MB * 2**20 / len(chunk) + 2  # stopped right after crossing the limit

    # and the same through a real client with a chunked body
    response = client.post(
        "/predict", content=iter([head, *[chunk] * 40]), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413 and "exceeds the limit of 0.25 MB" in response.json()["detail"]
    assert_still_serving(client, sprite)


def test_filename_never_touches_the_filesystem(client: TestClient, sprite: bytes, tmp_path: Path) -> None:
    target = tmp_path / "pwned.png"
    for name in (str(target), f"../../../../{target}", "/etc/cron.d/x"):
        status, _ = post(client, sprite, name=name)
        assert status == 200
    assert not target.exists()


# -- batch ----------------------------------------------------------------------------------------------------
def test_batch_keeps_order(client: TestClient, trained: TrainedRun) -> None:
    sprites = [data for _, data in sprite_bytes(trained.zip_path, split="test", n=12)][::3]  # 4 distinct images
    singles = [post(client, data, query="?top_k=6")[1]["predictions"] for data in sprites]
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(sprites)]
    response = client.post("/predict/batch?top_k=6", files=files)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "model", "elapsed_ms"}
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    for single, result in zip(singles, body["results"], strict=True):
        assert [p["index"] for p in result["predictions"]] == [p["index"] for p in single]
        np.testing.assert_allclose(
            [p["probability"] for p in result["predictions"]], [p["probability"] for p in single], atol=1e-5
        )
    reversed_body = client.post("/predict/batch?top_k=6", files=files[::-1]).json()
    assert [r["predictions"] for r in reversed_body["results"]][::-1] == [r["predictions"] for r in body["results"]]


def test_batch_bad_inputs(client: TestClient, sprite: bytes) -> None:
    files = [("files", ("a.png", sprite)), ("files", ("b.txt", b"plain text")), ("files", ("c.png", b""))]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 415
    assert response.json()["detail"].startswith("files[1]: not a supported image format")

    too_many = [("files", (f"{i}.png", sprite)) for i in range(5)]
    response = client.post("/predict/batch", files=too_many)
    assert response.status_code == 413
    assert response.json()["detail"] == "files: 5 files exceeds the limit of 4 per request"

    response = client.post("/predict/batch?top_k=0", files=files[:1])
    assert response.status_code == 422
    assert_still_serving(client, sprite)


# -- metrics --------------------------------------------------------------------------------------------------
def test_metrics(client: TestClient, sprite: bytes) -> None:
    post(client, sprite)
    post(client, b"")
    text = client.get("/metrics").text
    assert 'pokedex_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'pokedex_http_requests_total{method="POST",route="/predict",status="400"}' in text
    assert 'pokedex_rejected_uploads_total{status="400"}' in text
    assert "pokedex_http_request_duration_seconds_bucket" in text
    assert "pokedex_batch_size_bucket" in text and "pokedex_inference_duration_seconds_count" in text
    assert "pokedex_model_ready 1.0" in text
    client.get("/no/such/page")
    client.get("/redoc")
    text = client.get("/metrics").text
    assert 'route="unmatched",status="404"' in text  # a client's URL never becomes a label
    assert 'route="/redoc"' in text  # labels come from the matched route, not a hand-kept list


# -- other backends and lifecycles ----------------------------------------------------------------------------
def test_torch_backend(trained: TrainedRun, exported: Exported, sprite: bytes) -> None:
    with serving(trained.checkpoint) as client:
        info = client.get("/model").json()
        assert info["backend"] == "torch" and info["sha256"] == exported.sidecar["source_checkpoint_sha256"]
        status, body = post(client, sprite, query="?top_k=6")
        assert status == 200
    onnx_predictor = load_predictor(exported.onnx)
    expected = onnx_predictor.predict_arrays(bytes_to_array(sprite, IMAGE_SIZE)[None])[0]
    for p in body["predictions"]:
        assert abs(p["probability"] - expected[p["index"]]) < 1e-4


class SlowPredictor(Predictor):
    """Stands in for a model: sleeps, then answers; ``gate`` can hold its loading."""

    backend = "fake"

    def __init__(self, delay: float = 0.0) -> None:
        spec = PreprocessSpec(image_size=IMAGE_SIZE)
        super().__init__(name="slow", class_names=["a", "b"], spec=spec, sha256="0" * 64, path=Path("slow.onnx"))
        self.delay = delay
        self.batch_sizes: list[int] = []

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(batch))
        time.sleep(self.delay)
        return np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (len(batch), 1))


def test_ready_is_503_until_loaded(monkeypatch: pytest.MonkeyPatch, sprite: bytes) -> None:
    gate = threading.Event()

    def slow_load(path: str, threads: int | None = None) -> Predictor:
        assert gate.wait(10)
        return SlowPredictor()

    monkeypatch.setattr("pokedex.serve.service.load_predictor", slow_load)
    with TestClient(create_app(ServeSettings(model_path="whatever.onnx"))) as client:
        assert client.get("/health").status_code == 200
        response = client.get("/ready")
        assert response.status_code == 503 and "loading" in response.json()["detail"]
        status, body = post(client, sprite)
        assert status == 503 and "loading" in body["detail"]
        assert client.get("/model").status_code == 503
        gate.set()
        for _ in range(200):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.01)
        assert client.get("/ready").json()["model"]["name"] == "slow"
        assert post(client, sprite)[1]["predictions"][0] == {"label": "b", "index": 1, "probability": 0.75}


def test_model_that_fails_to_load(tmp_path: Path) -> None:
    with TestClient(create_app(ServeSettings(model_path=str(tmp_path / "missing.onnx")))) as client:
        for _ in range(200):
            detail = client.get("/ready").json()["detail"]
            if "failed" in detail:
                break
            time.sleep(0.01)
        assert client.get("/ready").status_code == 503
        assert detail.startswith("model failed to load:") and "not found" in detail
        health = client.get("/health")  # liveness tells the truth too (the CLI exits 1: test_serve_ops.py)
        assert health.status_code == 503 and health.json()["status"] == "failed" and "not found" in health.text


def test_slow_inference_does_not_block_the_event_loop(monkeypatch: pytest.MonkeyPatch, sprite: bytes) -> None:
    fake = SlowPredictor(delay=1.0)
    monkeypatch.setattr("pokedex.serve.service.load_predictor", lambda path, threads=None: fake)
    with TestClient(create_app(ServeSettings(model_path="slow.onnx", warmup=False))) as client:
        for _ in range(200):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.01)
        worker = threading.Thread(target=post, args=(client, sprite))
        worker.start()
        while not fake.batch_sizes:  # wait until the 1 s inference is running
            time.sleep(0.005)
        start = time.perf_counter()
        assert client.get("/health").status_code == 200
        assert time.perf_counter() - start < 0.5
        worker.join()


# -- the micro-batcher on its own -----------------------------------------------------------------------------
def _submit_all(predict: Any, count: int, **options: Any) -> list[Any]:
    """Submit ``count`` tiny arrays (the i-th filled with i) at once to a started ``MicroBatcher``; their rows."""
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> list[Any]:
        with ThreadPoolExecutor(options.get("workers", 1)) as pool:
            batcher = MicroBatcher(predict, pool, **options)
            batcher.start()
            try:
                arrays = [np.full((1, 2, 2), i, dtype=np.uint8) for i in range(count)]
                return await asyncio.gather(*(batcher.submit(a) for a in arrays))
            finally:
                await batcher.stop()

    return asyncio.run(main())


def test_micro_batcher_gathers_and_keeps_rows() -> None:
    seen: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        time.sleep(0.02)
        return batch.reshape(len(batch), -1)[:, :1].astype(np.float32) * 2

    results = _submit_all(predict, 20, max_batch_size=8, max_wait_ms=20, max_queue=100)
    assert [int(r[0]) for r in results] == [2 * i for i in range(20)]
    assert max(seen) == 8 and sum(seen) == 20 and len(seen) < 20


def test_micro_batcher_workers_run_batches_at_once() -> None:
    """``workers=2``: while one batch is in the model, the next forms and runs on the second thread."""
    running, peak, lock = 0, 0, threading.Lock()

    def predict(batch: np.ndarray) -> np.ndarray:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return batch.reshape(len(batch), -1)[:, :1].astype(np.float32)

    results = _submit_all(predict, 8, max_batch_size=2, max_wait_ms=1, workers=2)
    assert [int(r[0]) for r in results] == list(range(8))
    assert peak == 2
    peak = 0
    _submit_all(predict, 8, max_batch_size=2, max_wait_ms=1, workers=1)
    assert peak == 1
    with pytest.raises(ValueError, match="workers must be >= 1"):
        MicroBatcher(predict, None, workers=0)  # type: ignore[arg-type]


def test_micro_batcher_errors_and_backpressure() -> None:
    from concurrent.futures import ThreadPoolExecutor

    calls = 0

    def flaky(batch: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model exploded")
        return np.ones((len(batch), 1), dtype=np.float32)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(flaky, pool, max_batch_size=4, max_wait_ms=1)
            full = MicroBatcher(flaky, pool, max_queue=0)
            batcher.start()
            full.start()
            try:
                with pytest.raises(RuntimeError, match="model exploded"):
                    await batcher.submit(np.zeros(1, dtype=np.uint8))
                assert (await batcher.submit(np.zeros(1, dtype=np.uint8)))[0] == 1.0  # it keeps going
                with pytest.raises(QueueFullError, match="server busy"):
                    await full.submit(np.zeros(1, dtype=np.uint8))
            finally:
                await batcher.stop()
                await full.stop()

    asyncio.run(main())


# -- the entry point ------------------------------------------------------------------------------------------
def test_entry_point_refuses_missing_model(tmp_path: Path) -> None:
    from pokedex.serve.__main__ import main as serve_main
    from tests.helpers.hydra import compose_config

    cfg = compose_config("serve", [f"model_path={tmp_path / 'nope.onnx'}"], tmp_path / "run")
    with pytest.raises(SystemExit, match=r"model_path=.*nope.onnx not found"):
        serve_main(cfg)


def test_entry_point_serves(exported: Exported, sprite: bytes, tmp_path: Path) -> None:
    """``python -m pokedex.serve model_path=... port=...`` as a user runs it, on a free loopback port."""
    import subprocess
    import sys

    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "pokedex.serve", f"model_path={exported.onnx}", f"port={port}",
           f"hydra.run.dir={tmp_path}", "access_log=false"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(url, process=proc)
        response = httpx.post(f"{url}/predict", files={"file": ("s.png", sprite, "image/png")}, timeout=10)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 5
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output  # SIGTERM drains and exits 0 (not killed by the re-raised signal)
