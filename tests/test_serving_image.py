"""The serving image's Python environment, without Docker: proof that ``requirements/serve.txt`` is enough.

Builds what ``docker/api.dockerfile`` builds, as a virtual environment: exactly ``requirements/serve.txt``
(plus the build tools the image installs), then the code from a copy of the image's build context installed
with ``--no-deps``. It checks that torch cannot be imported there, trains and exports a tiny model with the
full environment, serves it from the torch-free one with uvicorn on 127.0.0.1 and asks it for predictions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.images import png_bytes
from tests.helpers.serving import free_port, wait_http_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SERVE_REQUIREMENTS = ROOT / "requirements" / "serve.txt"
# What .dockerignore lets into the image's build context.
CONTEXT = ("pyproject.toml", "README.md", "requirements", "pokedex", "conf")
HEAVY = ("torch", "torchvision", "lightning", "timm", "torchmetrics", "wandb", "dvc", "matplotlib")


def _run(cmd: list[str], *, timeout: int = 900, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return result


def _copy_context(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dest.mkdir(parents=True, exist_ok=True)
    for name in CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, dest / name)
    if not (dest / "README.md").exists():  # pyproject.toml names it as the readme
        (dest / "README.md").write_text("# pokedex\n")
    return dest


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    reply = httpx.get(url, timeout=timeout)
    return reply.status_code, reply.content


def _post_files(url: str, field: str, files: list[tuple[str, bytes]], timeout: float = 30.0) -> tuple[int, bytes]:
    reply = httpx.post(url, files=[(field, (name, data, "image/png")) for name, data in files], timeout=timeout)
    return reply.status_code, reply.content


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(venv, app): a venv with exactly requirements/serve.txt and the code installed --no-deps from app/."""
    base = tmp_path_factory.mktemp("serving-image")
    app = _copy_context(base / "app")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    # The same two pip commands as docker/api.dockerfile.
    _run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(SERVE_REQUIREMENTS), "setuptools>=69", "wheel"],
        env=env,
    )
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(app)],
        env=env,
    )
    return venv, app


def test_serving_venv_has_no_torch(serving_venv: tuple[Path, Path]):
    venv, app = serving_venv
    python = str(venv / "bin" / "python")
    probe = "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in %r}))"
    found = json.loads(_run([python, "-c", probe % (HEAVY,)], cwd=app).stdout)
    assert not any(found.values()), f"heavy packages importable in the serving venv: {found}"
    freeze = _run([python, "-m", "pip", "freeze", "--exclude-editable"]).stdout.split()
    size = _dir_size(venv)
    print(f"\nserving venv: {size / 2**20:.0f} MiB installed, {len(freeze)} distributions: {' '.join(freeze)}")


def test_serving_code_imports_without_torch(serving_venv: tuple[Path, Path]):
    """torch is imported lazily, only to load a .ckpt: the ONNX path must not need it."""
    venv, app = serving_venv
    modules = "onnxruntime, pokedex.inference.loader, pokedex.drift, pokedex.serve"  # what the API image runs
    _run([str(venv / "bin" / "python"), "-c", f"import {modules}"], cwd=app)


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train a tiny model on the synthetic data and export it, with the full (torch) environment."""
    work = tmp_path_factory.mktemp("tiny-model")
    run_dir = work / "run"
    _run(
        [
            sys.executable, "-m", "pokedex.train",
            "data=synthetic", f"data.zip_path={work / 'synthetic.zip'}",
            "model=resnet18", "trainer=cpu", "trainer.max_epochs=1", "logger=none", "test=false",
            "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "callbacks.early_stopping=null",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
    )  # fmt: skip
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file(), sorted(str(p) for p in run_dir.rglob("*"))
    output = work / "model.onnx"
    _run([sys.executable, "-m", "pokedex.export", f"ckpt_path={checkpoint}", f"output={output}"], cwd=ROOT)
    assert output.is_file()
    return output


def test_torch_free_venv_serves_the_exported_model(serving_venv: tuple[Path, Path], exported_model: Path):
    venv, app = serving_venv
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = (exported_model.parent / "serve.log").open("w")
    server = subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", "pokedex.serve",
         f"model_path={exported_model}", "host=127.0.0.1", f"port={port}"],
        cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # /ready once the model is loaded and warmed up in the background; /health answers all along.
        try:
            wait_http_ready(base, process=server, timeout=120)
        except AssertionError as exc:
            log.flush()
            raise AssertionError(
                f"{exc}; the server's log:\n{(exported_model.parent / 'serve.log').read_text()}"
            ) from None
        assert _get(f"{base}/health")[0] == 200

        class_names = json.loads(exported_model.with_suffix(".json").read_text())["class_names"]
        status, body = _post_files(f"{base}/predict", "file", [("red.png", png_bytes((220, 30, 30, 255)))])
        assert status == 200, body
        predictions = json.loads(body)["predictions"]
        assert len(predictions) == min(5, len(class_names))
        assert all(p["label"] == class_names[p["index"]] for p in predictions), predictions
        probabilities = [p["probability"] for p in predictions]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001

        pngs = [("a.png", png_bytes((30, 200, 30, 255))), ("b.png", png_bytes((30, 30, 200, 255), size=64))]
        status, body = _post_files(f"{base}/predict/batch?top_k=2", "files", pngs)
        assert status == 200, body
        results = json.loads(body)["results"]
        assert [r["index"] for r in results] == [0, 1] and all(len(r["predictions"]) == 2 for r in results)

        status, body = _get(f"{base}/model")
        assert status == 200, body
        assert json.loads(body)["class_names"] == class_names

        status, body = _get(f"{base}/metrics")
        assert status == 200 and b"# TYPE" in body
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
