"""Train the default experiment with each robustness augmentation switched on or off; print clean vs suite.

    python scripts/robustness_ablation.py [--epochs 12] [--out outputs/ablation] [extra Hydra overrides...]

Every variant is the same seeded `experiment=cpu` run with different `data.augment.*` values, so the differences
are the augmentations' (the preprocessing version is fixed by the code: compare with an older checkout for that).
Each run's metrics.json holds the clean test split and the robustness suite; the table goes to stdout and to
<out>/ablation.md. Runs sequentially: on a 2-core machine parallel runs only slow each other down.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite_table import suite_order

VARIANTS = {  # every value spelled out, so the rows stay what they were when the defaults change
    "no robustness augmentation": ["data.augment.background_p=0", "data.augment.degrade_p=0"],
    "+ backgrounds (full size, 4 kinds)": [
        "data.augment.degrade_p=0",
        "data.augment.background_p=0.5",
        "data.augment.background_scale=[1.0,1.0]",
        "data.augment.backgrounds=[solid,gradient,noise,other]",
    ],
    "+ degradation": ["data.augment.background_p=0", "data.augment.degrade_p=0.25"],
    "+ degradation + re-upload": ["data.augment.background_p=0", "data.augment.degrade_p=0.25", "data.reupload.p=0.3"],
    "+ degradation + re-upload + busy backgrounds": [
        "data.augment.degrade_p=0.25",
        "data.reupload.p=0.3",
        "data.augment.background_p=0.2",
        "data.augment.background_scale=[0.6,1.0]",
        "data.augment.backgrounds=[gradient,noise]",
    ],
}


def run(name: str, overrides: list[str], out: Path, epochs: int, extra: list[str]) -> dict:
    run_dir = out / name.split(" (")[0].replace(" ", "_").replace("+", "plus")
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():  # finished runs are kept: rerunning the script resumes the table
        cmd = [sys.executable, "-m", "pokedex.train", "experiment=cpu", f"trainer.max_epochs={epochs}",
               f"hydra.run.dir={run_dir}", *overrides, *extra]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    return json.loads(metrics.read_text())


def table(results: dict[str, dict]) -> str:
    conditions = suite_order(next(iter(results.values()))["suite"]["conditions"])
    head = ["variant", "clean test top-1", "suite mean", "suite worst", *conditions]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results.items():
        suite = m["suite"]
        cells = [
            f"{m['test']['test/top1']:.3f}",
            f"{suite['mean_top1']:.3f}",
            f"{suite['worst_top1']:.3f} ({suite['worst']})",
        ]
        cells += [f"{suite['conditions'][c]['top1']:.3f}" for c in conditions]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("outputs/ablation"))
    parser.add_argument("--only", nargs="*", help="names of the variants to run (default: all)")
    args, extra = parser.parse_known_args()
    chosen = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only}
    results = {name: run(name, overrides, args.out, args.epochs, extra) for name, overrides in chosen.items()}
    text = table(results)
    (args.out / "ablation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
