"""Serve this host's local pip indexes to ``docker build`` over loopback, and write the pip.conf that uses them.

    python scripts/pip_mirror.py OUT_DIR

A host's pip configuration may point at local folders (``file://`` index URLs, ``find-links`` directories, a
constraints file) that a container cannot see. This script reads the effective configuration (``pip config
list``), links every local folder or file it names under ``OUT_DIR/root/<n>``, serves that folder on
``127.0.0.1`` (a free port) and writes ``OUT_DIR/pip.conf``, the same configuration with each local path
replaced by its ``http://127.0.0.1:<port>/<n>`` URL and ``cert`` replaced by ``/run/secrets/ca.crt`` (the
build mounts the host's CA bundle there as a BuildKit secret). Non-local values are kept as they are. It
writes ``OUT_DIR/port`` last (the sign that it is serving) and serves until it is stopped.

A build using it needs the host's network (``docker build --network host``): the server only listens on
loopback. scripts/docker_test.sh starts and stops it.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

# pip options whose values are index URLs, link locations or requirement files: the ones that may be local.
LOCATION_KEYS = ("index-url", "extra-index-url", "find-links", "constraint")
CA_SECRET = "/run/secrets/ca.crt"
LINE = re.compile(r"^(?P<scope>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def pip_config() -> dict[str, str]:
    """``{option: value}`` of pip's effective configuration (PIP_* variables win over the files)."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in listing.splitlines():
        if match := LINE.match(line.strip()):
            (env if match["scope"] == ":env:" else files)[match["key"]] = match["value"]
    return {**files, **env}


def local_path(value: str) -> Path | None:
    path = Path(unquote(urlparse(value).path)) if value.startswith("file://") else Path(value)
    return path if path.is_absolute() and path.exists() else None


def serve(path: Path, is_index: bool, root: Path, base_url: str, served: dict[str, str]) -> str:
    """Link ``path`` under ``root`` and return its URL. An index (``.../simple``) is served with its parent
    folder, since its pages may link to files beside it (``../../files/x.whl``)."""
    name = str(len(served))
    if is_index:
        (root / name).symlink_to(path.parent)
        url = f"{base_url}/{name}/{path.name}/"
    else:
        (root / name).symlink_to(path)
        url = f"{base_url}/{name}" + ("/" if path.is_dir() else "")
    served[str(path)] = url
    return url


def rewrite(options: dict[str, str], root: Path, base_url: str) -> dict[str, str]:
    """The options a container can use: local locations linked under ``root`` and served from ``base_url``."""
    served: dict[str, str] = {}
    result: dict[str, str] = {}
    for key, value in options.items():
        if key == "cert":
            result[key] = CA_SECRET
            continue
        if key not in LOCATION_KEYS:
            result[key] = value
            continue
        urls = []
        for item in value.split():
            path = local_path(item)
            if path is None:
                urls.append(item)
                continue
            urls.append(served.get(str(path)) or serve(path, key.endswith("index-url"), root, base_url, served))
        result[key] = " ".join(urls)
    return result


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(out_dir: str) -> None:
    out = Path(out_dir)
    root = out / "root"
    root.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    port = server.server_address[1]
    options = rewrite(pip_config(), root, f"http://127.0.0.1:{port}")
    write_atomic(out / "pip.conf", "[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(options.items())))
    write_atomic(out / "port", f"{port}\n")
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
