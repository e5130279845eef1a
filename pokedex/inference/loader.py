"""``load_predictor``: a model file → the right ``Predictor``, chosen by suffix. The one loader that serving,
evaluation and batch prediction share; torch is imported only for a ``.ckpt``, so the ONNX serving image needs none.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pokedex.inference.base import Predictor, PredictorError
from pokedex.inference.onnx_backend import OnnxPredictor

log = logging.getLogger(__name__)


def _load_checkpoint_predictor(path: Path, *, threads: int | None = None, device: str | None = None) -> Predictor:
    try:  # torch is imported only here, so the ONNX serving image needs none
        from pokedex.inference.torch_backend import TorchPredictor
    except ModuleNotFoundError as exc:
        raise PredictorError(
            f"{path}: serving a .ckpt needs PyTorch ({exc}); export it with `python -m pokedex.export "
            f"ckpt_path={path}` and serve the .onnx file instead"
        ) from exc
    return TorchPredictor.from_checkpoint(path, threads=threads, device=device)


def _load_onnx_predictor(path: Path, *, threads: int | None = None, device: str | None = None) -> Predictor:
    if device not in (None, "cpu"):
        log.warning("%s: ONNX models run on the CPU here (device=%s ignored)", path, device)
    return OnnxPredictor.from_path(path, threads=threads)


_LOADERS = {".ckpt": _load_checkpoint_predictor, ".onnx": _load_onnx_predictor}


def load_predictor(path: str | Path, *, threads: int | None = None, device: str | None = None) -> Predictor:
    """Pick the backend by suffix: ``.ckpt`` → PyTorch (on ``device``, default CPU), ``.onnx`` → ONNX Runtime."""
    path = Path(path)
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise PredictorError(f"{path}: unsupported model file; expected one of {sorted(_LOADERS)}")
    predictor = loader(path, threads=threads, device=device)
    log.info(
        "loaded %s (%s backend, %d classes, sha256 %s)",
        path,
        predictor.backend,
        predictor.num_classes,
        predictor.sha256[:12],
    )
    return predictor
