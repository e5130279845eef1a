"""A real browser against a real server: Debian's Chromium (driven by Playwright) uploads a sprite on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pokedex.inference.loader import load_predictor
from pokedex.preprocess import bytes_to_array
from pokedex.serve import ServeSettings, create_app
from tests.helpers.serving import IMAGE_SIZE, Exported, TrainedRun, sprite_bytes, wait_http_ready

pytest_plugins = ["tests.serve_fixtures"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")


@contextlib.contextmanager
def browser_page() -> Iterator[tuple[Any, Any, list[str]]]:
    """(playwright's sync_api, a Chromium page, every URL the page requested so far)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            yield sync_api, page, requested
        finally:
            browser.close()


@contextlib.contextmanager
def running_server(exported: Exported, **settings: Any) -> Iterator[str]:
    """uvicorn on a free loopback port, in a thread; the URL once ``/ready`` answers 200."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(ServeSettings(model_path=str(exported.onnx), **settings))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_http_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def server_url(exported: Exported) -> Iterator[str]:
    """A server that calls every answer confident (low_confidence=0): the page draws probability bars."""
    with running_server(exported, low_confidence=0.0) as url:
        yield url


def test_upload_a_sprite_and_see_its_name(server_url: str, exported: Exported, trained: TrainedRun, tmp_path: Path):
    _, data = sprite_bytes(trained.zip_path)[0]
    sprite = tmp_path / "sprite.png"
    sprite.write_bytes(data)
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("definitely not a picture")
    predictor = load_predictor(exported.onnx)
    expected = predictor.top_k(predictor.predict_arrays(bytes_to_array(data, IMAGE_SIZE)[None])[0], 5)

    with browser_page() as (sync_api, page, requested):
        page.goto(server_url + "/")
        sync_api.expect(page.locator("#model")).to_contain_text("resnet18")

        page.set_input_files("#file", str(sprite))
        labels = page.locator("#predictions li .label")
        sync_api.expect(labels).to_have_count(5)
        assert labels.all_inner_texts() == [p["label"] for p in expected]
        sync_api.expect(page.locator("#preview")).to_be_visible()
        sync_api.expect(page.locator("#error")).to_be_hidden()
        sync_api.expect(page.locator("#notice")).to_be_hidden()
        sync_api.expect(page.locator("#predictions li .track").first).to_be_visible()  # confident: bars
        _expect_thumbnails(page, [p["index"] for p in expected])

        page.set_input_files("#file", str(not_an_image))  # errors are shown in words
        sync_api.expect(page.locator("#error")).to_contain_text("not a supported image format")
        sync_api.expect(labels).to_have_count(0)

        assert requested and all(url.startswith(server_url) or url.startswith("blob:") for url in requested)


def _expect_thumbnails(page: Any, indices: list[int]) -> None:
    """Every candidate shows its class's training sprite, really loaded (naturalWidth > 0), from this server."""
    thumbs = page.locator("#predictions li img.thumb")
    assert [t.get_attribute("src") for t in thumbs.all()] == [f"/classes/{i}/thumbnail" for i in indices]
    page.wait_for_function("[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)")


def test_unsure_answer_shows_a_notice_instead_of_bars(exported: Exported, trained: TrainedRun, tmp_path: Path):
    """A server whose every answer is below its low_confidence threshold: the page says so and draws no bars."""
    _, data = sprite_bytes(trained.zip_path)[0]
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(data)  # the page only forwards the bytes; the server decides what they are
    with running_server(exported, low_confidence=1.01) as url, browser_page() as (sync_api, page, _):
        page.goto(url + "/")
        sync_api.expect(page.locator("#model")).to_contain_text("resnet18")
        page.set_input_files("#file", str(photo))
        sync_api.expect(page.locator("#notice")).to_contain_text("doesn't look like the sprites I was trained on")
        sync_api.expect(page.locator("#predictions li .label")).to_have_count(5)  # still listed, as guesses
        sync_api.expect(page.locator("#predictions li .track").first).to_be_hidden()
        predictor = load_predictor(exported.onnx)
        expected = predictor.top_k(predictor.predict_arrays(bytes_to_array(data, IMAGE_SIZE)[None])[0], 5)
        _expect_thumbnails(page, [p["index"] for p in expected])
        assert "screenshot" in page.locator(".lead").inner_text()  # the page invites real pictures


def test_api_docs_render_offline(server_url: str) -> None:
    """``/docs`` draws every route in Chromium with nothing requested beyond this server (no CDN)."""
    with browser_page() as (sync_api, page, requested):
        page.goto(server_url + "/docs")
        operation = page.locator(".opblock-summary-path")
        sync_api.expect(operation.filter(has_text="/predict/batch")).to_have_count(1)
        assert operation.count() >= 6
        assert requested and all(url.startswith(server_url) or url.startswith("data:") for url in requested)
