"""``python -m pokedex.export ckpt_path=PATH [output=models/model.onnx]``: checkpoint → ONNX + JSON sidecar.

The exported graph is ``ProbabilityModel``: input ``images`` (uint8 RGBA NCHW, dynamic batch axis), output
``probabilities`` (float32 softmax, N×C). Normalisation is inside the graph, so a client only needs the
canonical array from ``pokedex.preprocess``. Before anything is written, ONNX Runtime's output is compared
with PyTorch's on random uint8 RGBA batches; the export fails unless max |Δprob| < ``parity_tolerance``.
Both files are written atomically, the model first; the sidecar records the model's sha256, so a pair that got
out of sync is detected by the loader.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import onnx
import torch
from omegaconf import DictConfig

import pokedex
from pokedex.config import CONFIG_PATH, register_resolvers
from pokedex.data.archive import file_sha256, read_index
from pokedex.io import write_bytes_atomic, write_json_atomic
from pokedex.predictor import ONNX_INPUT, ONNX_OUTPUT, sidecar_path
from pokedex.preprocess import bytes_to_array
from pokedex.torch_predictor import ProbabilityModel, load_checkpoint

log = logging.getLogger(__name__)
register_resolvers()

EXPORTERS = ("dynamo", "torchscript")


class ExportError(RuntimeError):
    """The export was refused or failed its parity check; nothing was written."""


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The exporter's optimisation passes log every step at INFO; keep the user's log readable."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _to_onnx_bytes(model: torch.nn.Module, image_size: int, *, opset: int, exporter: str) -> bytes:
    example = torch.randint(0, 256, (2, 4, image_size, image_size), dtype=torch.uint8)
    names = {"input_names": [ONNX_INPUT], "output_names": [ONNX_OUTPUT], "opset_version": opset}
    with warnings.catch_warnings(), _quiet_loggers("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
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
    import onnxruntime as ort

    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in batch_sizes:
        batch = rng.integers(0, 256, size=(n, 4, image_size, image_size), dtype=np.uint8)
        with torch.inference_mode():
            expected = model(torch.from_numpy(batch)).numpy()
        (got,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})
        if got.shape != expected.shape:
            raise ExportError(f"ONNX output shape {got.shape} != PyTorch {expected.shape} for batch {n}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def dataset_arrays(zip_path: str | Path, split: str, image_size: int, limit: int) -> np.ndarray:
    """Up to ``limit`` images of one split of a dataset zip, spread over its members, as canonical arrays."""
    members = read_index(zip_path).split(split)
    if not members:
        raise ExportError(f"{zip_path}: the {split!r} split is empty")
    chosen = members[:: max(1, len(members) // limit)][:limit]
    with zipfile.ZipFile(zip_path) as zf:
        return np.stack([bytes_to_array(zf.read(m.path), image_size, name=f"{zip_path}:{m.path}") for m in chosen])


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over an array of canonical images."""

    def __init__(self, arrays: np.ndarray, batch_size: int = 16) -> None:
        self._batches = iter(np.array_split(arrays, max(1, len(arrays) // batch_size)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {ONNX_INPUT: batch}


def quantize_int8(fp32: bytes, calibration: np.ndarray) -> bytes:
    """Static int8 quantisation (QDQ, per-channel weights): ~2-4x faster convolutions on CPUs with VNNI.

    Dynamic quantisation is not offered: its ConvInteger kernels made resnet18 5-10x *slower* here.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet_loggers("root", "onnxruntime"):
        src, pre, dst = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre))
        quantize_static(  # the classifier head stays float: uint8 logits/probabilities would be too coarse
            str(pre),
            str(dst),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            nodes_to_exclude=_head_nodes(onnx.load(str(pre))),
        )
        return dst.read_bytes()


def _head_nodes(model: onnx.ModelProto) -> list[str]:
    """The Softmax producing the output and the node producing its input (the final Linear/Gemm)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    heads = [node for node in model.graph.node if node.op_type == "Softmax"]
    return [n.name for n in heads] + [producers[n.input[0]].name for n in heads if n.input[0] in producers]


def compare_models(reference: bytes, candidate: bytes, arrays: np.ndarray) -> dict[str, float]:
    """How far ``candidate`` strays from ``reference`` on real images: top-1 agreement and max |Δprob|."""
    import onnxruntime as ort

    outputs = []
    for model in (reference, candidate):
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        outputs.append(
            np.concatenate(
                [
                    session.run([ONNX_OUTPUT], {ONNX_INPUT: b})[0]
                    for b in np.array_split(arrays, max(1, len(arrays) // 16))
                ]
            )
        )
    ref, cand = outputs
    return {
        "images": len(arrays),
        "top1_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(ref - cand).max()),
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
    meta_path = sidecar_path(output)
    if output.suffix != ".onnx":
        raise ExportError(f"output={output}: must end in .onnx")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter={exporter!r}: choose one of {EXPORTERS}")
    int8_path = output.with_suffix(".int8.onnx")
    targets = [output, meta_path, *((int8_path, sidecar_path(int8_path)) if quantize else ())]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise ExportError(f"{', '.join(existing)} already exist(s); pass overwrite=true to replace")

    classifier, meta = load_checkpoint(ckpt_path)
    model = ProbabilityModel(classifier).eval()
    size = classifier.spec.image_size
    log.info(
        "exporting %s (%s, %d classes, %d px) with the %s exporter",
        ckpt_path,
        meta["model_name"],
        len(classifier.class_names),
        size,
        exporter,
    )
    data = _to_onnx_bytes(model, size, opset=opset, exporter=exporter)
    onnx.checker.check_model(onnx.load_from_string(data))
    diff = parity_max_diff(model, data, size, batch_sizes=parity_batch_sizes, seed=seed)
    if not diff < parity_tolerance:
        raise ExportError(f"parity check failed: max |Δprob| = {diff:.3g} >= {parity_tolerance:g}; nothing written")
    log.info("parity OK: max |Δprob| = %.3g over batch sizes %s", diff, list(parity_batch_sizes))

    onnx_opset = next(
        (o.version for o in onnx.load_from_string(data).opset_import if o.domain in ("", "ai.onnx")), opset
    )
    sidecar = {
        "format": 1,
        "model_name": meta["model_name"],
        "class_names": list(classifier.class_names),
        "preprocess": classifier.spec.to_dict(),
        "input": {"name": ONNX_INPUT, "dtype": "uint8", "shape": ["batch", 4, size, size]},
        "output": {"name": ONNX_OUTPUT, "dtype": "float32", "shape": ["batch", len(classifier.class_names)]},
        "opset": onnx_opset,
        "exporter": exporter,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "source_checkpoint": ckpt_path.name,
        "source_checkpoint_sha256": file_sha256(ckpt_path),
        "parity": {
            "max_abs_diff": diff,
            "tolerance": parity_tolerance,
            "batch_sizes": list(parity_batch_sizes),
        },
        "versions": {"pokedex": pokedex.__version__, "torch": torch.__version__, "onnx": onnx.__version__},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    int8 = _quantized(data, meta, size, calibration_zip, calibration_images) if quantize else None
    write_bytes_atomic(output, data)
    write_json_atomic(meta_path, sidecar)
    log.info("wrote %s (%.1f MB) and %s", output, len(data) / 1e6, meta_path)
    if int8 is not None:
        int8_bytes, quantization = int8
        int8_sidecar = {k: v for k, v in sidecar.items() if k != "parity"}  # fp32's parity is not int8's
        int8_sidecar |= {"onnx_sha256": hashlib.sha256(int8_bytes).hexdigest(), "quantization": quantization}
        write_bytes_atomic(int8_path, int8_bytes)
        write_json_atomic(sidecar_path(int8_path), int8_sidecar)
        log.info("wrote %s (%.1f MB); vs fp32: %s", int8_path, len(int8_bytes) / 1e6, quantization["vs_fp32"])
    return sidecar


def _quantized(
    fp32: bytes, meta: dict[str, Any], size: int, calibration_zip: str | Path | None, limit: int
) -> tuple[bytes, dict[str, Any]]:
    zip_path = calibration_zip or meta.get("config", {}).get("data", {}).get("zip_path")
    if not zip_path or not Path(zip_path).is_file():
        raise ExportError(f"quantize=true needs calibration images: calibration_zip={zip_path} not found")
    calibration = dataset_arrays(zip_path, "train", size, limit)
    log.info("quantising to int8, calibrated on %d train images of %s", len(calibration), zip_path)
    int8 = quantize_int8(fp32, calibration)
    agreement = compare_models(fp32, int8, dataset_arrays(zip_path, "val", size, limit))
    return int8, {
        "method": "onnxruntime static QDQ int8 (per-channel int8 weights, uint8 activations)",
        "calibration_zip": Path(zip_path).name,
        "calibration_images": len(calibration),
        "vs_fp32": agreement,
    }


@hydra.main(config_path=CONFIG_PATH, config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        export_onnx(
            cfg.ckpt_path,
            cfg.output,
            overwrite=cfg.overwrite,
            opset=cfg.opset,
            exporter=cfg.exporter,
            parity_tolerance=cfg.parity_tolerance,
            parity_batch_sizes=tuple(cfg.parity_batch_sizes),
            seed=cfg.seed,
            quantize=cfg.quantize,
            calibration_zip=cfg.calibration_zip,
            calibration_images=cfg.calibration_images,
        )
    except (ExportError, ValueError) as exc:  # PredictorError is a ValueError
        log.error("%s", exc)
        raise SystemExit(f"export failed: {exc}") from None


if __name__ == "__main__":
    main()
