"""Checkpoint → ONNX + JSON sidecar, parity-checked against PyTorch before anything is written.

The exported graph is ``ProbabilityModel``: input ``images`` (uint8 RGBA NCHW, dynamic batch axis), output
``probabilities`` (float32 softmax, N×C). Normalisation is inside the graph, so a client only needs the
canonical array from ``pokedex.preprocess``. Before anything is written, ONNX Runtime's output is compared
with PyTorch's on random uint8 RGBA batches; the export fails unless max |Δprob| < ``parity_tolerance``.
Both files are written atomically, the model first; the sidecar records the model's sha256, so a pair that got
out of sync is detected by the loader.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import pokedex
from pokedex.inference.base import ONNX_INPUT, ONNX_OUTPUT, check_preprocess_version, sidecar_path
from pokedex.inference.onnx_backend import onnx_session, run_onnx
from pokedex.inference.quantize import quantize_with_report, quiet_loggers
from pokedex.inference.torch_backend import ProbabilityModel, load_checkpoint
from pokedex.io import file_sha256, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")


class ExportError(RuntimeError):
    """The export was refused or failed its parity check; nothing was written."""


def _to_onnx_bytes(model: torch.nn.Module, image_size: int, *, opset: int, exporter: str) -> bytes:
    example = torch.randint(0, 256, (2, 4, image_size, image_size), dtype=torch.uint8)
    names = {"input_names": [ONNX_INPUT], "output_names": [ONNX_OUTPUT], "opset_version": opset}
    with warnings.catch_warnings(), quiet_loggers("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
        warnings.simplefilter("ignore")  # tracer / deprecation chatter, not actionable for the user
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=65536)
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes={ONNX_INPUT: {0: batch}},
                verbose=False,
                **names,
            )
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            **names,
        )
        return buffer.getvalue()


def parity_max_diff(
    model: torch.nn.Module,
    onnx_model: bytes | str | Path,
    image_size: int,
    *,
    batch_sizes: tuple[int, ...] = (1, 5),
    seed: int = 0,
) -> float:
    """max |Δprob| between PyTorch and ONNX Runtime on random uint8 RGBA batches (several batch sizes)."""
    session = onnx_session(onnx_model)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in batch_sizes:
        batch = rng.integers(0, 256, size=(n, 4, image_size, image_size), dtype=np.uint8)
        with torch.inference_mode():
            expected = model(torch.from_numpy(batch)).numpy()
        got = run_onnx(session, batch)
        if got.shape != expected.shape:
            raise ExportError(f"ONNX output shape {got.shape} != PyTorch {expected.shape} for batch {n}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _refuse_overwrite(targets: list[Path], overwrite: bool) -> None:
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise ExportError(f"{', '.join(existing)} already exist(s); pass overwrite=true to replace")


def _sidecar(data: bytes, meta: dict[str, Any], ckpt_path: Path, exporter: str, parity: dict[str, Any]) -> dict:
    """Everything a server needs besides the graph: classes, preprocessing, I/O names, provenance."""
    preprocess = meta["preprocess"]
    size, num_classes = int(preprocess["image_size"]), len(meta["class_names"])
    opset = next(o.version for o in onnx.load_from_string(data).opset_import if o.domain in ("", "ai.onnx"))
    return {
        "format": 1,
        "model_name": meta["model_name"],
        "class_names": list(meta["class_names"]),
        "preprocess": preprocess,
        "data": (meta.get("config") or {}).get("data"),  # what it was trained on: evaluate needs no data=...
        "input": {"name": ONNX_INPUT, "dtype": "uint8", "shape": ["batch", 4, size, size]},
        "output": {"name": ONNX_OUTPUT, "dtype": "float32", "shape": ["batch", num_classes]},
        "opset": opset,
        "exporter": exporter,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "source_checkpoint": ckpt_path.name,
        "source_checkpoint_sha256": file_sha256(ckpt_path),
        "parity": parity,
        "versions": {"pokedex": pokedex.__version__, "torch": torch.__version__, "onnx": onnx.__version__},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def export_onnx(
    ckpt_path: str | Path,
    output: str | Path = "models/model.onnx",
    *,
    overwrite: bool = False,
    opset: int = 18,
    exporter: str = "dynamo",
    parity_tolerance: float = 1e-4,
    parity_batch_sizes: tuple[int, ...] = (1, 5),
    seed: int = 0,
    quantize: bool = False,
    calibration_zip: str | Path | None = None,
    calibration_images: int = 2048,
) -> dict[str, Any]:
    """Export, check parity, then write ``output`` and its ``.json`` sidecar; returns the sidecar content.

    ``quantize=True`` also writes ``<stem>.int8.onnx`` (+ sidecar), calibrated on the train split of
    ``calibration_zip`` (default: the checkpoint's own dataset) and compared with fp32 on its val split.
    """
    ckpt_path, output = Path(ckpt_path), Path(output)
    if output.suffix != ".onnx":
        raise ExportError(f"output={output}: must end in .onnx")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter={exporter!r}: choose one of {EXPORTERS}")
    int8_path = output.with_suffix(".int8.onnx")
    _refuse_overwrite(
        [output, sidecar_path(output), *((int8_path, sidecar_path(int8_path)) if quantize else ())], overwrite
    )

    classifier, meta = load_checkpoint(ckpt_path)
    check_preprocess_version(classifier.spec, ckpt_path)
    model = ProbabilityModel(classifier).eval()
    size = classifier.spec.image_size
    log.info("exporting %s (%s, %d classes, %d px) with the %s exporter", ckpt_path, meta["model_name"],
             len(classifier.class_names), size, exporter)  # fmt: skip
    data = _to_onnx_bytes(model, size, opset=opset, exporter=exporter)
    onnx.checker.check_model(onnx.load_from_string(data))
    diff = parity_max_diff(model, data, size, batch_sizes=parity_batch_sizes, seed=seed)
    if not diff < parity_tolerance:
        raise ExportError(f"parity check failed: max |Δprob| = {diff:.3g} >= {parity_tolerance:g}; nothing written")
    log.info("parity OK: max |Δprob| = %.3g over batch sizes %s", diff, list(parity_batch_sizes))
    parity = {"max_abs_diff": diff, "tolerance": parity_tolerance, "batch_sizes": list(parity_batch_sizes)}
    sidecar = _sidecar(data, meta, ckpt_path, exporter, parity)

    int8 = None
    if quantize:
        zip_path = calibration_zip or ((meta.get("config") or {}).get("data") or {}).get("zip_path")
        try:
            int8 = quantize_with_report(data, size, zip_path, calibration_images)
        except ValueError as exc:
            raise ExportError(str(exc)) from exc
    write_bytes_atomic(output, data)
    write_json_atomic(sidecar_path(output), sidecar)
    log.info("wrote %s (%.1f MB) and %s", output, len(data) / 1e6, sidecar_path(output))
    if int8 is not None:
        _write_int8(int8_path, sidecar, *int8)
    return sidecar


def _write_int8(path: Path, fp32_sidecar: dict[str, Any], data: bytes, quantization: dict[str, Any]) -> None:
    sidecar = {k: v for k, v in fp32_sidecar.items() if k != "parity"}  # fp32's parity is not int8's
    sidecar |= {"onnx_sha256": hashlib.sha256(data).hexdigest(), "quantization": quantization}
    write_bytes_atomic(path, data)
    write_json_atomic(sidecar_path(path), sidecar)
    log.info("wrote %s (%.1f MB); vs fp32: %s", path, len(data) / 1e6, quantization["vs_fp32"])
