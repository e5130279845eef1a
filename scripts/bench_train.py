#!/usr/bin/env python
"""Training throughput of one model with each data path, as a ratio to the model alone.

Why: a data path is only good enough when the trainer never waits for it. Every mode runs the same training
step (forward, cross-entropy, backward, AdamW) with the same model, resolution, batch size and precision, in a
fresh subprocess so that its peak RSS is its own:

* ``compute``  random uint8 batch already on the device: the ceiling.
* ``augment``  the same plus the batch augmentation (``pokedex.augment``) on the device.
* ``naive``    PNGs extracted to disk, one PIL decode + torchvision transforms per item (the original recipe).
* ``zip``      ``PokedexDataModule`` streaming PNG members out of the zip, batch augmentation on the device.
* ``cache``    ``PokedexDataModule(cache=True)``: batches from the decoded uint8 cache file, same augmentation.

Usage (the defaults finish in a few minutes on a 2-core CPU):

    python scripts/bench_train.py                          # data/pokemon.zip, or a generated zip if absent
    python scripts/bench_train.py --device cuda --batch-size 512 --precision bf16-mixed --channels-last
    python scripts/bench_train.py --modes compute,cache --num-workers 0 --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pokedex.data.archive import read_index  # noqa: E402
from pokedex.data.augment import BatchAugment  # noqa: E402
from pokedex.data.datamodule import PokedexDataModule  # noqa: E402

MODES = ("compute", "augment", "naive", "zip", "cache")
DEFAULT_ZIP = ROOT / "data" / "pokemon.zip"
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


# -- datasets -----------------------------------------------------------------------------------------------
def resolve_zip(args: argparse.Namespace) -> Path:
    """The zip to read: ``--zip``, else data/pokemon.zip, else a generated one big enough for the run."""
    if args.zip:
        return Path(args.zip)
    if DEFAULT_ZIP.exists():
        return DEFAULT_ZIP
    from pokedex.data.sources.synthetic import make_synthetic_zip

    path = Path(args.cache_dir) / f"bench-synthetic-{args.image_size}px.zip"
    if not path.exists():
        # 40 classes x 3 train animations x 16 frames = 1920 train images (val/test hold 1280 more)
        make_synthetic_zip(
            path, num_classes=40, animations_per_class=5, frames_per_animation=16, image_size=args.image_size
        )
    return path


def extract_train_split(zip_path: Path, out_dir: Path) -> Path:
    """``train/<Class>/<file>.png`` members → ``out_dir/<Class>/<file>.png`` for an image-folder loader."""
    root = out_dir / f"{zip_path.stem}-train"
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as zf:
        for m in read_index(zip_path).split("train"):
            target = root / m.path.split("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(m.path))
    done.touch()
    return root


def open_rgba(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGBA")


def naive_loader(args: argparse.Namespace, zip_path: Path) -> torch.utils.data.DataLoader:
    from torchvision import datasets, transforms

    root = extract_train_split(zip_path, Path(args.cache_dir) / "bench-naive")
    augment = BatchAugment()  # same ranges, per item, on PIL images, through torchvision
    transform = transforms.Compose(
        [
            transforms.Resize((args.image_size, args.image_size)),
            transforms.RandomHorizontalFlip(augment.hflip_p),
            transforms.RandomAffine(
                degrees=augment.rotate_deg, translate=(augment.translate,) * 2, scale=augment.scale
            ),
            transforms.ToTensor(),  # float32 [0, 1], as the original fed its model
        ]
    )
    dataset = datasets.ImageFolder(str(root), transform=transform, loader=open_rgba)
    return torch.utils.data.DataLoader(dataset, **loader_kwargs(args, shuffle=True))


def loader_kwargs(args: argparse.Namespace, *, shuffle: bool) -> dict[str, Any]:
    workers = args.num_workers
    return {
        "batch_size": args.batch_size,
        "shuffle": shuffle,
        "drop_last": True,
        "num_workers": workers,
        "pin_memory": args.device == "cuda",
        "persistent_workers": workers > 0,
        "prefetch_factor": args.prefetch_factor if workers > 0 else None,
    }


def datamodule(args: argparse.Namespace, zip_path: Path, cache: bool) -> PokedexDataModule:
    dm = PokedexDataModule(
        str(zip_path),
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=args.device == "cuda",
        persistent_workers=True,
        prefetch_factor=args.prefetch_factor,
        augment=BatchAugment(),
        cache=cache,
        cache_dir=args.cache_dir,
    )
    dm.prepare_data()
    return dm


def forever(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        yield from loader


# -- memory ---------------------------------------------------------------------------------------------------
def _proc_kb_field_mb(path: str, field: str) -> float | None:
    """A ``<field>: <n> kB`` line of a /proc file, in MB; None where /proc is missing (not Linux) or lacks it."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process."""
    return _proc_kb_field_mb(f"/proc/{pid}/status", "VmHWM")


def pss_mb(pid: int) -> float | None:
    """Proportional set size now: shared pages (forked workers, the cache buffers) split among their users."""
    return _proc_kb_field_mb(f"/proc/{pid}/smaps_rollup", "Pss")


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may itself contain spaces or ')')."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these live processes (all their threads), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = [fields for fields in map(_stat_fields, pids) if fields]
    return sum((int(fields[11]) + int(fields[12])) / tick for fields in stats)


def child_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (DataLoader workers), from /proc; empty where there is no /proc."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(entry.name)
        if fields and int(fields[1]) == parent:
            pids.append(int(entry.name))
    return pids


# -- one mode, in a child process ----------------------------------------------------------------------------
def build_model(args: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    from pokedex.model.classifier import PokedexClassifier

    model = PokedexClassifier(
        name=args.model,
        class_names=[f"c{i}" for i in range(num_classes)],
        image_size=args.image_size,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    return model.to(args.device).train()


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    mode, device = args.child, torch.device(args.device)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    zip_path = resolve_zip(args)
    num_classes = len(read_index(zip_path).classes)
    model = build_model(args, num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "16-mixed")
    augment = BatchAugment()
    loader: Any = None
    setup_start = time.perf_counter()

    if mode in ("compute", "augment"):
        shape = (args.batch_size, 4, args.image_size, args.image_size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
        labels = torch.randint(0, num_classes, (args.batch_size,), device=device)
        batches: Iterator[Any] = iter(lambda: (images, labels), None)
    elif mode == "naive":
        loader = naive_loader(args, zip_path)
        batches = forever(loader)
    else:
        dm = datamodule(args, zip_path, cache=mode == "cache")
        loader = dm.train_dataloader()
        batches = forever(loader)
    setup_seconds = time.perf_counter() - setup_start

    mixed = args.precision in AUTOCAST

    def step() -> torch.Tensor:
        images, labels = next(batches)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if mode not in ("compute", "naive"):
            images = augment(images)  # what on_after_batch_transfer does in training
        with torch.autocast(device.type, dtype=AUTOCAST.get(args.precision), enabled=mixed):
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    procs = [os.getpid(), *child_pids(os.getpid())]
    start, steps, cpu_start = time.perf_counter(), 0, cpu_seconds(procs)
    while steps < args.steps and (steps == 0 or time.perf_counter() - start < args.max_seconds):
        loss = step()
        steps += 1
    sync()
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(procs) - cpu_start
    workers = child_pids(os.getpid())  # measured while the loader workers still live
    return {
        "mode": mode,
        "images_per_s": steps * args.batch_size / seconds,
        "step_ms": 1000 * seconds / steps,
        "steps": steps,
        "seconds": seconds,
        "cpu_ms_per_image": 1000 * cpu / (steps * args.batch_size),
        "setup_seconds": setup_seconds,
        "loss": float(loss),
        "peak_rss_mb": peak_rss_mb(os.getpid()) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers": len(workers),
        "pss_total_mb": sum(pss_mb(pid) or 0.0 for pid in [os.getpid(), *workers]),
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }


# -- driver -------------------------------------------------------------------------------------------------
def child_argv(args: argparse.Namespace, mode: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
    for key, value in vars(args).items():
        if key in ("child", "modes", "json", "config", "repeat") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def header(args: argparse.Namespace, zip_path: Path, first: dict[str, Any]) -> str:
    index = read_index(zip_path)
    counts = index.counts()
    if args.device == "cuda":
        dev = torch.cuda.get_device_name(0)
    else:
        dev = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    omp = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY"))
    return "\n".join(
        [
            f"model {args.model}, {args.image_size} px, batch {args.batch_size}, best of {args.repeat} x "
            f"{args.steps} timed steps "
            f"(max {args.max_seconds:.0f} s) after {args.warmup} warm-up, precision {args.precision}, "
            f"channels_last {args.channels_last}, compile {args.compile}",
            f"device {args.device} ({dev}); torch {torch.__version__}; torch threads {first['torch_threads']} "
            f"(interop {first['interop_threads']}); {omp}; load average after the run {load}",
            f"data {zip_path} ({len(index.classes)} classes, {counts['train']} train images); "
            f"num_workers {args.num_workers}, prefetch_factor {args.prefetch_factor}, "
            f"pin_memory {args.device == 'cuda'}",
        ]
    )


def table(results: list[dict[str, Any]]) -> str:
    base = next((r for r in results if r["mode"] == "compute"), None)
    lines = [
        "| mode | images/s | x compute | ms/step | CPU ms/image | x compute by CPU time | steps | setup s "
        "| peak RSS main MB | workers | PSS main + workers MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ratio = f"{r['images_per_s'] / base['images_per_s']:.2f}" if base else "-"
        cpu_ratio = f"{base['cpu_ms_per_image'] / r['cpu_ms_per_image']:.2f}" if base else "-"
        lines.append(
            f"| {r['mode']} | {r['images_per_s']:.1f} | {ratio} | {r['step_ms']:.0f} | {r['cpu_ms_per_image']:.1f} | "
            f"{cpu_ratio} | {r['steps']} | "
            f"{r['setup_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['workers']} | {r['pss_total_mb']:.0f} |"
        )
    return "\n".join(lines)


DEFAULTS: dict[str, Any] = {
    "model": "resnet18",
    "image_size": 128,
    "batch_size": 64,
    "num_workers": 2,
    "prefetch_factor": 4,
}


def from_config(overrides: list[str]) -> dict[str, Any]:
    """The settings a training run with these Hydra overrides would use."""
    from hydra import compose, initialize_config_dir

    from pokedex.config import CONFIG_PATH, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    precision = str(cfg.trainer.get("precision", "32-true"))
    return {
        "zip": str(ROOT / cfg.data.zip_path),
        "model": cfg.model.name,
        "image_size": int(cfg.data.image_size),
        "batch_size": int(cfg.data.batch_size),
        "num_workers": int(cfg.data.num_workers),
        "prefetch_factor": cfg.data.get("prefetch_factor") or DEFAULTS["prefetch_factor"],
        "precision": precision if precision in ("32-true", "bf16-mixed", "16-mixed") else None,
        "channels_last": bool(cfg.model.get("channels_last", False)),
        "compile": bool(cfg.model.get("compile", False)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config",
        nargs="+",
        metavar="OVERRIDE",
        help="take model/data/precision settings from the Hydra config "
        "composed with these overrides, e.g. --config experiment=cpu (explicit flags still win)",
    )
    p.add_argument("--zip", help="dataset zip (default: data/pokemon.zip, else a generated one)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--model", help=f"timm name (default {DEFAULTS['model']})")
    p.add_argument("--image-size", type=int, help=f"default {DEFAULTS['image_size']}")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
    p.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (workers, compile, caches)")
    p.add_argument("--repeat", type=int, default=1, help="rounds over all modes; the table keeps each mode's best")
    p.add_argument("--max-seconds", type=float, default=60.0, help="stop timing a mode after this long")
    p.add_argument("--num-workers", type=int, help=f"default {DEFAULTS['num_workers']}")
    p.add_argument("--prefetch-factor", type=int, help=f"default {DEFAULTS['prefetch_factor']}")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the training process")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default=None, choices=["32-true", "bf16-mixed", "16-mixed"])
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="default: the config's, else off")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, help="torch.compile the backbone (compiled in warm-up)"
    )
    p.add_argument("--cache-dir", default=str(ROOT / "data" / "cache"))
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.config:
        for key, value in from_config(args.config).items():
            if getattr(args, key) is None:  # explicit flags win, --no-channels-last included
                setattr(args, key, value)
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.channels_last, args.compile = bool(args.channels_last), bool(args.compile)
    if args.precision is None:
        args.precision = "bf16-mixed" if args.device == "cuda" else "32-true"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_mode(args)), flush=True)
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    zip_path = resolve_zip(args)
    args.zip = str(zip_path)
    best: dict[str, dict[str, Any]] = {}
    for round_ in range(args.repeat):  # rounds interleave the modes, so a burst of outside load hits them alike
        for mode in modes:
            print(f"[bench_train] round {round_ + 1}: {mode} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(child_argv(args, mode), capture_output=True, text=True, check=False)
            line = next((s for s in reversed(proc.stdout.splitlines()) if s.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
                raise SystemExit(f"mode {mode} failed with exit code {proc.returncode}")
            result = json.loads(line.removeprefix("RESULT "))
            rates = [*best.get(mode, {}).get("all_images_per_s", []), round(result["images_per_s"], 2)]
            if mode not in best or result["images_per_s"] > best[mode]["images_per_s"]:
                best[mode] = result
            best[mode]["all_images_per_s"] = rates
            print(f"[bench_train] {mode}: {result['images_per_s']:.1f} images/s", file=sys.stderr, flush=True)
    results = [best[mode] for mode in modes]
    print(header(args, zip_path, results[0]))
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
