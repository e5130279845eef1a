"""``python -m pokedex.export ckpt_path=PATH [output=models/model.onnx]``: checkpoint → ONNX + JSON sidecar."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from pokedex.config import CONFIG_PATH, register_resolvers
from pokedex.inference.onnx_export import DriftOptions, ExportError, export_onnx

log = logging.getLogger(__name__)
register_resolvers()


def drift_options(cfg: DictConfig) -> DriftOptions:
    values = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(values, dict)
    values["window_sizes"] = tuple(int(w) for w in values.get("window_sizes", (200,)))
    return DriftOptions(**values)  # type: ignore[arg-type]


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
            drift=drift_options(cfg.drift),
        )
    except (ExportError, ValueError) as exc:  # PredictorError is a ValueError
        log.error("%s", exc)
        raise SystemExit(f"export failed: {exc}") from None


if __name__ == "__main__":
    main()
