"""A user's zip of images (``train/ val/ test/<Name>/*`` or ``<Name>/*``) → the dataset zip."""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pokedex.data.archive import SPLITS, DatasetError, DatasetIndex, Sample, write_dataset_zip
from pokedex.data.sources import FORMAT_VERSION
from pokedex.data.splits import fraction_split
from pokedex.io import file_sha256
from pokedex.preprocess import ImageError, open_image

log = logging.getLogger(__name__)

# Accepted by extension (case-insensitive). Members keep their original bytes and extension (no re-encoding, so
# nothing is lost and JPEG orientation is still applied by the one preprocessing function when read).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MAX_MEMBER_BYTES = 64 << 20  # a single image larger than this is treated as bad (zip-bomb guard)
_LAYOUT_HELP = "expected train/<Name>/<image>, val/<Name>/<image>, test/<Name>/<image> or <Name>/<image>"


@dataclass(frozen=True)
class _Entry:
    member: str  # the member name in the user's zip; becomes the index `source`
    split: str | None  # as given (layout with split folders) or None (flat layout)
    class_name: str
    filename: str


def is_system_file(parts: list[str]) -> bool:
    """__MACOSX/ resource forks, .DS_Store, ._* AppleDouble files and any hidden file or folder."""
    return any(p == "__MACOSX" or p.startswith(".") for p in parts)


def _detect_layout(paths: list[list[str]]) -> tuple[str, int]:
    """``("splits" | "flat", number of wrapping folders to strip)``; one common wrapping folder is allowed."""
    for strip in (0, 1):
        rest = [p[strip:] for p in paths]
        if strip and len({p[0] for p in paths}) != 1:
            break
        if all(len(p) == 3 and p[0] in SPLITS for p in rest):
            return "splits", strip
        if all(len(p) == 2 for p in rest):
            return "flat", strip
    odd = next((p for p in paths if len(p) not in (2, 3)), paths[0])
    raise DatasetError(f"cannot tell the zip's layout from member {'/'.join(odd)!r}: {_LAYOUT_HELP}")



@dataclass
class ZipSource:
    """Your own images: ``train/ val/ test/<Name>/*`` (splits kept) or ``<Name>/*`` (seeded stratified split).

    The input zip is only read, never modified. Every image is decoded once to validate it; bad ones stop the
    build (``on_bad_image: error``) or are skipped, counted and logged (``skip``).
    """

    path: str
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_images_per_class: int = 3
    on_bad_image: str = "error"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.on_bad_image not in ("error", "skip"):
            raise ValueError(f"data.on_bad_image must be 'error' or 'skip', got {self.on_bad_image!r}")
        if (
            not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1)
            or self.val_fraction + self.test_fraction >= 1
        ):
            raise ValueError(
                "data.source.val_fraction and test_fraction must each be in (0, 1) and sum to less than 1, "
                f"got {self.val_fraction} and {self.test_fraction}"
            )
        if self.min_images_per_class < 1:
            raise ValueError(f"data.source.min_images_per_class must be >= 1, got {self.min_images_per_class}")

    @property
    def input_path(self) -> Path:
        path = Path(self.path)
        if not path.is_file():
            raise DatasetError(f"{path}: file not found; pass the zip of your images as data.path=/path/to/images.zip")
        return path

    def fingerprint(self) -> dict[str, Any]:
        """The input's content (sha256, not its path) and every setting that shapes the output."""
        return {
            "source": "zip",
            "version": FORMAT_VERSION,
            "sha256": file_sha256(self.input_path),
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "min_images_per_class": self.min_images_per_class,
            "on_bad_image": self.on_bad_image,
            "seed": self.seed,
        }

    def _open(self) -> zipfile.ZipFile:
        path = self.input_path
        try:
            return zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise DatasetError(f"{path}: not a zip file ({exc}); pass a .zip of your images as data.path") from exc

    def _scan(self, zf: zipfile.ZipFile, skipped: Counter[str]) -> tuple[str, list[_Entry]]:
        candidates: list[tuple[str, list[str]]] = []
        seen: set[str] = set()
        for info in zf.infolist():
            name = info.filename
            parts = name.split("/")
            if info.is_dir():
                continue
            if name.startswith("/") or ".." in parts or "" in parts:
                raise DatasetError(f"{self.path}: member {name!r} has an unsafe path; re-create the zip")
            if is_system_file(parts):
                skipped["system_file"] += 1
            elif not name.lower().endswith(IMAGE_EXTENSIONS):
                skipped["not_an_image"] += 1
            elif name in seen:
                skipped["duplicate_member"] += 1
            else:
                seen.add(name)
                candidates.append((name, parts))
        if not candidates:
            raise DatasetError(f"{self.path}: contains no images ({', '.join(IMAGE_EXTENSIONS)}); {_LAYOUT_HELP}")
        layout, strip = _detect_layout([parts for _, parts in candidates])
        entries = []
        for name, parts in sorted(candidates):
            rest = parts[strip:]
            if layout == "splits":
                entries.append(_Entry(name, rest[0], rest[1], rest[2]))
            else:
                entries.append(_Entry(name, None, rest[0], rest[1]))
        return layout, entries

    def _read(self, zf: zipfile.ZipFile, member: str) -> bytes:
        info = zf.getinfo(member)
        if info.file_size > MAX_MEMBER_BYTES:
            raise ImageError(f"{member}: {info.file_size} bytes exceeds the limit of {MAX_MEMBER_BYTES} bytes")
        try:
            return zf.read(member)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as exc:
            raise ImageError(f"{member}: cannot read it from the zip ({exc})") from exc

    def _validate(self, zf: zipfile.ZipFile, entries: list[_Entry], skipped: Counter[str]) -> list[_Entry]:
        good = []
        for entry in tqdm(entries, desc="checking images", unit="img", mininterval=1, leave=False):
            try:
                with open_image(self._read(zf, entry.member), name=entry.member):
                    pass
            except ImageError as exc:
                if self.on_bad_image == "error":
                    raise DatasetError(
                        f"{self.path}: unreadable image {exc}. Fix or remove it, or set data.on_bad_image=skip"
                    ) from exc
                log.warning("skipping unreadable image %s", exc)
                skipped["bad_image"] += 1
                continue
            good.append(entry)
        return good

    def _assign(self, layout: str, entries: list[_Entry]) -> tuple[list[str], dict[str, str]]:
        by_class: dict[str, list[_Entry]] = defaultdict(list)
        for entry in entries:
            by_class[entry.class_name].append(entry)
        needed = self.min_images_per_class if layout == "splits" else max(self.min_images_per_class, 3)
        for name in sorted(by_class):
            count = len(by_class[name])
            if count < needed:
                why = "" if layout == "splits" else " (one each for train, val and test at the least)"
                raise DatasetError(
                    f"{self.path}: class {name!r} has {count} image(s); at least {needed} are needed{why} "
                    "(data.source.min_images_per_class). Add images or remove that folder."
                )
        split_of: dict[str, str] = {}
        if layout == "splits":
            for name, items in sorted(by_class.items()):
                if not any(e.split == "train" for e in items):
                    held = sorted({e.split for e in items if e.split})
                    raise DatasetError(
                        f"{self.path}: class {name!r} has images in {', '.join(s + '/' for s in held)} but none "
                        f"in train/; add training images under train/{name}/ or remove its other folders"
                    )
                split_of.update({e.member: e.split for e in items if e.split})
            for split in SPLITS:
                if split not in split_of.values():
                    raise DatasetError(
                        f"{self.path}: no images under {split}/; every split needs some. Add them, or use the "
                        "flat <Name>/<image> layout to have them split for you"
                    )
        else:
            for name, items in sorted(by_class.items()):
                split_of.update(
                    fraction_split(
                        [e.member for e in items], f"{self.seed}:{name}", self.val_fraction, self.test_fraction
                    )
                )
        return sorted(by_class), split_of

    def build(self, out_path: Path) -> DatasetIndex:
        source = self.input_path
        out = Path(out_path)
        if out.resolve() == source.resolve() or (out.exists() and os.path.samefile(out, source)):
            raise DatasetError(
                f"{out}: is the input zip itself; refusing to overwrite it. Choose another data.zip_path"
            )
        skipped: Counter[str] = Counter()
        with self._open() as zf:
            layout, entries = self._scan(zf, skipped)
            entries = self._validate(zf, entries, skipped)
            if not entries:
                raise DatasetError(f"{self.path}: none of its images could be read")
            classes, split_of = self._assign(layout, entries)
            summary: dict[str, Any] = {"classes": len(classes), "layout": layout}
            meta = {
                "built_by": "pokedex",
                "fingerprint": self.fingerprint(),
                "input": source.name,
                "summary": summary,
            }

            def samples() -> Iterator[Sample]:
                images: Counter[str] = Counter()
                total = 0
                for entry in entries:
                    data = self._read(zf, entry.member)
                    images[split_of[entry.member]] += 1
                    total += len(data)
                    yield Sample(entry.class_name, split_of[entry.member], entry.filename, entry.member, data)
                summary.update(
                    images={s: images.get(s, 0) for s in SPLITS},
                    skipped=dict(sorted(skipped.items())),
                    bytes=total,
                )

            return write_dataset_zip(out, classes, samples(), meta)
