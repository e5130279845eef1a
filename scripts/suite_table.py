"""The robustness suite as a Markdown table: an old and a new metrics file, in the suite's own order.

    python scripts/suite_table.py OLD NEW [--conf conf/suite/default.yaml]

OLD and NEW are ``metrics.json`` files of ``pokedex.evaluate``/``pokedex.train`` (their ``suite`` section) or
the bare ``{condition: {top1, top5}}`` mapping that section holds. The README's and docs/robustness.md's tables
are this script's output, so no number in them is typed by hand.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

SUITE_CONF = Path("conf/suite/default.yaml")


def suite_order(names: Iterable[str], conf: Path = SUITE_CONF) -> list[str]:
    """``names`` in the order the suite config lists its conditions; names it does not list go last, sorted."""
    order = [c["name"] for c in yaml.safe_load(conf.read_text(encoding="utf-8"))["conditions"]]
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def conditions(path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    section = data["suite"].get("conditions", {}) if isinstance(data.get("suite"), dict) else data
    if "clean" not in section:
        raise SystemExit(f"{path}: no robustness suite in it (expected a 'suite' section or a 'clean' condition)")
    return section


def within_five_points(suite: dict[str, dict[str, Any]], names: Iterable[str]) -> int:
    """How many of ``names`` (``clean`` aside) lose at most 5 points of top-1 against ``clean``, float noise aside:
    the issue's target, counted the same way in every table."""
    clean = suite["clean"]["top1"]
    return sum(clean - suite[n]["top1"] <= 0.05 + 1e-9 for n in names if n != "clean")


def table(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], names: list[str]) -> str:
    lines = [
        "| condition | old default top-1 | old top-5 | new default top-1 | new top-5 | new vs clean |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    clean = new["clean"]["top1"]
    for name in names:
        before, after = old.get(name, {}), new[name]
        cells = [f"{before[k]:.1%}" if k in before else "n/a" for k in ("top1", "top5")]
        delta = 100 * (after["top1"] - clean)
        lines.append(
            f"| `{name}` | {cells[0]} | {cells[1]} | **{after['top1']:.1%}** | {after['top5']:.1%} | {delta:+.1f} |"
        )
    lines.append("")
    lines.append(f"{within_five_points(new, names)} of {len(names) - 1} conditions within 5 points of clean.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--conf", type=Path, default=SUITE_CONF, help="the suite's order")
    args = parser.parse_args()
    old, new = conditions(args.old), conditions(args.new)
    print(table(old, new, suite_order(new, args.conf)))


if __name__ == "__main__":
    main()
