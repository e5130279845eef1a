"""``python -m pokedex.predict``: folders, zips and files in; CSV/JSON out; bad files reported, never fatal."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest

from pokedex.inference.batch_predict import collect_items, predict_items, write_results
from pokedex.inference.loader import load_predictor
from pokedex.preprocess import bytes_to_array
from tests.helpers.hydra import run_module
from tests.helpers.serving import IMAGE_SIZE, Exported, TrainedRun, sprite_bytes

pytest_plugins = ["tests.serve_fixtures"]


@pytest.fixture
def folder(trained: TrainedRun, tmp_path: Path) -> Path:
    """Three test sprites in nested folders, one corrupt PNG, one non-image file and a hidden file."""
    root = tmp_path / "uploads"
    for i, (_, data) in enumerate(sprite_bytes(trained.zip_path, n=3)):
        (root / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"sub{i % 2}" / f"sprite{i}.png").write_bytes(data)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0")
    return root


def test_folder_to_csv_reports_bad_files(exported: Exported, folder: Path, tmp_path: Path) -> None:
    predictor = load_predictor(exported.onnx)
    items = collect_items([folder])
    assert [Path(i.path).name for i in items] == ["broken.png", "sprite0.png", "sprite2.png", "sprite1.png"]
    results = predict_items(predictor, items, top_k=3, batch_size=2, progress=False)
    out = write_results(results, tmp_path / "p.csv", top_k=3)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [Path(r["path"]).name for r in rows] == ["broken.png", "sprite0.png", "sprite2.png", "sprite1.png"]
    assert rows[0]["error"] and "broken.png" in rows[0]["error"] and rows[0]["label_1"] == ""
    for row, item in zip(rows[1:], items[1:], strict=True):  # the same answer as the service's path
        probs = predictor.predict_arrays(bytes_to_array(item.read(), IMAGE_SIZE)[None])[0]
        expected = predictor.top_k(probs, 3)
        assert [row[f"label_{k + 1}"] for k in range(3)] == [p["label"] for p in expected] and not row["error"]
        assert float(row["probability_1"]) == pytest.approx(expected[0]["probability"], abs=1e-6)


def test_zip_with_pattern_to_json(exported: Exported, trained: TrainedRun, tmp_path: Path) -> None:
    predictor = load_predictor(exported.onnx)
    items = collect_items([trained.zip_path], pattern="test/*")
    with zipfile.ZipFile(trained.zip_path) as zf:
        expected = sorted(n for n in zf.namelist() if n.startswith("test/"))
    assert [i.path.split(":", 1)[1] for i in items] == expected
    out = write_results(predict_items(predictor, items, top_k=2, progress=False), tmp_path / "p.json", top_k=2)
    rows = json.loads(out.read_text())
    assert len(rows) == len(expected) and all(len(r["predictions"]) == 2 and r["error"] is None for r in rows)
    for row in rows:  # best first, and a probability
        first, second = (p["probability"] for p in row["predictions"])
        assert 1 >= first >= second >= 0


def test_outputs_are_never_overwritten_silently(tmp_path: Path) -> None:
    target = tmp_path / "p.csv"
    target.write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        write_results([], target, top_k=1)
    assert target.read_text() == "mine"
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        write_results([], tmp_path / "p.txt", top_k=1)


def test_missing_input_is_an_error_up_front(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_items([tmp_path / "nope"])


def test_cli_with_the_checkpoint(trained: TrainedRun, folder: Path, tmp_path: Path) -> None:
    """As a user types it, with the .ckpt (PyTorch backend): exit 0 despite the broken file."""
    out = tmp_path / "cli.csv"
    args = [f"model_path={trained.checkpoint}", f"inputs=[{folder},{folder / 'sub0' / 'sprite0.png'}]",
            f"output={out}", "top_k=2", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    result = run_module("pokedex.predict", *args)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and sum(bool(r["error"]) for r in rows) == 1
    again = run_module("pokedex.predict", *args)
    assert again.returncode != 0 and "already exists" in again.stderr
