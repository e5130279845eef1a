"""Where dataset zips come from: every source is built from ``conf/data/<name>.yaml`` (``data.source``).

A source has two methods: ``fingerprint()`` (everything that determines the output) and ``build(out_path)``.
``ensure_dataset`` makes re-running with the same inputs a no-op, and never overwrites a file it did not build.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

from pokedex.data.archive import DatasetError, DatasetIndex, read_index

log = logging.getLogger(__name__)

# Bump when a conversion changes its output for identical inputs, so `ensure_dataset` rebuilds old zips.
FORMAT_VERSION = 2  # 2: sprites cropped to their content (preprocessing v2), stored at native size


class DataSource(Protocol):
    def fingerprint(self) -> dict[str, Any]: ...

    def build(self, out_path: Path) -> DatasetIndex: ...


def ensure_dataset(source: DataSource, out_path: str | os.PathLike, *, force: bool = False) -> DatasetIndex:
    """Build ``out_path`` from ``source`` unless an existing zip was built from identical inputs."""
    out = Path(out_path)
    wanted = source.fingerprint()
    if out.exists() and not force:
        try:
            index: DatasetIndex | None = read_index(out)
        except DatasetError:  # not a zip, or a zip without our index: someone else's file
            index = None
        if index is not None and index.meta.get("fingerprint") == wanted:
            log.info("%s is up to date (same inputs); nothing to do", out)
            return index
        if index is None or index.meta.get("built_by") != "pokedex":
            raise FileExistsError(
                f"{out} exists but was not built by pokedex from these inputs; refusing to overwrite it. "
                "Move it away or choose another data.zip_path."
            )
        log.info("%s was built from other inputs; rebuilding", out)
    return source.build(out)
