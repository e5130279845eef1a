"""Training images re-uploaded the way people upload them, then preprocessed by the one preprocessing function.

A sprite flattened onto white or black and saved as a JPEG does not reach the model as the stored sprite: the
preprocessing estimates the background from the border and turns it into transparency, which on black can also
eat the sprite's dark outline, and JPEG leaves ringing at every edge; a thumbnail blown back up has soft edges
and lost detail. Imitating that on the GPU would only approximate the real path; here a share of the training
images takes the real one (``pokedex.preprocess``), in the DataLoader workers, so the model learns exactly what
serving will give it. Hue is untouched.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pokedex.data.datasets import PerProcessHandle
from pokedex.preprocess import image_to_array
from pokedex.reencode import NAMED_COLOURS, encode, flatten, on_photo, solid_colour, thumbnail

BACKGROUNDS = (*NAMED_COLOURS, "random", "photo")  # the colours solid_colour knows, and an out-of-focus photo


@dataclass
class Reupload:
    """With probability ``p``: either (``thumbnail_p`` of them) shrink the canonical RGBA image by a factor drawn
    from ``thumbnail_scale`` and blow it back up, or flatten it onto a background (``backgrounds``: weights of
    white, black, a uniformly random colour and an out-of-focus photo ``photo_canvas`` times the sprite's size)
    and JPEG-compress it with probability ``jpeg_p`` at a quality drawn from ``jpeg_quality``; then preprocess
    the result as an upload."""

    p: float = 0.0
    backgrounds: Mapping[str, float] = field(default_factory=lambda: {"white": 0.4, "black": 0.3, "random": 0.3})
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)
    thumbnail_p: float = 0.0
    thumbnail_scale: tuple[float, float] = (0.35, 0.7)  # of the canonical size: the suite's 1/3 of a ~100 px sprite
    photo_canvas: tuple[float, float] = (1.25, 2.0)  # the suite's busy_photo: a ~60-90 px sprite on 128 px

    def __post_init__(self) -> None:
        weights = dict(self.backgrounds)
        if set(weights) - set(BACKGROUNDS) or not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(f"data.reupload.backgrounds: non-negative weights of {BACKGROUNDS}, got {weights}")
        low, high = self.jpeg_quality
        if not 1 <= low <= high <= 95:
            raise ValueError(f"data.reupload.jpeg_quality: [low, high] within 1..95, got {list(self.jpeg_quality)}")
        low, high = self.thumbnail_scale
        if not 0 < low <= high <= 1 or not 0 <= self.thumbnail_p <= 1:
            raise ValueError(
                "data.reupload.thumbnail_p within 0..1 and thumbnail_scale [low, high] within (0, 1], got "
                f"{self.thumbnail_p} and {list(self.thumbnail_scale)}"
            )
        low, high = self.photo_canvas
        if not 1 <= low <= high:
            raise ValueError(f"data.reupload.photo_canvas: [low, high] with 1 <= low <= high, got {[low, high]}")
        self._names = list(weights)
        self._weights = np.array(list(weights.values()), dtype=np.float64) / sum(weights.values())

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(4, S, S) uint8 canonical RGBA → the same sprite as the preprocessing sees its re-upload."""
        sprite = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), mode="RGBA")
        if self.thumbnail_p and rng.random() < self.thumbnail_p:
            return image_to_array(thumbnail(sprite, float(rng.uniform(*self.thumbnail_scale))), image.shape[-1])
        background = self._names[int(rng.choice(len(self._names), p=self._weights))]
        if background == "photo":
            upload = on_photo(sprite, float(rng.uniform(*self.photo_canvas)), rng)
        else:
            upload = flatten(sprite, solid_colour(background, rng))
        if rng.random() < self.jpeg_p:
            quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            upload = Image.open(io.BytesIO(encode(upload, "JPEG", quality)))
        return image_to_array(upload, image.shape[-1])

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> None:
        """Re-upload a ``p`` share of a (N, 4, S, S) uint8 batch, in place."""
        for i in np.nonzero(rng.random(len(images)) < self.p)[0]:
            images[i] = self(images[i], rng)


def _worker_rng() -> np.random.Generator:
    """Each DataLoader worker draws from its own stream: torch seeds workers differently (base seed + worker id),
    and ``seed_everything(workers=True)`` makes those seeds reproducible."""
    return np.random.default_rng(torch.initial_seed())


class ReuploadDataset(Dataset):
    """A training dataset whose images are re-uploaded (``Reupload``) with probability ``reupload.p``."""

    def __init__(self, dataset: Dataset, reupload: Reupload) -> None:
        self.dataset, self.reupload = dataset, reupload
        self.collate_fn = getattr(dataset, "collate_fn", None)  # batches come out as the wrapped dataset's do
        self._rng = PerProcessHandle(_worker_rng)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        image, label = self.dataset[i]
        self.reupload.apply(image.numpy()[None], self._rng.get())
        return image, label

    def __getitems__(self, indices: Sequence[int]) -> Any:
        """Whole batches from a dataset that reads them at once (the decoded cache); single items otherwise."""
        if not hasattr(self.dataset, "__getitems__"):
            return [self[i] for i in indices]
        images, labels = self.dataset.__getitems__(indices)
        self.reupload.apply(images.numpy(), self._rng.get())
        return images, labels
