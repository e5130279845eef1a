"""Running the real Hydra entry points: composed in-process like ``python -m pokedex.<entry>``, or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

from pokedex.config import CONFIG_PATH

REPO = Path(__file__).resolve().parents[2]


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose like ``python -m pokedex.<entry>`` would, with the run dir pointed at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=[*overrides, f"hydra.run.dir={output_dir}"],
            return_hydra_config=True,
        )
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the job's config has no hydra node
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def synthetic_overrides(zip_path: Path, *extra: str) -> list[str]:
    """A tiny, fast training setup on the synthetic zip."""
    return [
        "data=synthetic",
        f"data.zip_path={zip_path}",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_model_summary=false",
        "trainer.num_sanity_val_steps=0",
        "callbacks.progress_bar=null",
        *extra,
    ]


def run_module(module: str, *args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` exactly as a user would; output captured for assertions."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
