"""The decoded cache: the dataset zip decoded once into a uint8 ``N×4×S×S`` ``.npy`` array on disk.

Why: decoding a 128 px PNG costs 0.3-0.8 ms of CPU, far more than a GPU step spends per image, and it is the
same work every epoch (docs/performance.md). The cache pays it once; afterwards a batch is one read per row
out of the page cache into a single buffer (allocated in shared memory inside DataLoader workers, so it is not
copied again).
The file is keyed by the zip's SHA-256, the image size, ``CACHE_VERSION`` (the file layout) and
``PREPROCESS_VERSION`` (what ``pokedex.preprocess.image_to_array`` outputs), so an old cache is rebuilt, never
mixed in; it is written to a temporary file and renamed into place,
and its payload is checked against a CRC-32 recorded in a sidecar JSON before it is trusted.

Rows follow the order of ``index.json``'s members (all splits), so each split is just a list of row numbers.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pokedex.data.archive import read_index
from pokedex.data.datasets import CachedDataset, ZipImageDataset, read_npy_header
from pokedex.io import atomic_path, file_sha256, write_json_atomic
from pokedex.preprocess import CHANNELS, PREPROCESS_VERSION

log = logging.getLogger(__name__)

CACHE_FORMAT = "pokedex-cache/1"
CACHE_VERSION = 1  # the file layout; the pixels follow preprocess.PREPROCESS_VERSION
_CHUNK = 1 << 24


@dataclass(frozen=True)
class DecodedCache:
    """A validated cache file and where each zip member lives in it."""

    path: Path
    key: str
    rows: dict[str, int]  # member path inside the zip → row in the array

    def dataset(self, members: Sequence[tuple[str, int]]) -> CachedDataset:
        """A dataset over ``(member path, label)`` pairs, e.g. one split of the index."""
        rows = [self.rows[name] for name, _ in members]
        return CachedDataset(self.path, rows, [label for _, label in members])


def cache_key(zip_sha256: str, image_size: int) -> str:
    return f"{zip_sha256[:16]}-{image_size}px-v{CACHE_VERSION}-p{PREPROCESS_VERSION}"


def _expected_meta(zip_sha256: str, image_size: int, count: int) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "preprocess_version": PREPROCESS_VERSION,
        "zip_sha256": zip_sha256,
        "image_size": image_size,
        "channels": CHANNELS,
        "dtype": "uint8",
        "shape": [count, len(CHANNELS), image_size, image_size],
    }


def _payload_crc(path: Path, offset: int) -> int:
    """CRC-32 of the array bytes, read with plain file reads (no mmap, so RSS does not grow)."""
    crc = 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        while block := fh.read(_CHUNK):
            crc = zlib.crc32(block, crc)
    return crc



def _check(npy: Path, meta_path: Path, expected: dict[str, Any], verify: bool) -> str | None:
    """Why the cache at ``npy`` cannot be trusted, or None when it can."""
    if not npy.is_file() or not meta_path.is_file():
        return "missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable metadata ({exc})"
    if {k: meta.get(k) for k in expected} != expected:
        return "metadata does not match this zip / image size / cache version"
    try:
        shape, offset = read_npy_header(npy)
    except (OSError, ValueError) as exc:
        return f"bad header ({exc})"
    if list(shape) != expected["shape"]:
        return f"header says shape {shape}, expected {expected['shape']}"
    size, expected_size = npy.stat().st_size, offset + int(np.prod(shape))
    if size != expected_size:
        return f"size {size} != {expected_size} (truncated or padded)"
    if meta.get("offset") != offset:
        return "payload offset does not match the metadata"
    if verify and _payload_crc(npy, offset) != meta.get("crc32"):
        return "payload checksum mismatch (corrupt)"
    return None


def _prune_stale(cache_dir: Path, current: Path, zip_path: str, image_size: int) -> None:
    """Delete caches of earlier versions of the same zip file at the same size: each is ~1.8 GB at 128 px."""
    for meta_path in cache_dir.glob("*.json"):
        npy = meta_path.with_suffix(".npy")
        if npy == current:
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("zip_path") == zip_path and meta.get("image_size") == image_size:
            log.info("removing stale decoded cache %s (built from an earlier %s)", npy, zip_path)
            meta_path.unlink(missing_ok=True)
            npy.unlink(missing_ok=True)
            (cache_dir / f".{npy.stem}.lock").unlink(missing_ok=True)


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Serialise builders (DDP ranks, parallel runs) so the cache is decoded once; a no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(zip_path: Path, members: list[str], image_size: int, npy: Path, workers: int) -> tuple[int, int]:
    """Decode every member with the shared decoder into a temp file, then rename it over ``npy``."""
    shape = (len(members), len(CHANNELS), image_size, image_size)
    decoder = ZipImageDataset(zip_path, [(name, 0) for name in members], image_size)
    # Its own generator: a DataLoader draws a seed from the global RNG otherwise, and a training run that had to
    # build the cache would then initialise and shuffle differently from one that found it built.
    loader = DataLoader(decoder, batch_size=256, num_workers=workers, shuffle=False, generator=torch.Generator())
    with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
        offset, crc, written = fh.tell(), 0, 0
        for images, _ in loader:  # sequential writes, not a writable memmap: RSS stays flat
            block = images.numpy()
            fh.write(block.tobytes())
            crc = zlib.crc32(block, crc)
            written += len(block)
        if written != len(members):
            raise RuntimeError(f"decoded {written} images, expected {len(members)}")
        fh.flush()
        os.fsync(fh.fileno())
    return offset, crc


def ensure_cache(
    zip_path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    image_size: int,
    *,
    workers: int | None = None,
    verify: bool = True,
) -> DecodedCache:
    """Return a valid decoded cache for ``zip_path`` at ``image_size``, building it only when needed.

    A cache that is missing, truncated, from another zip / size / version, or fails its checksum is rebuilt.
    ``workers`` decode in parallel (default: all CPUs, at most 16).
    """
    zip_path = Path(zip_path)
    index = read_index(zip_path)
    members = [m.path for m in index.members]
    zip_sha = file_sha256(zip_path)
    key = cache_key(zip_sha, image_size)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    npy = cache_dir / f"{zip_path.stem}-{key}.npy"
    meta_path = npy.with_suffix(".json")
    expected = _expected_meta(zip_sha, image_size, len(members))
    rows = {name: i for i, name in enumerate(members)}

    if (reason := _check(npy, meta_path, expected, verify)) is None:
        return DecodedCache(npy, key, rows)
    with _lock(cache_dir / f".{npy.stem}.lock"):
        if (reason := _check(npy, meta_path, expected, verify)) is None:  # another process built it meanwhile
            return DecodedCache(npy, key, rows)
        if reason != "missing":
            log.warning("decoded cache %s is not usable (%s); rebuilding it", npy, reason)
        workers = min(16, os.cpu_count() or 1) if workers is None else workers
        log.info("decoding %d images at %d px into %s (%d workers)", len(members), image_size, npy, workers)
        start = time.perf_counter()
        meta_path.unlink(missing_ok=True)  # the sidecar is the commit marker: written last, removed first
        offset, crc = _build(zip_path, members, image_size, npy, workers)
        seconds = time.perf_counter() - start
        source = str(zip_path.resolve())
        meta = {**expected, "zip_path": source, "offset": offset, "crc32": crc, "seconds": round(seconds, 3)}
        write_json_atomic(meta_path, meta)
        log.info("decoded cache built in %.1f s (%.0f images/s)", seconds, len(members) / max(seconds, 1e-9))
        _prune_stale(cache_dir, npy, source, image_size)
    return DecodedCache(npy, key, rows)
