"""The DVC pipeline: dvc.yaml, params.yaml and .dvc/config agree with each other and with the code.

The fast tests check the definitions only (no stage runs). The slow ones copy the repository into a temporary
directory and run the real thing on a small parameter set: `dvc repro` end to end, `dvc exp run -S model.lr=...`
(which must rerun train/evaluate/export only) and a `dvc push` / `dvc pull` round trip through the local remote.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pokedex import segmenter
from tests.helpers.hydra import REPO

STAGES = ["fetch", "prepare", "train", "evaluate", "export"]
# Values of params.yaml that no stage tracks, because they change how fast things run, never what they produce.
SPEED_ONLY = {
    "task",
    "data.num_workers",
    "data.eval_batch_size",
    "data.pin_memory",
    "data.persistent_workers",
    "data.prefetch_factor",
    "data.cache",
    "data.cache_dir",
    "data.source.workers",
}
# The entry point each stage runs; the `_target_`s it instantiates are found in params.yaml.
STAGE_MODULES = {
    "prepare": ("pokedex.prepare", ["data.source"]),
    "train": ("pokedex.train", ["data", "model", "callbacks", "logger"]),
    "evaluate": ("pokedex.evaluate", ["data"]),  # the datamodule comes from the checkpoint's config
    "export": ("pokedex.export", []),
}
# The small parameter set of the slow tests (the same keys `dvc exp run -S` takes).
SMALL = ["data.source.max_classes=10", "trainer.max_epochs=1"]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def leaves(tree: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


def stage_params(stage: dict[str, Any]) -> dict[str, list[str]]:
    """``{params file: [keys]}`` of one dvc.yaml stage (bare keys belong to params.yaml)."""
    result: dict[str, list[str]] = {}
    for entry in stage.get("params", []):
        if isinstance(entry, str):
            result.setdefault("params.yaml", []).append(entry)
        else:
            for file, keys in entry.items():
                result.setdefault(file, []).extend(keys)
    return result


def paths_of(entries: list[Any]) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def declared_outputs(dvc_yaml: dict[str, Any]) -> list[str]:
    stages = dvc_yaml["stages"].values()
    return [p for s in stages for kind in ("outs", "metrics", "plots") for p in paths_of(s.get(kind, []))]


@pytest.fixture(scope="module")
def dvc_yaml() -> dict[str, Any]:
    return load_yaml(REPO / "dvc.yaml")


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return load_yaml(REPO / "params.yaml")


def compose_params(repo: Path, overrides: list[str], out: Path) -> None:
    """Compose params exactly as `dvc exp run -S` does (same function, same `.dvc/config` [hydra] section)."""
    from dvc.repo import Repo
    from dvc.utils.hydra import compose_and_dump
    from hydra.core.global_hydra import GlobalHydra

    with Repo(str(repo)) as dvc_repo:
        hydra = dvc_repo.config["hydra"]
    assert hydra["enabled"], ".dvc/config must enable Hydra composition"
    GlobalHydra.instance().clear()
    compose_and_dump(out, str(repo / hydra["config_dir"]), None, hydra["config_name"], str(repo), overrides)
    GlobalHydra.instance().clear()


# ---------------------------------------------------------------------------------------------------------------
# Fast: the definitions
# ---------------------------------------------------------------------------------------------------------------


def test_params_yaml_is_the_composed_pipeline_config(tmp_path: Path, params: dict[str, Any]) -> None:
    """params.yaml is generated from conf/ and must not drift from it (regenerate with `make params`)."""
    compose_params(REPO, [], tmp_path / "params.yaml")
    assert load_yaml(tmp_path / "params.yaml") == params, "params.yaml is stale: run `make params`"
    assert params["paths"]["output_dir"] == "models/train"


def test_dvc_reads_the_pipeline(dvc_yaml: dict[str, Any]) -> None:
    """DVC itself accepts dvc.yaml (schema, templating, params files) and sees the expected chain of stages."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        stages = {stage.name: stage for stage in repo.index.stages}
        graph = repo.index.graph
        edges = {(a.name, b.name) for a, b in graph.edges}  # (stage, stage it depends on)
        config = repo.config
    assert sorted(stages) == sorted(STAGES)
    assert {("prepare", "fetch"), ("train", "prepare"), ("evaluate", "train"), ("export", "train")} <= edges
    assert ("evaluate", "prepare") in edges  # evaluate reads the dataset zip too
    assert config["core"]["remote"] == "local"
    assert config["remote"]["gcs"]["url"].startswith("gs://")
    assert not Path(config["remote"]["local"]["url"]).resolve().is_relative_to(REPO)  # the store is outside


def test_every_param_is_tracked_by_a_stage_or_speed_only(dvc_yaml: dict[str, Any], params: dict[str, Any]) -> None:
    tracked: list[str] = []
    for name, stage in dvc_yaml["stages"].items():
        for file, keys in stage_params(stage).items():
            tree = params if file == "params.yaml" else load_yaml(REPO / file)
            for key in keys:
                lookup(tree, key)  # KeyError: the stage declares a param that does not exist
            if file == "params.yaml":
                tracked.extend(keys)
        assert name == "fetch" or stage.get("params"), f"stage {name} declares no params"
    untracked = [
        leaf
        for leaf in leaves(params)
        if leaf not in SPEED_ONLY and not any(leaf == k or leaf.startswith(k + ".") for k in tracked)
    ]
    assert not untracked, f"params no stage depends on (add them to a stage, or to SPEED_ONLY): {untracked}"


def test_output_paths_agree_with_params(dvc_yaml: dict[str, Any], params: dict[str, Any]) -> None:
    stages = dvc_yaml["stages"]
    ckpt = params["callbacks"]["model_checkpoint"]
    csv_logger = params["logger"]["csv"]
    best = f"{ckpt['dirpath']}/{ckpt['filename']}.ckpt"
    assert paths_of(stages["fetch"]["outs"]) == [params["data"]["source"]["download_dir"]]
    assert params["data"]["source"]["download_dir"] in stages["prepare"]["deps"]
    assert paths_of(stages["prepare"]["outs"]) == [params["data"]["zip_path"]]
    assert paths_of(stages["train"]["outs"]) == [best]
    assert paths_of(stages["train"]["metrics"]) == [f"{params['paths']['output_dir']}/metrics.json"]
    curves = os.path.join(csv_logger["save_dir"], csv_logger["name"], csv_logger["version"], "metrics.csv")
    assert paths_of(stages["train"]["plots"]) == [curves]
    for plot in dvc_yaml["plots"]:
        (definition,) = plot.values()
        assert list(definition["y"]) == [curves]
    for name in ("evaluate", "export"):
        assert best in stages[name]["deps"]
        assert f"ckpt_path={best}" in stages[name]["cmd"]
    assert f"output_dir={Path(paths_of(stages['evaluate']['metrics'])[0]).parent}" in stages["evaluate"]["cmd"]
    assert {"template": "confusion", "x": "predicted", "y": "actual"}.items() <= stages["evaluate"]["plots"][0][
        "reports/confusion.csv"
    ].items()
    assert ckpt["save_last"] is False  # nothing in models/ that dvc.yaml does not declare


def _module_file(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _pokedex_imports(module: str) -> set[str]:
    """The pokedex modules that ``module`` imports, directly or not (read from the source, nothing is run)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or (path := _module_file(name)) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                todo.append(base)
                todo.extend(f"{base}.{alias.name}" for alias in node.names)  # `from pokedex import io`
    return {m for m in seen if m.split(".")[0] == "pokedex"}


PACKAGE_DATA = {"pokedex.segmenter": segmenter.SEGMENTER_FILE}  # files a module reads: its output depends on them


@pytest.mark.parametrize("stage_name", list(STAGE_MODULES))
def test_stage_code_deps_are_exactly_what_the_stage_imports(
    stage_name: str, dvc_yaml: dict[str, Any], params: dict[str, Any]
) -> None:
    """A code change reruns the stages that run that code, and only those (package __init__ files aside)."""
    entry, target_roots = STAGE_MODULES[stage_name]
    modules = _pokedex_imports(entry)
    for root in target_roots:
        subtree = lookup(params, root)
        for leaf in leaves(subtree):
            if leaf.endswith("_target_") and str(value := lookup(subtree, leaf)).startswith("pokedex."):
                modules |= _pokedex_imports(value.rsplit(".", 1)[0])
    expected = {_module_file(m).relative_to(REPO).as_posix() for m in modules if _module_file(m).name != "__init__.py"}
    expected |= {f"pokedex/{data}" for module, data in PACKAGE_DATA.items() if module in modules}
    declared = {d for d in dvc_yaml["stages"][stage_name]["deps"] if d.startswith("pokedex/")}
    assert declared == expected


def test_fetch_is_pinned_by_its_params_alone(dvc_yaml: dict[str, Any]) -> None:
    """The tarballs are verified against pinned sha512s, so no code change can alter them: no code deps."""
    fetch = dvc_yaml["stages"]["fetch"]
    assert "deps" not in fetch
    assert {"data.source.sprites_integrity", "data.source.names_integrity"} <= set(fetch["params"])


# ---------------------------------------------------------------------------------------------------------------
# Slow: the real pipeline in a temporary copy
# ---------------------------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """Stage commands call `python`: make it this interpreter (the project's venv)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def dvc(repo: Path, *args: str, timeout: int = 900) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{output[-6000:]}"
    return output


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=pokedex-test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]
    result = subprocess.run(["git", *identity, *args], cwd=repo, capture_output=True, text=True, check=True)
    return result.stdout


def sha256_tree(repo: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of every file under each path (a path may be a directory)."""
    result = {}
    for p in paths:
        target = repo / p
        for f in sorted([target] if target.is_file() else (x for x in target.rglob("*") if x.is_file())):
            result[f.relative_to(repo).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return result


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository (what git would commit) where `dvc repro` ran on the small parameter set."""
    raw = REPO / "data" / "raw"
    has_tarballs = raw.is_dir() and any(raw.glob("*.tgz"))
    if shutil.which("git") is None:
        pytest.skip("needs git")
    if not has_tarballs and shutil.which("npm") is None:
        pytest.skip("needs data/raw/*.tgz or npm (and access to its registry) for the fetch stage")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.skip("needs a git checkout of the repository (its file list is what gets copied)")
    repo = tmp_path_factory.mktemp("dvc") / "pokedex"
    for rel in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, repo / rel)
    if has_tarballs:  # offline: the fetch stage finds them verified (or refetches with npm if they differ)
        shutil.copytree(raw, repo / "data" / "raw")
    git(repo, "init", "-q")
    compose_params(repo, SMALL, repo / "params.yaml")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "small parameter set")
    dvc(repo, "repro")
    return repo


@pytest.mark.slow
def test_dvc_repro_end_to_end(small_repo: Path) -> None:
    dvc_yaml = load_yaml(small_repo / "dvc.yaml")
    missing = [p for p in declared_outputs(dvc_yaml) if not (small_repo / p).exists()]
    assert not missing, f"declared outputs not produced: {missing}"
    assert "up to date" in dvc(small_repo, "status")
    metrics = dvc(small_repo, "metrics", "show", "--json")
    assert "reports/metrics.json" in metrics and "models/train/metrics.json" in metrics
    plots = dvc(small_repo, "plots", "show", "--json")
    for plot_id in ("accuracy", "loss", "models/train/csv/metrics.csv", "reports/confusion.csv", "confusion.png"):
        assert plot_id in plots
    with (small_repo / "reports" / "per_class.csv").open(encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 10  # the small set's classes


@pytest.mark.slow
def test_exp_run_new_learning_rate_reruns_only_train_evaluate_export(small_repo: Path) -> None:
    from pokedex.model.checkpoint import read_checkpoint
    from pokedex.model.classifier import CHECKPOINT_KEY

    git(small_repo, "add", "-A")
    git(small_repo, "commit", "-qm", "baseline", "--allow-empty")
    before = load_yaml(small_repo / "dvc.lock")["stages"]
    output = dvc(small_repo, "exp", "run", *(f"-S{o}" for o in [*SMALL, "model.lr=3e-4"]))
    for stage in ("fetch", "prepare"):
        assert f"Stage '{stage}' didn't change, skipping" in output
    for stage in ("train", "evaluate", "export"):
        assert f"Running stage '{stage}'" in output
    after = load_yaml(small_repo / "dvc.lock")["stages"]
    assert after["fetch"] == before["fetch"] and after["prepare"] == before["prepare"]
    assert after["train"]["params"]["params.yaml"]["model"]["lr"] == 3e-4
    # What the train stage actually trained with travels inside the checkpoint.
    config = read_checkpoint(small_repo / "models" / "best.ckpt")[CHECKPOINT_KEY]["config"]
    assert config["model"]["lr"] == 3e-4
    assert config["data"]["source"]["max_classes"] == 10
    table = dvc(small_repo, "exp", "show", "--csv", "--drop", ".*", "--keep", "^(Experiment|rev|model.lr|top1)$")
    rows = list(csv.DictReader(io.StringIO(table)))
    assert {row["model.lr"] for row in rows} >= {str(load_yaml(REPO / "params.yaml")["model"]["lr"]), "0.0003"}


@pytest.mark.slow
def test_push_pull_round_trip_restores_outputs_byte_identical(small_repo: Path) -> None:
    outputs = declared_outputs(load_yaml(small_repo / "dvc.yaml"))
    before = sha256_tree(small_repo, outputs)
    store = small_repo.parent / "pokedex-dvc-store"  # the default `local` remote, next to the repository
    dvc(small_repo, "push")
    assert store.is_dir() and any(store.rglob("*"))
    shutil.rmtree(small_repo / ".dvc" / "cache")
    for p in outputs:
        target = small_repo / p
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    dvc(small_repo, "pull")
    assert sha256_tree(small_repo, outputs) == before
    assert "up to date" in dvc(small_repo, "status")
