"""Shared fixtures: a synthetic dataset zip, and a way to run the real Hydra entry points in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from pokedex.config import register_resolvers
from tests.helpers.hydra import compose_config

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
register_resolvers()


@pytest.fixture(scope="session")
def synthetic_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pokedex.data.sources.synthetic import make_synthetic_zip

    path = tmp_path_factory.mktemp("data") / "synthetic.zip"
    make_synthetic_zip(path, num_classes=6, animations_per_class=4, frames_per_animation=3, image_size=32)
    return path


@pytest.fixture
def hydra_config() -> Iterator:
    yield compose_config
    GlobalHydra.instance().clear()
