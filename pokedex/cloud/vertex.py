"""A Vertex AI CustomJob spec for training in the cloud, built from ``conf/cloud/vertex.yaml``, and its submission.

The spec is what ``gcloud ai custom-jobs create --config=FILE`` takes (a ``CustomJobSpec``): one worker pool
running the CUDA training image, whose command first fetches the W&B key from Secret Manager
(``python -m pokedex.cloud exec``, see :mod:`pokedex.cloud.secrets`) and then runs ``python -m pokedex.train``.
Only the secret's name is in the spec, never a value.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pokedex.config import CONFIG_PATH

PLACEHOLDER = "YOUR-"
SECRET_ENV = "WANDB_API_KEY"


class CloudConfigError(ValueError):
    """The cloud config cannot be composed, or still holds placeholders where a real job needs values."""


def load_config(overrides: Sequence[str] = (), name: str = "vertex") -> dict[str, Any]:
    """``conf/cloud/<name>.yaml`` with ``key=value`` overrides, every interpolation resolved."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            cfg: DictConfig = compose(config_name=f"cloud/{name}", overrides=list(overrides))
        if cfg.job_name is None:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
            cfg.job_name = f"pokedex-{cfg.experiment}-{stamp}"
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise CloudConfigError(f"conf/cloud/{name}.yaml: {exc}") from exc
    except Exception as exc:  # Hydra's override parser and config search raise their own types
        if type(exc).__module__.startswith("hydra"):
            raise CloudConfigError(f"conf/cloud/{name}.yaml: {exc}") from exc
        raise
    finally:
        GlobalHydra.instance().clear()


def secret_resource(cfg: dict[str, Any]) -> str:
    return f"projects/{cfg['project']}/secrets/{cfg['wandb_secret']}/versions/latest"


def train_args(cfg: dict[str, Any]) -> list[str]:
    """``python -m pokedex.train`` arguments: the experiment, the dataset and run folder on the FUSE mount."""
    return [
        "python",
        "-m",
        "pokedex.train",
        f"experiment={cfg['experiment']}",
        f"data.zip_path={cfg['data_zip']}",
        "data.source=null",  # train on the uploaded zip as it is; never rebuild it on the mount
        f"hydra.run.dir={cfg['run_dir']}",
        *cfg["train_args"],
    ]


def job_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``CustomJobSpec`` (camelCase, as ``gcloud ai custom-jobs create --config`` reads it)."""
    machine: dict[str, Any] = {"machineType": cfg["machine_type"]}
    if cfg["accelerator_count"]:
        machine |= {"acceleratorType": cfg["accelerator_type"], "acceleratorCount": int(cfg["accelerator_count"])}
    secret_command = ["python", "-m", "pokedex.cloud", "exec", "--secret", f"{SECRET_ENV}={secret_resource(cfg)}"]
    scheduling: dict[str, Any] = {
        "strategy": "SPOT" if cfg["spot"] else "STANDARD",
        "restartJobOnWorkerRestart": bool(cfg["restart_on_preemption"]),
        "timeout": cfg["timeout"],
    }
    output_prefix = cfg["run_dir"].replace("/gcs/", "gs://", 1)
    return {
        "workerPoolSpecs": [
            {
                "machineSpec": machine,
                "replicaCount": 1,
                "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": int(cfg["boot_disk_gb"])},
                "containerSpec": {
                    "imageUri": cfg["image_uri"],
                    "command": [*secret_command, "--"],
                    "args": train_args(cfg),
                    "env": [{"name": "POKEDEX_JOB_NAME", "value": cfg["job_name"]}],
                },
            }
        ],
        "serviceAccount": cfg["service_account"],
        "scheduling": scheduling,
        # Vertex exposes it to the container as AIP_MODEL_DIR / AIP_CHECKPOINT_DIR; the run folder itself is
        # written through the FUSE mount (hydra.run.dir above), the same place.
        "baseOutputDirectory": {"outputUriPrefix": output_prefix},
    }


def render(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False, width=120)


def placeholders(cfg: dict[str, Any]) -> list[str]:
    return sorted(key for key, value in cfg.items() if isinstance(value, str) and value.startswith(PLACEHOLDER))


def gcloud_command(cfg: dict[str, Any], config_file: Path) -> list[str]:
    return [
        "gcloud",
        "ai",
        "custom-jobs",
        "create",
        f"--project={cfg['project']}",
        f"--region={cfg['region']}",
        f"--display-name={cfg['job_name']}",
        f"--config={config_file}",
    ]


def submit(cfg: dict[str, Any], spec: dict[str, Any]) -> int:
    """Create the job with the gcloud CLI; its exit status."""
    missing = placeholders(cfg)
    if missing:
        raise CloudConfigError(
            f"set {', '.join(missing)} before submitting (they still hold {PLACEHOLDER}... placeholders): "
            "pass key=value overrides or the environment variables named in conf/cloud/vertex.yaml"
        )
    if shutil.which("gcloud") is None:
        raise CloudConfigError(
            "gcloud not found: install the Google Cloud CLI and `gcloud auth login`, "
            "or run with --dry-run to print the job spec"
        )
    with tempfile.TemporaryDirectory(prefix="pokedex-vertex-") as tmp:
        config_file = Path(tmp) / "job.yaml"
        config_file.write_text(render(spec), encoding="utf-8")
        return subprocess.run(gcloud_command(cfg, config_file), check=False).returncode
