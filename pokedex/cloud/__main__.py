"""``python -m pokedex.cloud``: train on Vertex AI.

    python -m pokedex.cloud train --dry-run [key=value ...]   print the CustomJob spec (YAML), submit nothing
    python -m pokedex.cloud train [key=value ...]             submit it with `gcloud ai custom-jobs create`
    python -m pokedex.cloud train ... -- trainer.max_epochs=3  arguments after -- go to pokedex.train as well
    python -m pokedex.cloud exec --secret ENV=RESOURCE -- CMD  (inside the job) export secrets, then run CMD

``key=value`` overrides apply to ``conf/cloud/vertex.yaml`` (e.g. ``project=my-proj spot=false``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pokedex.cloud.secrets import exec_with_secrets
from pokedex.cloud.vertex import CloudConfigError, job_spec, load_config, render, submit


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m pokedex.cloud", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train experiment=full on Vertex AI (conf/cloud/vertex.yaml)")
    train.add_argument("--dry-run", action="store_true", help="print the job spec (YAML) and submit nothing")
    train.add_argument("--config", default="vertex", help="the config in conf/cloud/ (default: vertex)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the cloud config")
    run = commands.add_parser("exec", help="inside a job: export Secret Manager secrets, then run a command")
    run.add_argument("--secret", action="append", default=[], metavar="ENV=RESOURCE", help="repeatable")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to run")
    return root


def split_train_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``train ... -- a b`` → (``train ...``, [a, b]): what follows ``--`` goes to ``python -m pokedex.train``."""
    if argv[:1] == ["train"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    own, extra = split_train_args(list(sys.argv[1:] if argv is None else argv))
    args = parser().parse_args(own)
    try:
        if args.command == "exec":
            command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            exec_with_secrets(args.secret, command)
            return 0  # not reached: exec replaced the process
        cfg = load_config(args.overrides, args.config)
        cfg["train_args"] = [*cfg["train_args"], *extra]
        spec = job_spec(cfg)
        if args.dry_run:
            sys.stdout.write(render(spec))
            return 0
        return submit(cfg, spec)
    except (CloudConfigError, ValueError) as exc:
        print(f"pokedex.cloud: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
