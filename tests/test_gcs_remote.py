"""The ``gcs`` DVC remote and the cloud job's ``gs://`` paths, for real but offline: a Cloud Storage emulator.

``gcp-storage-emulator`` (dev extra) serves the Cloud Storage JSON API on a free loopback port. A tiny DVC repo
(the project's ``.dvc/config``, so its ``gcs`` remote) is pointed at it with ``dvc remote modify --local``
(``endpointurl`` + anonymous login, what dvc-gs passes to gcsfs), pushes, loses its cache and outputs, pulls
them back and must get identical bytes. gcsfs also honours ``STORAGE_EMULATOR_HOST``, which the last test uses
to read the dataset zip at the ``gs://`` path that conf/cloud/vertex.yaml's job reads through its FUSE mount.

gcsfs's experimental bucket-type lookup (a gRPC call, on by default) cannot reach an emulator and retries for a
minute per operation: ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` turns it off for DVC, and the tests here use
the plain ``gcsfs.core.GCSFileSystem``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.hydra import REPO
from tests.test_dvc_pipeline import dvc, git, sha256_tree

pytestmark = pytest.mark.slow
pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator comes with the dev extra")
gcsfs_core = pytest.importorskip("gcsfs.core")

BUCKET = "pokedex-test-bucket"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """The emulator's URL, with the bucket created through the JSON API (as ``gcloud storage buckets create``)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # read by the dvc subprocesses' gcsfs
    port = _free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1", f"--port={port}"]
    process = subprocess.Popen([*command, "--in-memory", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/storage/v1/b", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline, "the storage emulator did not answer within 30 s"
                time.sleep(0.2)
        created = httpx.post(f"{url}/storage/v1/b", params={"project": "test"}, json={"name": BUCKET}, timeout=10)
        assert created.status_code == 200, created.text
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        patch.undo()


def _storage(url: str | None = None) -> gcsfs_core.GCSFileSystem:
    return gcsfs_core.GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True)


@pytest.fixture
def tiny_repo(tmp_path: Path, synthetic_zip: Path, emulator: str) -> Path:
    """A git + DVC repo with the project's remotes, the ``gcs`` one pointed at the emulator, and two outputs."""
    repo = tmp_path / "repo"
    (repo / "data" / "shards").mkdir(parents=True)
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the `gcs` remote as the project defines it
    shutil.copy(synthetic_zip, repo / "data" / "pokemon.zip")
    for i in range(3):
        (repo / "data" / "shards" / f"part-{i}.bin").write_bytes(bytes(range(256)) * (i + 1))
    dvc(repo, "add", "data/pokemon.zip", "data/shards")
    for key, value in (
        ("url", f"gs://{BUCKET}/pokedex"),
        ("endpointurl", emulator),
        ("allow_anonymous_login", "true"),
    ):
        dvc(repo, "remote", "modify", "--local", "gcs", key, value)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tiny dvc repo")
    return repo


def test_push_to_the_gcs_remote_and_pull_back_byte_identical(tiny_repo: Path, emulator: str) -> None:
    outputs = ["data/pokemon.zip", "data/shards"]
    before = sha256_tree(tiny_repo, outputs)
    assert len(before) == 4
    dvc(tiny_repo, "push", "-r", "gcs")
    stored = [p for p in _storage(emulator).find(f"{BUCKET}/pokedex") if "/files/md5/" in p]
    assert len(stored) == 5, stored  # four files and the directory's manifest, content-addressed
    shutil.rmtree(tiny_repo / ".dvc" / "cache")
    (tiny_repo / "data" / "pokemon.zip").unlink()
    shutil.rmtree(tiny_repo / "data" / "shards")
    assert "5 files fetched and 4 files added" in dvc(tiny_repo, "pull", "-r", "gcs")
    assert sha256_tree(tiny_repo, outputs) == before
    assert "in sync" in dvc(tiny_repo, "status", "--cloud", "-r", "gcs")


def test_the_cloud_job_dataset_path_reads_through_gcsfs(
    synthetic_zip: Path, emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upload the zip where the Vertex job reads it (data_zip on /gcs/... = gs://...), read it back by gs:// URL."""
    from pokedex.cloud.vertex import load_config

    cfg = load_config([f"bucket={BUCKET}", "job_name=emulated"])
    uri = cfg["data_zip"].replace("/gcs/", "gs://", 1)
    assert uri == f"gs://{BUCKET}/pokedex/data/pokemon.zip"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)  # no endpoint argument: the variable alone routes it
    storage = _storage()
    storage.put(str(synthetic_zip), uri)
    with storage.open(uri, "rb") as remote, zipfile.ZipFile(remote) as archive:
        assert "index.json" in archive.namelist()
        assert archive.testzip() is None
    assert storage.cat(uri) == synthetic_zip.read_bytes()
