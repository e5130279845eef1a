"""One open file per process for datasets that DataLoader workers share (forked or spawned)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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
