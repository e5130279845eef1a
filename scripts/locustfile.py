"""Load test for the HTTP service with Locust (not a project dependency: ``pip install locust``).

    python -m pokedex.serve model_path=models/model.onnx &
    locust -f scripts/locustfile.py --host http://127.0.0.1:8000 --headless -u 16 -r 4 -t 60s

Set ``POKEDEX_SPRITE=/path/to/sprite.png`` to upload a real sprite; otherwise a small generated one is sent.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from locust import HttpUser, between, task  # type: ignore[import-not-found]


def _sprite() -> bytes:
    path = os.environ.get("POKEDEX_SPRITE")
    if path:
        return Path(path).read_bytes()
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((20, 20, 76, 76), fill=(240, 200, 40, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


SPRITE = _sprite()


class PokedexUser(HttpUser):
    """Posts a sprite to /predict, with an occasional batch request and readiness probe."""

    wait_time = between(0.0, 0.1)

    @task(20)
    def predict(self) -> None:
        with self.client.post(
            "/predict?top_k=5", files={"file": ("sprite.png", SPRITE, "image/png")}, catch_response=True
        ) as response:
            if response.status_code != 200 or not response.json().get("predictions"):
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(2)
    def predict_batch(self) -> None:
        files = [("files", (f"{i}.png", SPRITE, "image/png")) for i in range(4)]
        self.client.post("/predict/batch", files=files, name="/predict/batch")

    @task(1)
    def ready(self) -> None:
        self.client.get("/ready")
