"""Predictors: both backends agree, top-k naming, safe loading, and clear errors for unusable model files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pokedex.inference.base import PredictorError
from pokedex.inference.loader import load_predictor
from pokedex.inference.onnx_backend import OnnxPredictor
from pokedex.inference.torch_backend import TorchPredictor
from pokedex.preprocess import bytes_to_array
from tests.helpers.serving import IMAGE_SIZE, Exported, TrainedRun, sprite_bytes

pytest_plugins = ["tests.serve_fixtures"]


@pytest.fixture(scope="module")
def batch(trained: TrainedRun) -> np.ndarray:
    sprites = sprite_bytes(trained.zip_path, n=4)
    return np.stack([bytes_to_array(data, IMAGE_SIZE) for _, data in sprites])


def test_backends_agree(trained: TrainedRun, exported: Exported, batch: np.ndarray) -> None:
    torch_predictor = load_predictor(trained.checkpoint)
    onnx_predictor = load_predictor(exported.onnx)
    assert isinstance(torch_predictor, TorchPredictor) and isinstance(onnx_predictor, OnnxPredictor)
    for p in (torch_predictor, onnx_predictor):
        assert p.class_names == [f"Shape{i:02d}" for i in range(6)]
        assert p.spec.image_size == IMAGE_SIZE and p.name == "resnet18"
    assert torch_predictor.sha256 == exported.sidecar["source_checkpoint_sha256"]
    assert onnx_predictor.sha256 == exported.sidecar["onnx_sha256"]
    a, b = torch_predictor.predict_arrays(batch), onnx_predictor.predict_arrays(batch)
    assert a.shape == b.shape == (4, 6) and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-5)


def test_top_k(exported: Exported, batch: np.ndarray) -> None:
    predictor = load_predictor(exported.onnx)
    probs = predictor.predict_arrays(batch[:1])[0]
    top = predictor.top_k(probs, 3)
    assert [set(t) for t in top] == [{"label", "index", "probability"}] * 3
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    assert top[0]["index"] == int(probs.argmax()) and top[0]["label"] == predictor.class_names[top[0]["index"]]
    assert len(predictor.top_k(probs, 100)) == 6  # clipped to the number of classes
    assert predictor.predict(batch, k=2)[0] == predictor.top_k(probs, 2)


def test_refuses_non_canonical_input(exported: Exported) -> None:
    predictor = load_predictor(exported.onnx)
    with pytest.raises(ValueError, match="uint8 batch of shape"):
        predictor.predict_arrays(np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 batch of shape"):
        predictor.predict_arrays(np.zeros((1, 4, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32))


class _Boom:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    """``weights_only`` loading: a checkpoint smuggling a callable is rejected instead of executed."""
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "pokedex": {}, "payload": _Boom()}, path)
    with pytest.raises(PredictorError, match="weights_only"):
        load_predictor(path)


def test_unusable_files(exported: Exported, tmp_path: Path) -> None:
    with pytest.raises(PredictorError, match="unsupported model file"):
        load_predictor(tmp_path / "model.pt")
    with pytest.raises(PredictorError, match="checkpoint not found"):
        load_predictor(tmp_path / "missing.ckpt")
    with pytest.raises(PredictorError, match="ONNX model not found"):
        load_predictor(tmp_path / "missing.onnx")

    lonely = tmp_path / "lonely.onnx"
    shutil.copy(exported.onnx, lonely)
    with pytest.raises(PredictorError, match="sidecar not found"):
        load_predictor(lonely)

    # a sidecar that belongs to another model file
    meta = {**exported.sidecar, "onnx_sha256": "0" * 64}
    lonely.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(PredictorError, match="out of sync"):
        load_predictor(lonely)

    lonely.with_suffix(".json").write_text("{not json")
    with pytest.raises(PredictorError, match="invalid metadata"):
        load_predictor(lonely)


def test_models_of_another_preprocessing_version_are_refused(
    trained: TrainedRun, exported: Exported, tmp_path: Path
) -> None:
    """A model trained on version-1 pixels (before content cropping) is refused, not served with version-2 input."""
    from pokedex.model.classifier import CHECKPOINT_KEY
    from pokedex.preprocess import PREPROCESS_VERSION

    assert exported.sidecar["preprocess"]["preprocess_version"] == PREPROCESS_VERSION
    onnx = tmp_path / "old.onnx"
    shutil.copy(exported.onnx, onnx)
    sidecar = json.loads(json.dumps(exported.sidecar))
    del sidecar["preprocess"]["preprocess_version"]  # what pokedex wrote before versions existed
    onnx.with_suffix(".json").write_text(json.dumps(sidecar))
    checkpoint = torch.load(trained.checkpoint, weights_only=True)
    del checkpoint[CHECKPOINT_KEY]["preprocess"]["preprocess_version"]
    old_ckpt = tmp_path / "old.ckpt"
    torch.save(checkpoint, old_ckpt)
    for path in (onnx, old_ckpt):
        with pytest.raises(
            PredictorError, match=rf"trained with preprocessing version 1.*version {PREPROCESS_VERSION}"
        ):
            load_predictor(path)
