"""``python -m pokedex.predict model_path=PATH inputs=[DIR|ZIP|FILE,...] [output=predictions.csv] [top_k=5]``.

Batch prediction with any model the service can serve (``.onnx`` or ``.ckpt``): writes one row per image
(path, top-k labels and probabilities, error) as CSV or JSON. Unreadable files are reported, never fatal.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from pokedex.config import CONFIG_PATH, register_resolvers
from pokedex.inference.batch_predict import collect_items, predict_items, write_results
from pokedex.inference.loader import load_predictor

log = logging.getLogger(__name__)
register_resolvers()


@hydra.main(config_path=CONFIG_PATH, config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
    try:
        items = collect_items(inputs, cfg.pattern)
        predictor = load_predictor(cfg.model_path, device=cfg.device)
        results = predict_items(predictor, items, top_k=cfg.top_k, batch_size=cfg.batch_size)
        path = write_results(results, cfg.output, cfg.top_k, overwrite=cfg.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # PredictorError is a ValueError
        raise SystemExit(f"predict: {exc}") from None
    errors = sum(r.error is not None for r in results)
    log.info("%d images → %s (%d unreadable)", len(results), path, errors)


if __name__ == "__main__":
    main()
