"""Every option of every config group composes, and everything that can be built on a CPU is instantiated.

A typo in a `_target_`, a renamed argument or a stale interpolation fails here, not in someone's sweep.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pokedex.config import CONFIG_PATH

CONF = Path(CONFIG_PATH)
CPU_TRAINERS = {"default", "cpu", "ddp_sim"}  # gpu and ddp need CUDA devices to instantiate


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def _targets(node: DictConfig) -> list[DictConfig]:
    """Every sub-node with a `_target_` that is not itself inside one (those are built by their parent)."""
    found = []
    for value in node.values():
        if isinstance(value, DictConfig):
            found += [value] if "_target_" in value else _targets(value)
    return found


@pytest.mark.parametrize("option", options("data"))
def test_data_options_instantiate(option: str, hydra_config, tmp_path: Path) -> None:
    overrides = [f"data={option}"] + (["data.path=my/images.zip"] if option == "zip" else [])
    cfg = hydra_config("train", overrides, tmp_path)
    datamodule = instantiate(cfg.data)
    assert datamodule.batch_size == cfg.data.batch_size
    source = instantiate(cfg.data.source)  # builds nothing yet: build() is prepare's job
    assert (
        type(source).__name__ == {"sprites": "SpriteSource", "zip": "ZipSource", "synthetic": "SyntheticSource"}[option]
    )


@pytest.mark.parametrize("option", options("model"))
def test_model_options_instantiate(option: str, hydra_config, tmp_path: Path) -> None:
    cfg = hydra_config("train", [f"model={option}"], tmp_path)
    model = instantiate(cfg.model, class_names=["a", "b", "c"], image_size=32, _convert_="all")
    assert model.hparams.name == cfg.model.name and len(model.class_names) == 3


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options(option: str, hydra_config, tmp_path: Path) -> None:
    cfg = hydra_config("train", [f"trainer={option}"], tmp_path)
    if option in CPU_TRAINERS:
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, enable_progress_bar=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs
    else:
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("group", ["logger", "callbacks"])
def test_logger_and_callback_options_instantiate(group: str, hydra_config, tmp_path: Path) -> None:
    for option in options(group):
        cfg = hydra_config("train", [f"{group}={option}"], tmp_path / option)
        built = [instantiate(node) for node in _targets(cfg[group] or OmegaConf.create({}))]
        assert all(obj is not None for obj in built)


@pytest.mark.parametrize("option", options("experiment"))
def test_experiments_compose_with_their_models(option: str, hydra_config, tmp_path: Path) -> None:
    cfg = hydra_config("train", [f"experiment={option}"], tmp_path)
    instantiate(cfg.model, class_names=["a", "b"], image_size=cfg.data.image_size, _convert_="all")
    assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("option", options("sweep"))
def test_sweeps_compose(option: str, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("train", overrides=[f"sweep={option}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.sweeper.params or cfg.hydra.sweeper.get("search_space") or cfg.hydra.sweeper


@pytest.mark.parametrize(
    ("entry", "overrides"),
    [
        ("prepare", []),
        ("evaluate", ["ckpt_path=x.ckpt"]),
        ("export", ["ckpt_path=x.ckpt"]),
        ("predict", ["inputs=some/folder"]),
        ("serve", ["max_batch_size=8"]),
        ("pipeline", []),
    ],
)
def test_entry_point_configs_compose(entry: str, overrides: list[str], hydra_config, tmp_path: Path) -> None:
    import pokedex.serve.__main__  # noqa: F401  (registers the serve settings schema, as `python -m` does)

    cfg = hydra_config(entry, overrides, tmp_path)
    assert OmegaConf.to_container(cfg, resolve=True)
