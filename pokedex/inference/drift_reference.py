"""Export-time companions of an ONNX model: its drift reference and its class thumbnails.

Both come from the checkpoint's own dataset zip and from the exported graph itself (ONNX Runtime, the same
runtime and the same preprocessing pass as the service), so what the service compares against is what this
very file answers on data it never trained on:

* the **drift reference** summarises the model's predictions on the *val* split (``build_reference``) and is
  calibrated on the *test* split (``calibrate``): thresholds that the ordinary split-to-split difference does
  not cross, at a false-alarm rate ``alpha`` per full window. The embedding signal reads the graph's second
  output (pre-logits features) when there is one;
* the **thumbnails** are one small PNG per class from the *train* split, so the web page can show what each
  candidate looks like and a person can confirm an answer at a glance. They go into a sibling file
  (``model.thumbs.json``), not the sidecar: every loader reads the sidecar, only the page needs pictures.
"""

from __future__ import annotations

import base64
import io
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pokedex.data.archive import read_index
from pokedex.drift.calibration import calibrate
from pokedex.drift.records import PredictionRecord, decode_with_facts
from pokedex.drift.reference import build_reference
from pokedex.inference.onnx_backend import has_embeddings, run_onnx, run_onnx_embeddings
from pokedex.io import write_json_atomic
from pokedex.preprocess import bytes_to_array

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 64  # px; ~1-3 kB of PNG per sprite, ~1.5 MB of JSON for 649 classes
THUMBS_FORMAT = 1


def thumbs_path(onnx_path: str | Path) -> Path:
    """``models/model.onnx`` → ``models/model.thumbs.json``."""
    return Path(onnx_path).with_suffix(".thumbs.json")


def split_predictions(
    session: Any, zip_path: str | Path, split: str, image_size: int, *, batch_size: int = 64
) -> tuple[list[PredictionRecord], np.ndarray | None]:
    """(records, embeddings or None) of every image of one split, exactly as the service would record them."""
    members = read_index(zip_path).split(split)
    if not members:
        raise ValueError(f"{zip_path}: the {split!r} split is empty; a drift reference needs it")
    with_embeddings = has_embeddings(session)
    records: list[PredictionRecord] = []
    embeddings: list[np.ndarray] = []
    with zipfile.ZipFile(zip_path) as zf:
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            decoded = [decode_with_facts(zf.read(m.path), image_size, name=m.path) for m in chunk]
            batch = np.stack([array for array, _ in decoded])
            if with_embeddings:
                probs, emb = run_onnx_embeddings(session, batch)
                embeddings.append(emb)
            else:
                probs = run_onnx(session, batch)
            records += [PredictionRecord.from_probs(p, facts) for p, (_, facts) in zip(probs, decoded, strict=True)]
    return records, (np.concatenate(embeddings) if with_embeddings else None)


def drift_reference(
    session: Any,
    zip_path: str | Path,
    class_names: Sequence[str],
    image_size: int,
    *,
    window_sizes: Sequence[int] = (200,),
    alpha: float = 0.01,
    n_windows: int = 2000,
) -> dict[str, Any]:
    """The calibrated drift reference of the model behind ``session`` (val split → reference, test → thresholds)."""
    val, val_embeddings = split_predictions(session, zip_path, "val", image_size)
    test, test_embeddings = split_predictions(session, zip_path, "test", image_size)
    reference = build_reference(val, val_embeddings, list(class_names))
    calibrated = calibrate(
        reference, test, test_embeddings, window_sizes=tuple(window_sizes), alpha=alpha, n_windows=n_windows
    )
    rates = calibrated["calibration"]["in_sample_false_alarm_rate"]
    log.info("drift reference: %d val / %d test images, signals %s, false-alarm rate per window %s",
             len(val), len(test), sorted(calibrated["signals"]), rates)  # fmt: skip
    return calibrated


def _thumbnail_png(array: np.ndarray, size: int) -> bytes:
    image = Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), mode="RGBA")
    if max(image.size) > size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_thumbnails(
    path: str | Path, zip_path: str | Path, class_names: Sequence[str], image_size: int, size: int = THUMBNAIL_SIZE
) -> dict[str, Any]:
    """One canonicalised train image per class (its first in the index) as a base64 PNG, written atomically."""
    first: dict[int, str] = {}
    for member in read_index(zip_path).split("train"):
        first.setdefault(member.label, member.path)
    thumbnails = {}
    with zipfile.ZipFile(zip_path) as zf:
        for label, member in sorted(first.items()):
            array = bytes_to_array(zf.read(member), image_size, name=member)
            thumbnails[str(label)] = base64.b64encode(_thumbnail_png(array, size)).decode("ascii")
    content = {"format": THUMBS_FORMAT, "size": size, "class_names": list(class_names), "thumbnails": thumbnails}
    write_json_atomic(path, content)
    log.info("wrote %s (%d of %d classes)", path, len(thumbnails), len(class_names))
    return {"file": Path(path).name, "classes": len(thumbnails), "size": size}
