"""The real entry points on synthetic data: train, evaluate, resume, sweeps, DDP on CPU, W&B offline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from pokedex.data.archive import read_index
from pokedex.evaluate import evaluate
from pokedex.model.backbone import PretrainedWeightsError, create_backbone
from pokedex.model.checkpoint import load_classifier, read_checkpoint
from pokedex.model.classifier import CHECKPOINT_KEY
from pokedex.train import train
from tests.helpers.hydra import run_module, synthetic_overrides


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv3_small_100"])
def test_fast_dev_run(model: str, synthetic_zip: Path, tmp_path: Path, hydra_config) -> None:
    cfg = hydra_config(
        "train", synthetic_overrides(synthetic_zip, f"model={model}", "+trainer.fast_dev_run=true"), tmp_path
    )
    summary = train(cfg)
    assert summary["global_step"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == {}


@pytest.fixture(scope="module")
def trained_run(synthetic_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.hydra import compose_config

    out = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", synthetic_overrides(synthetic_zip, "trainer.max_epochs=1", "logger=csv"), out)
    train(cfg)
    return out


def test_train_writes_self_describing_checkpoints(trained_run: Path, synthetic_zip: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"test/top1", "test/top5", "test/macro_f1"}
    assert 0.0 <= metrics["best_val_top1"] <= 1.0
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = read_checkpoint(trained_run / "checkpoints" / name)  # weights_only: no pickled code
        meta = checkpoint[CHECKPOINT_KEY]
        assert meta["class_names"] == [f"Shape{i:02d}" for i in range(6)]
        assert meta["preprocess"]["image_size"] == 32 and meta["preprocess"]["channels"] == "RGBA"
        assert meta["config"]["data"]["zip_path"] == str(synthetic_zip)
    assert (trained_run / "csv" / "metrics.csv").is_file()


def test_train_logs_epoch_time_and_throughput(trained_run: Path, synthetic_zip: Path) -> None:
    with (trained_run / "csv" / "metrics.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row.get("time/epoch_s")]
    assert len(rows) == 1  # one epoch, one row
    seconds, rate = float(rows[0]["time/epoch_s"]), float(rows[0]["time/images_per_s"])
    batch = read_checkpoint(trained_run / "checkpoints" / "last.ckpt")[CHECKPOINT_KEY]["config"]["data"]["batch_size"]
    seen = len(read_index(synthetic_zip).split("train")) // batch * batch  # the last, partial batch is dropped
    assert seconds > 0 and rate * seconds == pytest.approx(seen, rel=1e-3)


def test_train_then_evaluate_round_trip(trained_run: Path, tmp_path: Path, hydra_config) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    cfg = hydra_config("evaluate", [f"ckpt_path={ckpt}", "num_workers=0", f"output_dir={tmp_path}"], tmp_path)
    metrics = evaluate(cfg)
    for name in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "mistakes.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert set(written) >= {"top1", "top5", "macro_f1", "ece"} and written["samples"] == 18  # 6 classes × 3 frames
    # evaluate agrees with the test numbers Lightning's torchmetrics computed on the same checkpoint
    trained = json.loads((trained_run / "metrics.json").read_text())["test"]
    assert metrics["top1"] == pytest.approx(trained["test/top1"], abs=1e-6)
    assert metrics["top5"] == pytest.approx(trained["test/top5"], abs=1e-6)
    rows = (tmp_path / "per_class.csv").read_text().splitlines()
    assert rows[0] == "index,class,support,accuracy" and len(rows) == 7
    assert (tmp_path / "mistakes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_from_last_continues_training(
    trained_run: Path, synthetic_zip: Path, tmp_path: Path, hydra_config
) -> None:
    last = trained_run / "checkpoints" / "last.ckpt"
    steps_before = read_checkpoint(last)["global_step"]
    overrides = synthetic_overrides(synthetic_zip, "trainer.max_epochs=2", f"ckpt_path={last}", "logger=none")
    summary = train(hydra_config("train", overrides, tmp_path))
    assert summary["epochs"] == 2
    assert summary["global_step"] == 2 * steps_before  # one more epoch, not a restart from zero
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_loaded_classifier_predicts_like_trained(trained_run: Path) -> None:
    model = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    batch = torch.randint(0, 256, (3, 4, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        assert model(batch).shape == (3, 6)


def test_wandb_offline_run_produces_run_dir(synthetic_zip: Path, tmp_path: Path, hydra_config, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    train(hydra_config("train", synthetic_overrides(synthetic_zip, "logger=wandb"), tmp_path))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds its event log"
    assert list((runs[0] / "files" / "media" / "images").rglob("*.png")), "sample images were logged"


def test_pretrained_offline_fails_with_instructions(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsError, match=r"model\.pretrained=/path/to/weights"):
        create_backbone("resnet18", 10, pretrained=True)


def test_pretrained_from_local_file(tmp_path: Path) -> None:
    source = create_backbone("resnet18", 10)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)
    model = create_backbone("resnet18", 10, pretrained=str(weights))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    with pytest.raises(PretrainedWeightsError, match="file not found"):
        create_backbone("resnet18", 10, pretrained=str(tmp_path / "missing.pth"))


def test_bad_overrides_fail_with_hydra_errors() -> None:
    result = run_module("pokedex.train", "model=no_such_model", "data=synthetic")
    assert result.returncode != 0
    assert "Could not find 'model/no_such_model'" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_module("pokedex.train", "model.name=not_a_timm_model", "data=synthetic", "logger=none")
    assert result.returncode != 0
    assert "model.name='not_a_timm_model' is not a timm model" in result.stderr


def _summary(sweep_root: Path) -> list[dict]:
    (sweep_dir,) = list(sweep_root.iterdir())
    assert (sweep_dir / "summary.md").is_file() and (sweep_dir / "best.yaml").is_file()
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["objective"] == "best_val_top1" and 0.0 <= best["value"] <= 1.0
    import csv

    return list(csv.DictReader((sweep_dir / "summary.csv").open()))


def _sweep_args(synthetic_zip: Path, root: Path) -> list[str]:
    return [
        "data=synthetic",
        f"data.zip_path={synthetic_zip}",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "logger=none",
        f"hydra.sweep.dir={root}/sweep",
    ]


def test_grid_multirun_writes_summary(synthetic_zip: Path, tmp_path: Path) -> None:
    result = run_module(
        "pokedex.train",
        "-m",
        "sweep=grid",
        "model=resnet18",
        "model.lr=1e-3,3e-3",
        *_sweep_args(synthetic_zip, tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _summary(tmp_path)
    assert sorted(t["overrides"].split()[0] for t in trials) == ["model.lr=0.001", "model.lr=0.003"]
    assert all(t["status"] == "ok" for t in trials)


def test_optuna_multirun_writes_summary(synthetic_zip: Path, tmp_path: Path) -> None:
    result = run_module(
        "pokedex.train", "-m", "sweep=optuna", "hydra.sweeper.n_trials=2", *_sweep_args(synthetic_zip, tmp_path)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_summary(tmp_path)) == 2
    assert (tmp_path / "sweep" / "optimization_results.yaml").is_file()


def test_ddp_sim_trains_on_two_processes(synthetic_zip: Path, tmp_path: Path) -> None:
    result = run_module(
        "pokedex.train",
        *_sweep_args(synthetic_zip, tmp_path)[:-1],
        "trainer=ddp_sim",
        f"hydra.run.dir={tmp_path}",
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["test/top1"] >= 0.0
    assert metrics["best_checkpoint"] == "checkpoints/best.ckpt" and (tmp_path / "checkpoints" / "best.ckpt").is_file()
    # the launcher's own loop counters stay at 0 under ddp_spawn; the summary must still count the work done
    assert metrics["epochs"] == 1 and metrics["global_step"] > 0
