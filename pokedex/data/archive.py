"""The dataset zip: ``<split>/<Class>/<file>.png`` members plus ``index.json`` describing them.

The index is the single place where class names live for a dataset: the DataModule reads them from here,
the model stores them in its checkpoint, and the service reads them from the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pokedex.io import atomic_path

INDEX_NAME = "index.json"
FORMAT = "pokedex-zip/1"
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset zip that cannot be used; the message names the file or member and what to do."""


@dataclass(frozen=True)
class Member:
    path: str  # member name inside the zip
    split: str
    label: int
    source: str  # the animation / original file it came from; never spans two splits
    sha256: str


@dataclass
class DatasetIndex:
    classes: list[str]
    members: list[Member]
    meta: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Member]:
        return [m for m in self.members if m.split == name]

    def counts(self) -> dict[str, int]:
        counts = Counter(m.split for m in self.members)
        return {s: counts.get(s, 0) for s in SPLITS}

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "classes": self.classes,
                "meta": self.meta,
                "members": [asdict(m) for m in self.members],
            },
            indent=1,
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str, *, origin: str = INDEX_NAME) -> DatasetIndex:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise DatasetError(f"{origin}: unknown index format {data.get('format')!r}, expected {FORMAT!r}")
            members = [Member(**m) for m in data["members"]]
            return cls(classes=list(data["classes"]), members=members, meta=dict(data.get("meta", {})))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise DatasetError(
                f"{origin}: malformed dataset index ({exc}); re-run `python -m pokedex.prepare`"
            ) from exc


@dataclass(frozen=True)
class Sample:
    """One image to be written: encoded PNG bytes and where it belongs."""

    class_name: str
    split: str
    filename: str
    source: str
    png: bytes


def member_path(split: str, class_name: str, filename: str) -> str:
    return f"{split}/{class_name}/{filename}"


def read_index(zip_path: str | os.PathLike) -> DatasetIndex:
    path = Path(zip_path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset zip not found; run `python -m pokedex.prepare` to create it")
    try:
        with zipfile.ZipFile(path) as zf:
            text = zf.read(INDEX_NAME).decode("utf-8")
    except KeyError as exc:
        raise DatasetError(f"{path}: has no {INDEX_NAME}; build it with `python -m pokedex.prepare data=zip`") from exc
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{path}: not a valid zip file ({exc})") from exc
    return DatasetIndex.from_json(text, origin=f"{path}:{INDEX_NAME}")


def _entry(name: str) -> zipfile.ZipInfo:
    """A member with a fixed timestamp: the same samples always give the same zip bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def write_dataset_zip(
    out_path: str | os.PathLike, classes: list[str], samples: Iterable[Sample], meta: dict[str, Any]
) -> DatasetIndex:
    """Write samples and their index to ``out_path`` atomically: a crash never leaves a half-written zip."""
    label_of = {name: i for i, name in enumerate(classes)}
    members: list[Member] = []
    # PNG is already deflated: storing avoids paying for a second compression on every read.
    with atomic_path(out_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for sample in samples:
            name = member_path(sample.split, sample.class_name, sample.filename)
            zf.writestr(_entry(name), sample.png)
            digest = hashlib.sha256(sample.png).hexdigest()
            members.append(Member(name, sample.split, label_of[sample.class_name], sample.source, digest))
        index = DatasetIndex(classes=list(classes), members=members, meta=meta)
        zf.writestr(_entry(INDEX_NAME), index.to_json())
    return index
