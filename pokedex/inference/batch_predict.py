"""Batch prediction over a folder, a zip or a list of files, with any model file the loader accepts.

Every image goes through the one preprocessing function, so results equal the HTTP service's. A file that
cannot be read or decoded becomes a row with its error instead of stopping the run.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pokedex.data.sources.user_zip import IMAGE_EXTENSIONS, MAX_MEMBER_BYTES, is_system_file
from pokedex.inference.base import Predictor
from pokedex.io import write_text_atomic
from pokedex.preprocess import DEFAULT_MAX_PIXELS, ImageError, bytes_to_array


@dataclass(frozen=True)
class Item:
    """One input image: how it is named in the output, and how to get its bytes."""

    path: str
    read: Callable[[], bytes]


@dataclass
class Result:
    path: str
    predictions: list[dict[str, Any]]
    error: str | None = None


def _is_image(name: str) -> bool:
    """The same files a user's dataset zip counts as images (``data.sources.user_zip``)."""
    return not is_system_file(name.split("/")) and name.lower().endswith(IMAGE_EXTENSIONS)


def _check_size(name: str, size: int) -> None:
    """Larger files are reported as errors, never read into memory (the dataset zip's limit)."""
    if size > MAX_MEMBER_BYTES:
        raise ImageError(f"{name}: larger than {MAX_MEMBER_BYTES >> 20} MB")


def _read_file(path: Path) -> bytes:
    _check_size(str(path), path.stat().st_size)
    return path.read_bytes()


def _zip_items(path: Path, pattern: str) -> Iterator[Item]:
    """Image members of one zip; they share one open ``ZipFile`` (re-reading the directory per member is slow)."""
    zf = zipfile.ZipFile(path)
    infos = [i for i in zf.infolist() if not i.is_dir() and _is_image(i.filename)]
    for info in sorted(infos, key=lambda i: i.filename):
        if fnmatch.fnmatch(info.filename, pattern):

            def read(info: zipfile.ZipInfo = info) -> bytes:
                _check_size(info.filename, info.file_size)
                return zf.read(info)

            yield Item(f"{path}:{info.filename}", read)


def collect_items(inputs: Sequence[str | Path], pattern: str = "*") -> list[Item]:
    """Folders (recursive), zips (their image members) and single files, in a stable order.

    ``pattern`` (fnmatch) filters folder entries and zip members by their relative name, e.g. ``test/*``.
    A missing input is an error up front: a typo should not produce an empty CSV.
    """
    items: list[Item] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            files = sorted(p for p in entry.rglob("*") if p.is_file() and _is_image(p.relative_to(entry).as_posix()))
            items += [Item(str(p), (lambda p=p: _read_file(p))) for p in files
                      if fnmatch.fnmatch(p.relative_to(entry).as_posix(), pattern)]  # fmt: skip
        elif entry.is_file() and zipfile.is_zipfile(entry) and entry.suffix.lower() == ".zip":
            items += list(_zip_items(entry, pattern))
        elif entry.is_file():
            items.append(Item(str(entry), lambda p=entry: _read_file(p)))
        else:
            raise FileNotFoundError(f"{entry}: no such file or folder (inputs= takes folders, zips and images)")
    return items


def _decode(item: Item, image_size: int, max_pixels: int) -> np.ndarray | str:
    """The canonical array, or the error text for the output row."""
    try:
        return bytes_to_array(item.read(), image_size, max_pixels=max_pixels, name=item.path)
    except (ImageError, OSError, zipfile.BadZipFile) as exc:
        return str(exc)


def predict_items(
    predictor: Predictor, items: Sequence[Item], *, top_k: int = 5, batch_size: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True,
) -> list[Result]:  # fmt: skip
    """Top-k per item, in input order; unreadable items get an ``error`` and no predictions."""
    size = predictor.spec.image_size
    results: list[Result] = []
    with tqdm(total=len(items), desc="predict", unit="img", disable=not progress, mininterval=1) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            decoded = [_decode(item, size, max_pixels) for item in chunk]
            good = [d for d in decoded if isinstance(d, np.ndarray)]
            probs = iter(predictor.predict_arrays(np.stack(good)) if good else [])
            for item, outcome in zip(chunk, decoded, strict=True):
                if isinstance(outcome, str):
                    results.append(Result(item.path, [], outcome))
                else:
                    results.append(Result(item.path, predictor.top_k(next(probs), top_k)))
            bar.update(len(chunk))
    return results


def to_csv(results: Sequence[Result], top_k: int) -> str:
    """One row per image: path, label_1, probability_1, ... label_k, probability_k, error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["path"] + [f"{col}_{i}" for i in range(1, top_k + 1) for col in ("label", "probability")] + ["error"]
    writer.writerow(header)
    for r in results:
        cells = [v for p in r.predictions for v in (p["label"], f"{p['probability']:.6f}")]
        writer.writerow([r.path, *cells, *[""] * (2 * top_k - len(cells)), r.error or ""])
    return buffer.getvalue()


def to_json(results: Sequence[Result]) -> str:
    rows = [{"path": r.path, "predictions": r.predictions, "error": r.error} for r in results]
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"


def write_results(results: Sequence[Result], output: str | Path, top_k: int, *, overwrite: bool = False) -> Path:
    """Write CSV or JSON (by the output's suffix) atomically; never replace a file unless asked to."""
    output = Path(output)
    if output.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"output={output}: must end in .csv or .json")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass overwrite=true to replace it or choose another output")
    text = to_json(results) if output.suffix.lower() == ".json" else to_csv(results, top_k)
    return write_text_atomic(output, text)
