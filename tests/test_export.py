"""ONNX export: parity with PyTorch, the sidecar, overwrite protection, and the Hydra entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from hydra import compose, initialize_config_dir

from pokedex.config import CONFIG_PATH
from pokedex.data.archive import read_index
from pokedex.export import main as export_main
from pokedex.inference.loader import load_predictor
from pokedex.inference.onnx_export import ExportError, export_onnx, parity_max_diff
from pokedex.inference.torch_backend import ProbabilityModel, load_checkpoint
from pokedex.io import file_sha256
from tests.helpers.serving import IMAGE_SIZE, Exported, TrainedRun

pytest_plugins = ["tests.serve_fixtures"]


def test_parity_with_pytorch(exported: Exported) -> None:
    """The issue's check, rerun here on fresh random RGBA inputs and other batch sizes: max |Δprob| < 1e-4."""
    classifier, _ = load_checkpoint(exported.checkpoint)
    diff = parity_max_diff(ProbabilityModel(classifier), exported.onnx, IMAGE_SIZE, batch_sizes=(1, 3, 8), seed=123)
    assert diff < 1e-4
    assert exported.sidecar["parity"]["max_abs_diff"] < 1e-4


def test_graph_interface(exported: Exported) -> None:
    model = onnx.load(str(exported.onnx))
    (inp,) = model.graph.input
    out, embeddings = model.graph.output  # probabilities first: clients that take the first output still work
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # dynamic batch axis
    assert [d.dim_value for d in dims[1:]] == [4, IMAGE_SIZE, IMAGE_SIZE]
    assert out.name == "probabilities" and embeddings.name == "embeddings"
    assert [d.dim_value for d in embeddings.type.tensor_type.shape.dim[1:]] == [512]  # resnet18's pre-logits width


def test_sidecar(exported: Exported, trained: TrainedRun) -> None:
    sidecar_path = exported.onnx.with_suffix(".json")
    meta = json.loads(sidecar_path.read_text())
    assert meta == json.loads(json.dumps(exported.sidecar))
    assert meta["class_names"] == [f"Shape{i:02d}" for i in range(6)]
    assert meta["model_name"] == "resnet18"
    assert meta["preprocess"]["image_size"] == IMAGE_SIZE and meta["preprocess"]["channels"] == "RGBA"
    assert meta["source_checkpoint_sha256"] == file_sha256(trained.checkpoint)
    assert meta["onnx_sha256"] == file_sha256(exported.onnx)
    assert meta["opset"] >= 17
    assert not list(exported.onnx.parent.glob("*.tmp"))


def test_embeddings_parity_and_drift_reference(exported: Exported, trained: TrainedRun) -> None:
    """The second output matches PyTorch's pre-logits features; the sidecar carries a calibrated reference."""
    from pokedex.inference.onnx_export import embedding_max_diff
    from pokedex.inference.torch_backend import ExportModel

    classifier, _ = load_checkpoint(exported.checkpoint)
    assert embedding_max_diff(ExportModel(classifier).eval(), exported.onnx.read_bytes(), IMAGE_SIZE, seed=7) < 1e-3
    assert exported.sidecar["parity"]["embeddings_max_rel_diff"] < 1e-3
    assert exported.sidecar["embeddings"] == {"name": "embeddings", "dtype": "float32", "shape": ["batch", 512]}
    reference = exported.sidecar["drift_reference"]
    counts = read_index(trained.zip_path).counts()
    assert reference["records"] == counts["val"]  # built on the val split
    calibration = reference["calibration"]
    assert calibration["records"] == counts["test"] and calibration["alpha"] == 0.01  # calibrated on the test split
    assert set(calibration["thresholds"]["200"]) == set(reference["signals"])
    assert {"confidence", "format", "had_alpha", "class_groups", "embedding"} <= set(reference["signals"])
    assert calibration["in_sample_false_alarm_rate"]["200"] <= 0.01


def test_thumbnails(exported: Exported) -> None:
    """One small RGBA PNG per class from the train split, in a sibling file the sidecar names."""
    import base64
    import io

    from PIL import Image

    assert exported.sidecar["thumbnails"] == {"file": "model.thumbs.json", "classes": 6, "size": 64}
    thumbs = json.loads(exported.onnx.with_suffix(".thumbs.json").read_text())
    assert thumbs["class_names"] == exported.sidecar["class_names"] and sorted(thumbs["thumbnails"]) == list("012345")
    image = Image.open(io.BytesIO(base64.b64decode(thumbs["thumbnails"]["3"])))
    assert image.format == "PNG" and image.mode == "RGBA" and max(image.size) <= 64


def test_drift_reference_needs_the_dataset(trained: TrainedRun, tmp_path: Path) -> None:
    from pokedex.inference.onnx_export import DriftOptions

    missing = DriftOptions(zip_path=str(tmp_path / "gone.zip"))
    with pytest.raises(ExportError, match=r"gone.zip.*not found.*drift.enabled=false"):
        export_onnx(trained.checkpoint, tmp_path / "m.onnx", exporter="torchscript", drift=missing)
    assert list(tmp_path.iterdir()) == []
    sidecar = export_onnx(trained.checkpoint, tmp_path / "m.onnx", exporter="torchscript",
                          drift=DriftOptions(enabled=False))  # fmt: skip
    assert "drift_reference" not in sidecar and "thumbnails" not in sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]


def test_refuses_to_overwrite(exported: Exported) -> None:
    before = file_sha256(exported.onnx)
    with pytest.raises(ExportError, match=r"already exist.*overwrite=true"):
        export_onnx(exported.checkpoint, exported.onnx)
    assert file_sha256(exported.onnx) == before


def test_failed_parity_writes_nothing(trained: TrainedRun, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="parity check failed"):
        export_onnx(trained.checkpoint, out, exporter="torchscript", parity_tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def _export_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose(config_name="export", overrides=list(overrides))


def test_entry_point(trained: TrainedRun, tmp_path: Path) -> None:
    """``python -m pokedex.export ckpt_path=... output=...`` through its Hydra config (legacy exporter: fast)."""
    out = tmp_path / "cli" / "model.onnx"
    cfg = _export_cfg(f"ckpt_path={trained.checkpoint}", f"output={out}", "exporter=torchscript")
    export_main(cfg)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["exporter"] == "torchscript" and meta["parity"]["max_abs_diff"] < 1e-4

    with pytest.raises(SystemExit, match="already exist"):
        export_main(cfg)
    assert _export_cfg(f"ckpt_path={trained.checkpoint}", "overwrite=true").overwrite is True  # passes the guard


def test_entry_point_bad_checkpoint(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot load checkpoint"):
        export_main(_export_cfg(f"ckpt_path={bogus}", f"output={tmp_path / 'm.onnx'}"))
    with pytest.raises(SystemExit, match="not found"):
        export_main(_export_cfg(f"ckpt_path={tmp_path / 'missing.ckpt'}", f"output={tmp_path / 'm.onnx'}"))


def test_dynamic_batch_runs(exported: Exported) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported.onnx), providers=["CPUExecutionProvider"])
    for n in (1, 2, 17):
        batch = np.zeros((n, 4, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        probs, embeddings = session.run(None, {"images": batch})
        assert probs.shape == (n, 6) and embeddings.shape == (n, 512)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_int8_quantisation(trained: TrainedRun, tmp_path: Path) -> None:
    """``quantize=true``: an extra int8 model + sidecar that loads and predicts, with its fp32 agreement recorded."""
    out = tmp_path / "model.onnx"
    export_onnx(trained.checkpoint, out, exporter="torchscript", quantize=True, calibration_zip=trained.zip_path)
    int8 = tmp_path / "model.int8.onnx"
    meta = json.loads(int8.with_suffix(".json").read_text())
    assert meta["onnx_sha256"] == file_sha256(int8) and "parity" not in meta
    assert meta["quantization"]["calibration_images"] > 0
    assert 0.0 <= meta["quantization"]["vs_fp32"]["top1_agreement"] <= 1.0
    predictor = load_predictor(int8)
    probs = predictor.predict_arrays(np.zeros((3, 4, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # the softmax head is not quantised
    with pytest.raises(ExportError, match=r"calibration_zip=.*not found"):
        export_onnx(trained.checkpoint, tmp_path / "b.onnx", quantize=True, calibration_zip=tmp_path / "none.zip")


def test_evaluate_judges_the_exported_file(exported: Exported, trained: TrainedRun, tmp_path: Path) -> None:
    """``pokedex.evaluate`` on the .onnx gives the checkpoint's numbers: the served file is what was measured."""
    from pokedex.evaluate import evaluate
    from tests.helpers.hydra import compose_config

    def run(model: Path, *extra: str) -> dict:
        overrides = [f"ckpt_path={model}", "num_workers=0", f"output_dir={tmp_path / model.name}", *extra]
        return evaluate(compose_config("evaluate", overrides, tmp_path / model.name))

    data = ["data=synthetic", f"data.zip_path={trained.zip_path}", "data.image_size=64"]  # 64: the model's size wins
    torch_metrics, onnx_metrics = run(trained.checkpoint), run(exported.onnx, *data)
    assert (torch_metrics["backend"], onnx_metrics["backend"]) == ("torch", "onnx")
    for key in ("top1", "top5", "macro_f1", "samples"):
        assert onnx_metrics[key] == pytest.approx(torch_metrics[key], abs=1e-6), key
    assert onnx_metrics["ece"] == pytest.approx(torch_metrics["ece"], abs=1e-4)
    # The sidecar records the training data, so no data=... is needed; without that record it must be asked for.
    assert run(exported.onnx)["top1"] == pytest.approx(torch_metrics["top1"], abs=1e-6)
    bare = tmp_path / "bare" / "model.onnx"
    bare.parent.mkdir()
    shutil.copy(exported.onnx, bare)
    sidecar = {k: v for k, v in exported.sidecar.items() if k != "data"}
    (bare.parent / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match=r"model.onnx: the model file carries no data config; pass .*data=sprites"):
        run(bare)
