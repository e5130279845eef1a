"""Session fixtures for the export / predictor / serving tests: one tiny trained checkpoint and its ONNX export.

Load with ``pytest_plugins = ["tests.serve_fixtures"]`` (never import this module directly: as a plugin it is
registered once, so the training run and the export happen once per pytest session, whatever the test order).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pokedex.inference.onnx_export import export_onnx
from tests.helpers.serving import Exported, TrainedRun, train_tiny


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_zip: Path) -> TrainedRun:
    return train_tiny(tmp_path_factory.mktemp("serve-train"), synthetic_zip)


@pytest.fixture(scope="session")
def exported(trained: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    out = tmp_path_factory.mktemp("serve-export") / "model.onnx"
    sidecar = export_onnx(trained.checkpoint, out)
    return Exported(out, sidecar, trained.checkpoint)
