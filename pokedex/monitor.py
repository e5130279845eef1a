"""``python -m pokedex.monitor log=PATH reference=PATH [output=reports/drift.html]``: offline drift report.

Replays a prediction log through the service's calibrated drift monitor and adds Evidently's data-drift report;
see ``pokedex.evaluation.drift_report`` for what the page shows and why.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from pokedex.config import CONFIG_PATH, register_resolvers
from pokedex.evaluation.drift_report import build_report

log = logging.getLogger(__name__)
register_resolvers()


@hydra.main(config_path=CONFIG_PATH, config_name="monitor", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        summary = build_report(
            cfg.log,
            cfg.reference,
            cfg.output,
            window=cfg.window,
            evidently=cfg.evidently,
            reference_rows=cfg.reference_rows,
        )
    except ModuleNotFoundError as exc:
        raise SystemExit(f"monitor: {exc}; install the report tools with `pip install 'pokedex[monitor]'`") from None
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"monitor failed: {exc}") from None
    log.info("wrote %s: %s", cfg.output, summary)


if __name__ == "__main__":
    main()
