"""The two map-style datasets over one dataset zip, both yielding canonical uint8 RGBA tensors (4×S×S).

* ``ZipImageDataset`` streams PNG members out of the zip and decodes each with the one preprocessing function.
* ``CachedDataset`` reads rows of the decoded cache (``pokedex.data.cache``), a whole batch per call.

Every DataLoader worker (forked or spawned) opens its own file (``PerProcessHandle``).
"""

from __future__ import annotations

import functools
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from pokedex.preprocess import bytes_to_array

T = TypeVar("T")


class PerProcessHandle(Generic[T]):
    """Opens ``opener()`` on first use and again in every new process: a handle inherited through ``fork`` or
    shared between workers would interleave their reads. Pickles without the handle (``opener`` must pickle,
    e.g. a ``functools.partial`` of ``open``)."""

    def __init__(self, opener: Callable[[], T]) -> None:
        self._opener = opener
        self._handle: T | None = None
        self._pid: int | None = None

    def get(self) -> T:
        if self._handle is None or self._pid != os.getpid():
            self._handle = self._opener()
            self._pid = os.getpid()
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        return {"_opener": self._opener, "_handle": None, "_pid": None}  # handles never cross processes


class ZipImageDataset(Dataset):
    """Streams PNG members straight out of the zip; returns (uint8 RGBA tensor 4×S×S, label).

    Each DataLoader worker opens its own ``ZipFile`` (``PerProcessHandle``), whether workers are forked or spawned.
    """

    def __init__(self, zip_path: str | os.PathLike, members: Sequence[tuple[str, int]], image_size: int) -> None:
        self.zip_path = str(zip_path)
        self.members = list(members)
        self.image_size = image_size
        self._zip = PerProcessHandle(functools.partial(zipfile.ZipFile, self.zip_path))

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        name, label = self.members[i]
        data = self._zip.get().read(name)
        array = bytes_to_array(data, self.image_size, name=f"{self.zip_path}:{name}")
        return torch.from_numpy(array), label


def read_npy_header(npy: Path) -> tuple[tuple[int, ...], int]:
    """(shape, byte offset of the data) of a C-order uint8 ``.npy`` file; ValueError for anything else."""
    with open(npy, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if fortran or dtype != np.uint8:
            raise ValueError(f"expected a C-order uint8 array, got dtype {dtype} fortran_order={fortran}")
        return tuple(shape), fh.tell()



def _empty_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 batch buffer; in a DataLoader worker it is allocated in shared memory (as ``default_collate``
    does), so the batch is not copied a second time on its way to the main process."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    if not hasattr(torch.UntypedStorage, "_new_shared"):  # private API that default_collate uses; be safe
        return torch.empty(shape, dtype=torch.uint8).share_memory_()
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``CachedDataset.__getitems__`` already returns a stacked batch; a DataLoader must pass it through."""
    return batch


class CachedDataset(Dataset):
    """Rows of the decoded cache with their labels; ``__getitems__`` reads a whole batch straight into one buffer.

    Its DataLoader must use ``collate_fn`` (``collate_batch``). Rows are read with ``preadv`` rather than
    through a memory map: on kernels whose page cache uses large folios (ext4 on Linux 6.x) each fault of a map
    pulls in far more than the row, and a map's pages count as the process's RSS, so after one epoch every loader
    process looked ~1.8 GB bigger (to ``top`` and to the OOM killer) while reading no faster (measured in
    docs/performance.md). The file is still a plain ``.npy`` that ``np.load(path, mmap_mode="r")`` opens, and
    the OS page cache keeps it in RAM.
    Every DataLoader worker (forked or spawned) opens its own descriptor (``PerProcessHandle``).
    """

    collate_fn = staticmethod(collate_batch)  # what a DataLoader over this dataset must use

    def __init__(self, cache_path: str | os.PathLike, rows: Sequence[int], labels: Sequence[int]) -> None:
        if len(rows) != len(labels):
            raise ValueError("rows and labels must have the same length")
        self.cache_path = str(cache_path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        shape, self.offset = read_npy_header(Path(self.cache_path))
        self.image_shape = tuple(shape[1:])
        self.row_bytes = int(np.prod(self.image_shape))
        if len(self.rows) and not (self.rows.min() >= 0 and self.rows.max() < shape[0]):
            raise IndexError(f"{self.cache_path}: rows outside 0..{shape[0] - 1}")
        self._file: PerProcessHandle[BinaryIO] = PerProcessHandle(
            functools.partial(open, self.cache_path, "rb", buffering=0)
        )

    def __len__(self) -> int:
        return len(self.rows)

    def _read_row(self, row: int, out: np.ndarray) -> None:
        fh, position = self._file.get(), self.offset + row * self.row_bytes
        if hasattr(os, "preadv"):
            got = os.preadv(fh.fileno(), [out], position)
        else:  # pragma: no cover - Windows
            fh.seek(position)
            got = fh.readinto(out)
        if got != self.row_bytes:
            raise OSError(f"{self.cache_path}: short read at row {row} (file changed underneath?)")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        images, labels = self.__getitems__([i])
        return images[0], int(labels[0])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.rows[idx]
        images = _empty_batch((len(idx), *self.image_shape))
        buffer = images.numpy()
        for slot in np.argsort(rows, kind="stable"):  # ascending file offsets: kinder to a cold disk
            self._read_row(int(rows[slot]), buffer[slot])
        return images, self.labels[torch.from_numpy(idx)]
