"""A tiny generated dataset in the real zip format, so tests and smoke runs need no network.

Each class is a coloured shape on a transparent canvas; each "animation" is one shape instance drawn in a few
jittered frames, and splits are assigned per animation exactly like the sprite data.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from pokedex.data.archive import DatasetIndex, Sample, write_dataset_zip

_SHAPES = ("ellipse", "rectangle", "triangle", "diamond")
_COLOURS = ((220, 40, 40), (40, 170, 60), (50, 90, 220), (240, 200, 40), (160, 60, 200), (30, 200, 200))


@dataclass
class SyntheticSource:
    num_classes: int = 4
    animations_per_class: int = 4
    frames_per_animation: int = 3
    image_size: int = 32
    seed: int = 0

    def fingerprint(self) -> dict[str, Any]:
        return {"source": "synthetic", "version": 1, **self.__dict__}

    @property
    def classes(self) -> list[str]:
        return [f"Shape{i:02d}" for i in range(self.num_classes)]

    def _draw(self, label: int, rng: random.Random) -> bytes:
        size = self.image_size
        image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        draw = ImageDraw.Draw(image)
        colour = _COLOURS[label % len(_COLOURS)]
        shape = _SHAPES[(label // len(_COLOURS)) % len(_SHAPES)]
        half = size * rng.uniform(0.22, 0.32)
        cx, cy = size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)
        box = (cx - half, cy - half, cx + half, cy + half)
        fill = (*[min(255, max(0, c + rng.randint(-20, 20))) for c in colour], 255)
        if shape == "ellipse":
            draw.ellipse(box, fill=fill)
        elif shape == "rectangle":
            draw.rectangle(box, fill=fill)
        elif shape == "triangle":
            draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
        else:
            draw.polygon([(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)], fill=fill)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    def _samples(self) -> Iterator[Sample]:
        rng = random.Random(self.seed)
        for label, name in enumerate(self.classes):
            for anim in range(self.animations_per_class):
                # the last animation of each class is test, the one before it val, the rest train
                split = {self.animations_per_class - 1: "test", self.animations_per_class - 2: "val"}.get(anim, "train")
                for frame in range(self.frames_per_animation):
                    yield Sample(name, split, f"anim{anim}-f{frame}.png", f"{name}/anim{anim}", self._draw(label, rng))

    def build(self, out_path: Path) -> DatasetIndex:
        if self.animations_per_class < 3:
            raise ValueError("data.source.animations_per_class must be >= 3 (one each for train, val and test)")
        meta = {"built_by": "pokedex", "fingerprint": self.fingerprint(), "image_size": self.image_size}
        index = write_dataset_zip(out_path, self.classes, self._samples(), meta)
        return index


def make_synthetic_zip(out_path: str | Path, **kwargs: Any) -> DatasetIndex:
    """Convenience for tests and scripts."""
    return SyntheticSource(**kwargs).build(Path(out_path))
