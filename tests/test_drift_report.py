"""The offline drift report (``python -m pokedex.monitor``) from a small synthetic prediction log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from pokedex.drift.calibration import calibrate
from pokedex.drift.predlog import PredictionLog
from pokedex.drift.reference import SIDECAR_KEY, build_reference
from pokedex.evaluation.drift_report import build_report, reference_table
from pokedex.serve.telemetry import Telemetry
from tests.drift_helpers import NUM_CLASSES, World

WINDOW = 50
CLASS_NAMES = [f"mon{i}" for i in range(NUM_CLASSES)]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sidecar like the export's: class names plus a calibrated drift reference (no embeddings, as logged)."""
    world, rng = World(), np.random.default_rng(0)
    strip = [type(r)(r.class_index, r.confidence, r.entropy, r.facts) for r in world.records(4000, rng=rng)]
    reference = calibrate(build_reference(strip[:2000], None, CLASS_NAMES), strip[2000:], window_sizes=(WINDOW,),
                          n_windows=400)  # fmt: skip
    path = tmp_path_factory.mktemp("monitor") / "model.json"
    path.write_text(json.dumps({"class_names": CLASS_NAMES, SIDECAR_KEY: reference}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prediction_log(sidecar: Path) -> Path:
    """100 in-distribution requests, then 100 photos, written by the service's own telemetry code."""
    world, rng = World(), np.random.default_rng(1)
    path = sidecar.parent / "predictions.jsonl"
    telemetry = Telemetry(CollectorRegistry(), CLASS_NAMES, prediction_log=PredictionLog(path, max_bytes=16000))
    for record in [*world.records(100, rng=rng), *world.records(100, "photos", rng=rng)]:
        telemetry.observe(record)
    telemetry.close()
    return path


def test_reference_table_keeps_the_marginals(sidecar: Path) -> None:
    reference = json.loads(sidecar.read_text())[SIDECAR_KEY]
    table = reference_table(reference, CLASS_NAMES, rows=1000)
    assert {len(column) for column in table.values()} == {1000}
    assert set(table["format"]) == {"PNG"} and set(table["had_alpha"]) == {"true"}
    quantiles = reference["signals"]["confidence"]["quantiles"]
    assert np.median(table["confidence"]) == pytest.approx(quantiles[100], abs=0.01)
    assert len(set(table["predicted"])) > 500  # 1000 rows over 649 near-uniform classes


def test_report_from_a_synthetic_log(prediction_log: Path, sidecar: Path, tmp_path: Path) -> None:
    output = tmp_path / "reports" / "drift.html"
    summary = build_report(prediction_log, sidecar, output, evidently=False)
    assert summary["window"] == WINDOW  # the calibrated window size, read from the reference
    assert summary["requests"] == 200  # read across the rotated files (16 kB each), oldest first
    assert (prediction_log.parent / "predictions.jsonl.2").is_file()
    assert summary["windows with drift"] == 2
    page = output.read_text(encoding="utf-8")
    assert 'src="data:image/png;base64,' in page and "pokedex[monitor]" in page
    assert page.count("<td>ok</td>") == 2 and page.count("<td>drift</td>") == 2  # sprites first, photos later


def test_evidently_report(prediction_log: Path, sidecar: Path, tmp_path: Path) -> None:
    pytest.importorskip("evidently", reason="Evidently is in the optional extra: pip install -e '.[monitor]'")
    output = tmp_path / "drift.html"
    build_report(prediction_log, sidecar, output)
    assert 'src="drift.evidently.html"' in output.read_text(encoding="utf-8")
    evidently = (tmp_path / "drift.evidently.html").read_text(encoding="utf-8")
    assert len(evidently) > 100_000 and "foreground_fraction" in evidently
    assert "<script src=" not in evidently  # self-contained: opens offline


def run_monitor(*args: str) -> subprocess.CompletedProcess:
    """``python -m pokedex.monitor`` as a user runs it, from the repository root."""
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "pokedex.monitor", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300, check=False)


def test_monitor_entry_point(prediction_log: Path, sidecar: Path, tmp_path: Path) -> None:
    output = tmp_path / "drift.html"
    result = run_monitor(
        f"log={prediction_log}", f"reference={sidecar}", f"output={output}", "evidently=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Calibrated verdicts per window" in output.read_text(encoding="utf-8")
    missing = run_monitor(f"log={tmp_path / 'none.jsonl'}", f"reference={sidecar}",
                         f"hydra.run.dir={tmp_path / 'run2'}")  # fmt: skip
    assert missing.returncode != 0 and "no prediction log entries" in missing.stderr
