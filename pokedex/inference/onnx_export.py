"""Checkpoint → ONNX + JSON sidecar, parity-checked against PyTorch before anything is written.

The exported graph is ``ExportModel``: input ``images`` (uint8 RGBA NCHW, dynamic batch axis), first output
``probabilities`` (float32 softmax, N×C; clients that ask for it by name or take the first output are
unaffected) and second output ``embeddings`` (the backbone's pre-logits features, N×D, read by the drift
monitor). Normalisation is inside the graph, so a client only needs the canonical array from
``pokedex.preprocess``. Before anything is written, ONNX Runtime's outputs are compared with PyTorch's on random
uint8 RGBA batches: the export fails unless max |Δprob| against ``PokedexClassifier.forward`` is below
``parity_tolerance`` and the embeddings agree to ``EMBEDDING_TOLERANCE`` (relative to their largest value).
The sidecar also carries the calibrated drift reference and the thumbnails go to ``<stem>.thumbs.json``
(``drift_reference.py``). Every file is written atomically, the model first; the sidecar records the model's
sha256, so a pair that got out of sync is detected by the loader.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import pokedex
from pokedex.drift.reference import SIDECAR_KEY
from pokedex.inference.base import ONNX_EMBEDDINGS, ONNX_INPUT, ONNX_OUTPUT, check_preprocess_version, sidecar_path
from pokedex.inference.drift_reference import drift_reference, thumbs_path, write_thumbnails
from pokedex.inference.onnx_backend import run_onnx, run_onnx_embeddings
from pokedex.inference.quantize import quantize_with_report, quiet_loggers
from pokedex.inference.torch_backend import ExportModel, ProbabilityModel, has_pre_logits, load_checkpoint
from pokedex.io import file_sha256, write_bytes_atomic, write_json_atomic
from pokedex.onnx_session import onnx_session

log = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
EMBEDDING_TOLERANCE = 1e-3  # max |Δembedding| / max |embedding|: fp32 kernel differences are ~1e-6 of that


@dataclass(frozen=True)
class DriftOptions:
    """What export adds for monitoring: the calibrated drift reference (in the sidecar) and class thumbnails.

    ``zip_path`` defaults to the checkpoint's own ``data.zip_path``; without a reachable dataset the export
    fails with a message, rather than silently producing a model the service cannot watch
    (``enabled=false`` is the explicit way out).
    """

    enabled: bool = True
    zip_path: str | None = None
    window_sizes: tuple[int, ...] = (200,)
    alpha: float = 0.01
    n_windows: int = 2000
    thumbnails: bool = True


class ExportError(RuntimeError):
    """The export was refused or failed its parity check; nothing was written."""


def _to_onnx_bytes(model: torch.nn.Module, image_size: int, *, opset: int, exporter: str, outputs: list[str]) -> bytes:
    example = torch.randint(0, 256, (2, 4, image_size, image_size), dtype=torch.uint8)
    names = {"input_names": [ONNX_INPUT], "output_names": outputs, "opset_version": opset}
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
            dynamic_axes={name: {0: "batch"} for name in (ONNX_INPUT, *outputs)},
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


def embedding_max_diff(
    model: ExportModel, onnx_model: bytes, image_size: int, *, batch_sizes: tuple[int, ...] = (1, 5), seed: int = 0
) -> float:
    """max |Δembedding| / max |embedding| between PyTorch and ONNX Runtime (embeddings have no fixed scale)."""
    session = onnx_session(onnx_model)
    rng = np.random.default_rng(seed + 1)
    worst = 0.0
    for n in batch_sizes:
        batch = rng.integers(0, 256, size=(n, 4, image_size, image_size), dtype=np.uint8)
        with torch.inference_mode():
            expected = model(torch.from_numpy(batch))[1].numpy()
        got = run_onnx_embeddings(session, batch)[1]
        if got.shape != expected.shape:
            raise ExportError(f"ONNX embeddings shape {got.shape} != PyTorch {expected.shape} for batch {n}")
        worst = max(worst, float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-12)))
    return worst


def _refuse_overwrite(targets: list[Path], overwrite: bool) -> None:
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise ExportError(f"{', '.join(existing)} already exist(s); pass overwrite=true to replace")


def _sidecar(data: bytes, meta: dict[str, Any], ckpt_path: Path, exporter: str, parity: dict[str, Any]) -> dict:
    """Everything a server needs besides the graph: classes, preprocessing, I/O names, provenance."""
    preprocess = meta["preprocess"]
    size, num_classes = int(preprocess["image_size"]), len(meta["class_names"])
    graph = onnx.load_from_string(data)
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    sidecar = {
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
    for out in graph.graph.output:
        if out.name == ONNX_EMBEDDINGS:
            width = out.type.tensor_type.shape.dim[1].dim_value
            sidecar["embeddings"] = {"name": ONNX_EMBEDDINGS, "dtype": "float32", "shape": ["batch", width]}
    return sidecar


def _export_checked(
    classifier: Any, *, opset: int, exporter: str, tolerance: float, batch_sizes: tuple[int, ...], seed: int
) -> tuple[bytes, dict[str, Any]]:
    """The ONNX bytes and their parity report; ``ExportError`` (nothing written) when they do not match PyTorch."""
    size = classifier.spec.image_size
    reference = ProbabilityModel(classifier).eval()  # the trained forward: what every probability must match
    with_embeddings = has_pre_logits(classifier)
    graph = ExportModel(classifier).eval() if with_embeddings else reference
    outputs = [ONNX_OUTPUT, ONNX_EMBEDDINGS] if with_embeddings else [ONNX_OUTPUT]
    data = _to_onnx_bytes(graph, size, opset=opset, exporter=exporter, outputs=outputs)
    onnx.checker.check_model(onnx.load_from_string(data))
    diff = parity_max_diff(reference, data, size, batch_sizes=batch_sizes, seed=seed)
    if not diff < tolerance:
        raise ExportError(f"parity check failed: max |Δprob| = {diff:.3g} >= {tolerance:g}; nothing written")
    parity: dict[str, Any] = {"max_abs_diff": diff, "tolerance": tolerance, "batch_sizes": list(batch_sizes)}
    if with_embeddings:
        assert isinstance(graph, ExportModel)
        emb = embedding_max_diff(graph, data, size, batch_sizes=batch_sizes, seed=seed)
        if not emb < EMBEDDING_TOLERANCE:
            raise ExportError(f"parity check failed: embeddings differ by {emb:.3g} (relative) >= "
                              f"{EMBEDDING_TOLERANCE:g}; nothing written")  # fmt: skip
        parity |= {"embeddings_max_rel_diff": emb, "embeddings_tolerance": EMBEDDING_TOLERANCE}
    log.info("parity OK: %s", parity)
    return data, parity


def _drift_zip(options: DriftOptions, meta: dict[str, Any]) -> Path:
    zip_path = options.zip_path or _data_zip(meta)
    if not zip_path or not Path(zip_path).is_file():
        raise ExportError(
            f"drift reference: dataset zip {zip_path!r} not found (it is computed on the checkpoint's own val and "
            "test splits); pass drift.zip_path=PATH, or drift.enabled=false to export a model without monitoring"
        )
    return Path(zip_path)


def _with_reference(sidecar: dict[str, Any], data: bytes, zip_path: Path, options: DriftOptions) -> dict[str, Any]:
    """``sidecar`` plus the drift reference of the model ``data`` (computed with ONNX Runtime on that very graph)."""
    size = int(sidecar["preprocess"]["image_size"])
    try:
        reference = drift_reference(
            onnx_session(data), zip_path, sidecar["class_names"], size,
            window_sizes=options.window_sizes, alpha=options.alpha, n_windows=options.n_windows,
        )  # fmt: skip
    except ValueError as exc:
        raise ExportError(f"drift reference: {exc}") from exc
    return sidecar | {SIDECAR_KEY: reference}


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
    drift: DriftOptions | None = None,
) -> dict[str, Any]:
    """Export, check parity, then write ``output``, its ``.json`` sidecar (and thumbnails); returns the sidecar.

    ``quantize=True`` also writes ``<stem>.int8.onnx`` (+ sidecar), calibrated on the train split of
    ``calibration_zip`` (default: the checkpoint's own dataset) and compared with fp32 on its val split.
    ``drift`` (default ``DriftOptions()``): the drift reference and thumbnails; see ``DriftOptions``.
    """
    ckpt_path, output, drift = Path(ckpt_path), Path(output), drift or DriftOptions()
    if output.suffix != ".onnx":
        raise ExportError(f"output={output}: must end in .onnx")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter={exporter!r}: choose one of {EXPORTERS}")
    int8_path = output.with_suffix(".int8.onnx")
    thumbs = drift.enabled and drift.thumbnails
    _refuse_overwrite([output, sidecar_path(output), *((int8_path, sidecar_path(int8_path)) if quantize else ()),
                       *((thumbs_path(output),) if thumbs else ())], overwrite)  # fmt: skip

    classifier, meta = load_checkpoint(ckpt_path)
    check_preprocess_version(classifier.spec, ckpt_path)
    size = classifier.spec.image_size
    log.info("exporting %s (%s, %d classes, %d px) with the %s exporter", ckpt_path, meta["model_name"],
             len(classifier.class_names), size, exporter)  # fmt: skip
    data, parity = _export_checked(
        classifier, opset=opset, exporter=exporter, tolerance=parity_tolerance, batch_sizes=parity_batch_sizes,
        seed=seed,
    )  # fmt: skip
    sidecar = _sidecar(data, meta, ckpt_path, exporter, parity)
    zip_path = _drift_zip(drift, meta) if drift.enabled else None
    if zip_path is not None:
        sidecar = _with_reference(sidecar, data, zip_path, drift)

    int8 = _quantize(data, size, calibration_zip or _data_zip(meta), calibration_images) if quantize else None
    if thumbs and zip_path is not None:
        sidecar["thumbnails"] = write_thumbnails(thumbs_path(output), zip_path, sidecar["class_names"], size)
    write_bytes_atomic(output, data)
    write_json_atomic(sidecar_path(output), sidecar)
    log.info("wrote %s (%.1f MB) and %s", output, len(data) / 1e6, sidecar_path(output))
    if int8 is not None:
        int8_sidecar = _int8_sidecar(sidecar, *int8)
        if zip_path is not None:  # the int8 model answers a little differently: its own reference
            int8_sidecar = _with_reference(int8_sidecar, int8[0], zip_path, drift)
        _write_int8(int8_path, int8_sidecar, int8[0])
    return sidecar


def _data_zip(meta: dict[str, Any]) -> str | None:
    return ((meta.get("config") or {}).get("data") or {}).get("zip_path")


def _quantize(data: bytes, size: int, zip_path: str | Path | None, images: int) -> tuple[bytes, dict[str, Any]]:
    try:
        return quantize_with_report(data, size, zip_path, images)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


def _int8_sidecar(fp32_sidecar: dict[str, Any], data: bytes, quantization: dict[str, Any]) -> dict[str, Any]:
    """fp32's sidecar without what is fp32's own (parity, drift reference); thumbnails are shared (same file)."""
    sidecar = {k: v for k, v in fp32_sidecar.items() if k not in ("parity", SIDECAR_KEY)}
    return sidecar | {"onnx_sha256": hashlib.sha256(data).hexdigest(), "quantization": quantization}


def _write_int8(path: Path, sidecar: dict[str, Any], data: bytes) -> None:
    write_bytes_atomic(path, data)
    write_json_atomic(sidecar_path(path), sidecar)
    log.info("wrote %s (%.1f MB); vs fp32: %s", path, len(data) / 1e6, sidecar["quantization"]["vs_fp32"])
