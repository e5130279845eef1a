"""A small learned segmentation for a sprite on a photo: where the edge rules of ``pokedex.background`` see only
steps in colour, this network has seen sprites.

Why: a photo saved as JPEG smears the sprite's outline into the background (4:2:0 colour subsampling), and every
edge rule trades background kept for sprite lost (docs/robustness.md, "Where the suite still loses"). ``refine``
reads the picture and the rules' silhouette and returns a better one. The network (33k weights) has two
scales: 3×3 convolutions at full resolution for the outline, dilated ones at half resolution for the context (it
sees about 70 px, most of a sprite: enough to tell a limb from a patch of photo). It is trained by
``scripts/train_segmenter.py`` on train-split sprites only, shipped in the package as ONNX and run by ONNX
Runtime on one thread: deterministic, and no torch (the serving image has none). The weights are part of the
preprocessing: new ones change ``image_to_array``'s output, so they need a new ``SEGMENTER_SHA256`` and a
``PREPROCESS_VERSION`` bump (the file is checked against the digest when loaded).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from importlib.resources import files
from typing import TYPE_CHECKING

import numpy as np

from pokedex.onnx_session import onnx_session

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

SEGMENTER_FILE = "assets/segmenter.onnx"  # inside the pokedex package
SEGMENTER_SHA256 = "d89f50205177ce3ce991820a6c56925224a0063c7292b697c331e2d92d26dc7d"
INPUT_NAME, OUTPUT_NAME = "picture", "logits"  # (1, 4, H, W) float32 → (1, H, W) float32

_sessions: dict[int, InferenceSession] = {}  # per process: a forked DataLoader worker builds its own


def _session() -> InferenceSession:
    """The network, loaded once per process (onnxruntime is imported then: only photos need it)."""
    session = _sessions.get(os.getpid())
    if session is None:
        resource = files("pokedex").joinpath(SEGMENTER_FILE)
        try:
            model = resource.read_bytes()
        except OSError as exc:
            raise RuntimeError(
                f"the segmentation network pokedex/{SEGMENTER_FILE} is missing from this installation ({exc}); "
                "reinstall the package (it ships as package data)"
            ) from exc
        digest = hashlib.sha256(model).hexdigest()
        if digest != SEGMENTER_SHA256:
            raise RuntimeError(
                f"pokedex/{SEGMENTER_FILE} has sha256 {digest}, not the {SEGMENTER_SHA256} this preprocessing "
                "version was made with: reinstall the package, or, for weights retrained by "
                "scripts/train_segmenter.py, set SEGMENTER_SHA256 and bump PREPROCESS_VERSION"
            )
        session = onnx_session(model, threads=1)  # one thread: deterministic, and no thread pool to fork
        _sessions.clear()
        _sessions[os.getpid()] = session
    return session


def network_input(planes: Sequence[np.ndarray], found: np.ndarray) -> np.ndarray:
    """The network's (4, H, W) float32 input for a picture's R, G, B ``planes`` (uint8) and the rules' silhouette
    ``found`` (bool), each centred on 0. ``scripts/train_segmenter.py`` builds its batches with it too, so the
    network sees in use exactly the numbers it was trained on."""
    height, width = found.shape
    x = np.empty((4, height, width), np.float32)
    for channel, plane in zip(x[:3], planes, strict=True):
        np.subtract(plane / np.float32(255), np.float32(0.5), out=channel)
    np.subtract(found, np.float32(0.5), out=x[3], dtype=np.float32)
    return x


def refine(planes: Sequence[np.ndarray], found: np.ndarray) -> np.ndarray:
    """The sprite's silhouette (bool, True = content) in a picture's R, G, B ``planes`` (uint8, one resolution)
    given the rules' silhouette ``found`` there: the network's logit above 0."""
    (logits,) = _session().run([OUTPUT_NAME], {INPUT_NAME: network_input(planes, found)[None]})
    return logits[0] > 0
