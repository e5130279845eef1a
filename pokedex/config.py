"""Hydra/OmegaConf glue shared by the entry points."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

CONFIG_PATH = str(Path(__file__).resolve().parent.parent / "conf")


def register_resolvers() -> None:
    """Resolvers used in conf/; idempotent so every entry point can call it."""
    OmegaConf.register_new_resolver("path_stem", lambda p: Path(str(p)).stem, replace=True)
