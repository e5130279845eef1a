"""``python -m pokedex.serve model_path=PATH [host=127.0.0.1] [port=8000]``: run the service with uvicorn.

Exit status: 0 after a SIGTERM/Ctrl-C drain, 1 when the model fails to load (see ``pokedex.serve.server``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from pokedex.config import CONFIG_PATH, register_resolvers
from pokedex.serve.server import serve
from pokedex.serve.settings import ServeSettings

log = logging.getLogger("pokedex.serve")
register_resolvers()


def _register_schema() -> None:
    """``ServeSettings`` as the schema + defaults of serve.yaml (writable: the dataclass itself is frozen)."""
    schema = OmegaConf.structured(ServeSettings)
    OmegaConf.set_readonly(schema, False)
    ConfigStore.instance().store(name="serve_settings", node=schema)


_register_schema()


@hydra.main(config_path=CONFIG_PATH, config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    settings = ServeSettings.from_mapping(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if not Path(settings.model_path).is_file():
        raise SystemExit(
            f"serve: model_path={settings.model_path} not found. Export one with "
            "`python -m pokedex.export ckpt_path=<best.ckpt>` or pass a .ckpt/.onnx file."
        )
    log.info("serving %s on http://%s:%s", settings.model_path, settings.host, settings.port)
    status = serve(settings)  # 1 when the model failed to load (logged); 0 after a SIGTERM drain
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
