"""``python -m pokedex.cloud``: the Vertex AI CustomJob spec, its overrides, secrets and submission guards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pokedex.cloud import secrets, vertex
from pokedex.cloud.__main__ import main
from pokedex.serve.settings import ServeSettings
from tests.helpers.hydra import REPO

REAL = ["project=proj-1", "bucket=pokedex-data", "image_uri=registry.example/pokedex/train-cuda:v1", "job_name=j1"]


def spec_for(*overrides: str) -> dict[str, Any]:
    return vertex.job_spec(vertex.load_config([*REAL, *overrides]))


def test_dry_run_prints_a_custom_job_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dry-run", *REAL]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)
    assert set(spec) == {"workerPoolSpecs", "serviceAccount", "scheduling", "baseOutputDirectory"}
    (pool,) = spec["workerPoolSpecs"]
    assert pool["replicaCount"] == 1
    assert pool["machineSpec"] == {
        "machineType": "g2-standard-8",
        "acceleratorType": "NVIDIA_L4",
        "acceleratorCount": 1,
    }
    container = pool["containerSpec"]
    assert container["imageUri"] == "registry.example/pokedex/train-cuda:v1"
    assert container["command"][:4] == ["python", "-m", "pokedex.cloud", "exec"]
    assert container["command"][-1] == "--"
    args = container["args"]
    assert args[:3] == ["python", "-m", "pokedex.train"]
    for wanted in (
        "experiment=full",
        "resume=auto",
        "data.zip_path=/gcs/pokedex-data/pokedex/data/pokemon.zip",
        "hydra.run.dir=/gcs/pokedex-data/pokedex/runs/j1",
    ):
        assert wanted in args
    assert spec["scheduling"]["strategy"] == "SPOT"
    assert spec["scheduling"]["restartJobOnWorkerRestart"] is True
    assert spec["baseOutputDirectory"]["outputUriPrefix"] == "gs://pokedex-data/pokedex/runs/j1"
    assert spec["serviceAccount"] == "pokedex-train@proj-1.iam.gserviceaccount.com"


def test_the_spec_names_the_secret_and_never_holds_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "sk-do-not-leak-0123456789")
    text = vertex.render(spec_for())
    assert "sk-do-not-leak" not in text
    command = yaml.safe_load(text)["workerPoolSpecs"][0]["containerSpec"]["command"]
    assert "WANDB_API_KEY=projects/proj-1/secrets/wandb-api-key/versions/latest" in command
    env = yaml.safe_load(text)["workerPoolSpecs"][0]["containerSpec"]["env"]
    assert "WANDB_API_KEY" not in {e["name"] for e in env}


def test_overrides_reach_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    overrides = ["spot=false", "machine_type=a2-highgpu-1g", "accelerator_count=0"]
    assert main(["train", "--dry-run", *REAL, *overrides, "--", "trainer.max_epochs=3", "model.lr=1e-3"]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)
    assert spec["scheduling"]["strategy"] == "STANDARD"
    assert spec["workerPoolSpecs"][0]["machineSpec"] == {"machineType": "a2-highgpu-1g"}
    assert spec["workerPoolSpecs"][0]["containerSpec"]["args"][-2:] == ["trainer.max_epochs=3", "model.lr=1e-3"]


def test_a_generated_job_name_is_shared_by_the_run_folder_and_the_display_name() -> None:
    cfg = vertex.load_config(REAL[:3])
    assert cfg["job_name"].startswith("pokedex-full-")
    assert cfg["run_dir"].endswith("/runs/" + cfg["job_name"])
    command = vertex.gcloud_command(cfg, Path("/tmp/job.yaml"))
    assert f"--display-name={cfg['job_name']}" in command and "--config=/tmp/job.yaml" in command


def test_unknown_keys_are_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dry-run", "nonsense=1"]) == 2
    assert "conf/cloud/vertex.yaml" in capsys.readouterr().err


def test_submit_refuses_placeholders_and_a_missing_gcloud(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = vertex.load_config()
    with pytest.raises(vertex.CloudConfigError, match="bucket, image_uri, project"):
        vertex.submit(cfg, vertex.job_spec(cfg))
    monkeypatch.setattr(vertex.shutil, "which", lambda _: None)
    cfg = vertex.load_config(REAL)
    with pytest.raises(vertex.CloudConfigError, match="gcloud not found"):
        vertex.submit(cfg, vertex.job_spec(cfg))


def test_submit_runs_gcloud_with_the_rendered_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(command: list[str], check: bool) -> subprocess.CompletedProcess:
        config = next(a for a in command if a.startswith("--config="))
        seen["spec"] = yaml.safe_load(Path(config.split("=", 1)[1]).read_text())
        seen["command"] = command
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(vertex.shutil, "which", lambda _: "/usr/bin/gcloud")
    monkeypatch.setattr(vertex.subprocess, "run", fake_run)
    cfg = vertex.load_config(REAL)
    assert vertex.submit(cfg, vertex.job_spec(cfg)) == 0
    assert seen["command"][:4] == ["gcloud", "ai", "custom-jobs", "create"]
    assert "--project=proj-1" in seen["command"]
    assert seen["spec"] == vertex.job_spec(cfg)


def test_exec_exports_the_secret_and_replaces_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    resource = "projects/p/secrets/wandb-api-key/versions/latest"
    secrets.exec_with_secrets(
        [f"WANDB_API_KEY={resource}"],
        ["python", "-m", "pokedex.train"],
        fetch=lambda r: f"value-of-{r.split('/')[3]}",
        execvpe=lambda *a: calls.append(a),
    )
    ((program, argv, env),) = calls
    assert program == "python" and argv == ["python", "-m", "pokedex.train"]
    assert env["WANDB_API_KEY"] == "value-of-wandb-api-key"


@pytest.mark.parametrize("option", ["WANDB_API_KEY", "1X=projects/p/secrets/s/versions/1", "K=secrets/s"])
def test_exec_rejects_malformed_secret_options(option: str) -> None:
    with pytest.raises(ValueError, match="expected ENV=projects"):
        secrets.parse_secret(option)


def test_the_module_runs_as_a_user_would() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pokedex.cloud", "train", "--dry-run", *REAL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["scheduling"]["strategy"] == "SPOT"


def test_cloud_run_service_keeps_the_contract_and_matches_the_serving_config() -> None:
    service = yaml.safe_load((REPO / "deploy" / "cloudrun" / "service.yaml").read_text())
    serve = yaml.safe_load((REPO / "conf" / "serve.yaml").read_text())
    spec = service["spec"]["template"]["spec"]
    assert spec["containerConcurrency"] == ServeSettings().max_batch_size, "one micro-batch per instance"
    (container,) = spec["containers"]
    port = container["ports"][0]["containerPort"]
    assert container["startupProbe"]["httpGet"] == {"path": "/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port}
    assert "${oc.env:PORT" in serve["port"], "the app listens on Cloud Run's $PORT"
    assert not any(arg.startswith("port=") for arg in container["args"]), "a fixed port would ignore $PORT"
    assert f"intra_op_threads={container['resources']['limits']['cpu']}" in container["args"]
    assert container["image"] == "${IMAGE}" and spec["serviceAccountName"] == "${SERVICE_ACCOUNT}"
