"""Secrets for cloud jobs: read Secret Manager values at container start, never put them in a job spec.

Vertex AI custom jobs take plain environment variables only (no secret references, unlike Cloud Run), so the
job's command is ``python -m pokedex.cloud exec --secret ENV=projects/P/secrets/NAME/versions/V -- CMD...``:
it reads each secret with the job's service account (Application Default Credentials, the Secret Manager REST
API through google-auth, which the training image already has), exports it and replaces itself with CMD.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Sequence

SECRET_API = "https://secretmanager.googleapis.com/v1"
RESOURCE = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")

Fetch = Callable[[str], str]


def parse_secret(option: str) -> tuple[str, str]:
    """``ENV=projects/P/secrets/NAME/versions/V`` → (ENV, resource)."""
    name, sep, resource = option.partition("=")
    if not sep or not name.isidentifier() or not RESOURCE.match(resource):
        raise ValueError(f"--secret {option!r}: expected ENV=projects/<project>/secrets/<name>/versions/<version>")
    return name, resource


def access_secret(resource: str) -> str:
    """The secret's value, read with the Application Default Credentials (the job's service account)."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    reply = AuthorizedSession(credentials).get(f"{SECRET_API}/{resource}:access", timeout=30)
    if reply.status_code != 200:
        # The reply names the resource and the reason (not found, permission denied); it holds no secret value.
        raise RuntimeError(f"Secret Manager: {resource}: HTTP {reply.status_code}: {reply.text[:300]}")
    return base64.b64decode(reply.json()["payload"]["data"]).decode("utf-8")


def exec_with_secrets(
    secrets: Sequence[str],
    command: Sequence[str],
    *,
    fetch: Fetch = access_secret,
    execvpe: Callable[[str, Sequence[str], dict[str, str]], object] = os.execvpe,
) -> None:
    """Export every ``ENV=resource`` secret, then replace this process with ``command``."""
    if not command:
        raise ValueError("exec: no command after --")
    env = dict(os.environ)
    for option in secrets:
        name, resource = parse_secret(option)
        env[name] = fetch(resource)
        print(f"pokedex.cloud exec: {name} read from {resource}", flush=True)
    execvpe(command[0], list(command), env)
