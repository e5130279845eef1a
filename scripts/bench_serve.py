"""Benchmark the service (ONNX Runtime + micro-batching) against a naive baseline, on loopback only.

    python scripts/bench_serve.py [--ckpt best.ckpt] [--image-size 128] [--requests 3000] [--duration 20]
        [--telemetry-off] [--no-naive]

Both servers run as separate processes on 127.0.0.1 and receive the same PNG uploads at each concurrency level
(default 1 and 16) from a load generator in this process: raw keep-alive sockets with pre-encoded requests
(default; what wrk does) or httpx (``--client httpx``). The client shares the machine's cores with the server, so
its CPU per request is printed too. The baseline is what one writes first: a FastAPI ``def`` endpoint
that decodes the upload and runs the eager PyTorch model on that single image (no batching, no ONNX). Without
``--ckpt`` a throwaway resnet18 is trained for a few batches at ``--image-size`` (accuracy is irrelevant here).
Every scenario is bounded by ``--requests`` and ``--duration``; nothing leaves the machine.

It also measures the **ceiling**: the same ONNX model in-process (ONNX Runtime session built exactly as the
service builds it, canonical arrays, no HTTP, no decoding) at batch sizes 1..32, in both thread layouts (one call
at a time on all cores; one call per core, one thread each), and prints the best images/s and the
served/ceiling ratio of every service scenario. ``--telemetry-off`` adds the service with ``telemetry=false``
(no per-prediction metrics, drift window or embeddings output read) to price the monitoring.
"""

import argparse
import asyncio
import io
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from fastapi import FastAPI

REPO = Path(__file__).resolve().parent.parent


# -- the naive baseline server ----------------------------------------------------------------------------------
def baseline_app(ckpt: str) -> "FastAPI":
    """Per-request eager PyTorch, no batching: a sync endpoint, run by Starlette's thread pool."""
    import torch
    from fastapi import FastAPI, File, UploadFile

    from pokedex.inference.torch_backend import ProbabilityModel, load_checkpoint
    from pokedex.preprocess import bytes_to_array

    classifier, _ = load_checkpoint(ckpt)
    model = ProbabilityModel(classifier).eval()
    app = FastAPI(title="naive baseline")

    @app.post("/predict")
    def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008
        start = time.perf_counter()
        array = bytes_to_array(file.file.read(), classifier.spec.image_size)
        with torch.inference_mode():
            probs = model(torch.from_numpy(array)[None])[0]
        top = torch.topk(probs, k=min(5, len(probs)))
        preds = [
            {"label": classifier.class_names[i], "index": int(i), "probability": float(p)}
            for p, i in zip(top.values, top.indices, strict=True)
        ]
        return {"predictions": preds, "elapsed_ms": (time.perf_counter() - start) * 1000}

    @app.get("/ready")
    def ready() -> dict:
        return {"status": "ready"}

    return app


def run_baseline_server(ckpt: str, port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(ckpt), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- helpers ----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_throwaway(workdir: Path, image_size: int) -> Path:
    """A resnet18 checkpoint at ``image_size`` from two batches of synthetic data (weights are irrelevant)."""
    run_dir = workdir / "train"
    cmd = [
        sys.executable, "-m", "pokedex.train", "model=resnet18", "data=synthetic", f"data.image_size={image_size}",
        f"data.zip_path={workdir / 'synthetic.zip'}", "trainer=cpu", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
        "logger=none", "test=false", "callbacks.progress_bar=null", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    print(f"training a throwaway resnet18 at {image_size} px ...", flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    return ckpt if ckpt.exists() else run_dir / "checkpoints" / "last.ckpt"


def sprites(image_size: int, n: int = 16, seed: int = 0) -> list[bytes]:
    """Sprite-like PNG uploads: a coloured shape on a transparent canvas."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        image = Image.new("RGBA", (image_size, image_size), (0, 0, 0, 0))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x0, y0 = rng.randrange(image_size // 2), rng.randrange(image_size // 2)
            x1, y1 = x0 + rng.randrange(8, image_size // 2), y0 + rng.randrange(8, image_size // 2)
            draw.ellipse((x0, y0, x1, y1), fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256), 255))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


# -- the load generator -----------------------------------------------------------------------------------------
@dataclass
class Result:
    server: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def drive(url: str, payloads: list[bytes], concurrency: int, max_requests: int, max_seconds: float) -> Result:
    """``concurrency`` clients, each posting back-to-back, until ``max_requests`` or ``max_seconds``."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one(i: int) -> tuple[float, bool]:
            files = {"file": (f"{i}.png", payloads[i % len(payloads)], "image/png")}
            start = time.perf_counter()
            response = await client.post("/predict", files=files)
            return (time.perf_counter() - start) * 1000, response.status_code == 200

        await asyncio.gather(*(one(i) for i in range(2 * concurrency)))  # warm connections and caches
        issued, latencies, errors = 0, [], 0
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker() -> None:
            nonlocal issued, errors
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                ms, ok = await one(issued)
                latencies.append(ms)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return Result("", concurrency, len(latencies), errors, elapsed, latencies)


def multipart_request(host: str, port: int, payload: bytes, name: str) -> bytes:
    """One complete keep-alive HTTP/1.1 POST /predict with ``payload`` as the multipart ``file`` field."""
    boundary = "pokedexbenchboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}"
        f"\r\nContent-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def drive_raw(url: str, payloads: list[bytes], concurrency: int, max_requests: int, max_seconds: float) -> Result:
    """The same load as ``drive`` from a load generator that costs the server's cores almost nothing: requests are
    encoded once, each client is one keep-alive connection that writes them and reads status + Content-Length
    body. httpx spends ~1 ms of CPU per request, and on a 2-core machine every client millisecond is taken from
    the server being measured (the bench prints the client's CPU per request)."""
    host, port = url.removeprefix("http://").split(":")
    requests = [multipart_request(host, int(port), p, f"{i}.png") for i, p in enumerate(payloads)]
    latencies: list[float] = []
    state = {"issued": 0, "errors": 0}

    async def client(limit: int, deadline: float, record: bool) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while state["issued"] < limit and time.perf_counter() < deadline:
                state["issued"] += 1
                start = time.perf_counter()
                writer.write(requests[state["issued"] % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
                await reader.readexactly(int(fields.get(b"Content-Length", fields.get(b"content-length", b"0"))))
                if record:
                    latencies.append((time.perf_counter() - start) * 1000)
                    state["errors"] += head[9:12] != b"200"
        finally:
            writer.close()

    await asyncio.gather(*(client(2 * concurrency, time.perf_counter() + 60, False) for _ in range(concurrency)))
    state["issued"] = 0
    start = time.perf_counter()
    await asyncio.gather(*(client(max_requests, start + max_seconds, True) for _ in range(concurrency)))
    return Result("", concurrency, len(latencies), state["errors"], time.perf_counter() - start, latencies)


ROLES = {"pokedex-infer": "model", "pokedex-decode": "decode"}  # OS thread names set by pokedex.serve.service


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a running server by role: the model (the inference threads and the ONNX Runtime threads
    they started, which inherit their name), decoding, and the rest (event loop, HTTP, telemetry). Linux /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {"model": 0.0, "decode": 0.0, "event loop + rest": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[ROLES.get(name, "event loop + rest")] += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen(cmd, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


NAIVE = "naive (eager torch, no batching)"


def service_cmd(model: Path, port: int, args: argparse.Namespace, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pokedex.serve", f"model_path={model}", f"port={port}", "access_log=false",
        "log_level=warning", f"max_batch_size={args.max_batch_size}", f"max_wait_ms={args.max_wait_ms}",
        f"intra_op_threads={args.threads}", f"decode_threads={args.decode_threads}",
        f"inference_workers={args.workers}", f"hydra.run.dir={run_dir}",
        *extra,
    ]  # fmt: skip


def ceiling_of(model: Path, threads: int, workers: int, seconds: float) -> dict[int, float]:
    """Images/s per batch size of ``workers`` threads each running batches back to back on one ONNX Runtime
    session with ``threads`` intra-op threads (a session may be run from several threads at once)."""
    import numpy as np

    from pokedex.inference.onnx_backend import onnx_session, run_onnx

    session = onnx_session(model, threads=threads or None)
    size = session.get_inputs()[0].shape[-1]
    rates: dict[int, float] = {}
    for batch_size in (1, 2, 4, 8, 16, 32):
        batch = np.random.default_rng(0).integers(0, 256, (batch_size, 4, size, size), dtype=np.uint8)
        run_onnx(session, batch)  # warm-up
        done = [0] * workers
        start = time.perf_counter()

        def loop(slot: int, batch: np.ndarray = batch, start: float = start, done: list[int] = done) -> None:
            while time.perf_counter() - start < seconds:
                run_onnx(session, batch)
                done[slot] += len(batch)

        threads_ = [threading.Thread(target=loop, args=(slot,)) for slot in range(workers)]
        for thread in threads_:
            thread.start()
        for thread in threads_:
            thread.join()
        rates[batch_size] = sum(done) / (time.perf_counter() - start)
    return rates


def ceiling(model: Path, seconds: float = 4.0) -> tuple[str, float, dict[str, dict[int, float]]]:
    """(best layout and batch size, its images/s, images/s per layout and batch size): the model alone, no HTTP
    and no decoding, in the two thread layouts a service can use on this machine's cores: one model call at a
    time on all of them, or one call per core on one thread each."""
    cores = os.cpu_count() or 1
    layouts = {f"1 call x {cores} threads": (cores, 1)}
    if cores > 1:
        layouts[f"{cores} calls x 1 thread"] = (1, cores)
    table = {name: ceiling_of(model, threads, workers, seconds) for name, (threads, workers) in layouts.items()}
    name, batch = max(((n, b) for n, rates in table.items() for b in rates), key=lambda nb: table[nb[0]][nb[1]])
    return f"{name}, batch {batch}", table[name][batch], table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="checkpoint to serve (default: train a throwaway resnet18)")
    parser.add_argument("--onnx", type=Path, help="exported model for the service (default: export --ckpt)")
    parser.add_argument("--int8", action="store_true", help="also benchmark the int8 export (<stem>.int8.onnx)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--requests", type=int, default=3000, help="max requests per scenario")
    parser.add_argument("--duration", type=float, default=20.0, help="max seconds per scenario")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="model intra-op threads (0: runtime default)")
    parser.add_argument("--decode-threads", type=int, default=2, help="the service's decode threads")
    parser.add_argument("--workers", type=int, default=1, help="the service's inference_workers")
    parser.add_argument("--telemetry-off", action="store_true", help="also run the service with telemetry=false")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline server")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="load generator: raw keep-alive sockets (default, cheap) or httpx")  # fmt: skip
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(str(args.ckpt), args.port)
        return

    workdir = Path(tempfile.mkdtemp(prefix="pokedex-bench-"))
    ckpt = args.ckpt or train_throwaway(workdir, args.image_size)
    onnx_path = args.onnx
    if onnx_path is None:
        from pokedex.inference.onnx_export import export_onnx

        onnx_path = workdir / "model.onnx"
        print(f"exporting {ckpt} → {onnx_path} ...", flush=True)
        export_onnx(ckpt, onnx_path, quantize=args.int8)
    from pokedex.inference.loader import load_predictor

    size = load_predictor(onnx_path).spec.image_size
    payloads = sprites(size)

    servers: dict[str, tuple[list[str], int]] = {}
    port = free_port()
    servers["service (onnx + batching)"] = (service_cmd(onnx_path, port, args, workdir / "serve"), port)
    if args.telemetry_off:
        port = free_port()
        cmd = service_cmd(onnx_path, port, args, workdir / "serve-off", "telemetry=false")
        servers["service, telemetry+drift off"] = (cmd, port)
    if args.int8:
        port = free_port()
        int8 = onnx_path.with_suffix(".int8.onnx")
        servers["service (onnx int8 + batching)"] = (service_cmd(int8, port, args, workdir / "serve-int8"), port)
    if not args.no_naive:
        port = free_port()
        script = str(Path(__file__).resolve())
        servers[NAIVE] = ([sys.executable, script, "--baseline-server", "--ckpt", str(ckpt), "--port", str(port)], port)
    best, best_rate, table = ceiling(onnx_path)
    for layout, rates in table.items():
        print(f"ceiling (in-process ONNX Runtime, no HTTP/decoding), {layout}: "
              + ", ".join(f"b={b}: {r:.1f}/s" for b, r in rates.items()))  # fmt: skip
    print(f"ceiling: {best_rate:.1f} img/s ({best})")
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} image={size}px batch<={args.max_batch_size} "
          f"wait={args.max_wait_ms}ms requests<={args.requests} duration<={args.duration}s", flush=True)  # fmt: skip

    results: list[Result] = []
    for name, (cmd, port) in servers.items():  # one server at a time: they would compete for the same cores
        url = f"http://127.0.0.1:{port}"
        proc = start(cmd, workdir / f"{port}.log")
        try:
            wait_ready(url, proc)
            for concurrency in args.concurrency:
                driver = drive_raw if args.client == "raw" else drive
                cpu, server_cpu = time.process_time(), thread_cpu(proc.pid)
                result = asyncio.run(driver(url, payloads, concurrency, args.requests, args.duration))
                sent = max(1, result.requests + 2 * concurrency)  # the drivers warm up with 2 requests per client
                client_ms = (time.process_time() - cpu) * 1000 / sent
                server_ms = {k: (v - server_cpu[k]) * 1000 / sent for k, v in thread_cpu(proc.pid).items()}
                result.server = name
                results.append(result)
                print(f"  {name:34s} c={concurrency:<3d} {result.throughput:7.1f} req/s "
                      f"(client CPU {client_ms:.2f} ms/request, {args.client})", flush=True)  # fmt: skip
                if name != NAIVE:
                    parts = ", ".join(f"{k} {v:.2f}" for k, v in server_ms.items())
                    print(f"  {'':34s} server CPU ms/request: {parts}; total {sum(server_ms.values()):.2f}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    print()
    header = f"{'server':34s} {'conc':>4s} {'reqs':>5s} {'err':>4s} {'req/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.server:34s} {r.concurrency:4d} {r.requests:5d} {r.errors:4d} {r.throughput:7.1f} "
              f"{r.pct(50):8.1f} {r.pct(99):8.1f}")  # fmt: skip
    print()
    for r in results:
        if r.server != NAIVE:
            print(f"concurrency {r.concurrency:2d}, {r.server}: served/ceiling = {r.throughput:.1f}/{best_rate:.1f} "
                  f"= {r.throughput / best_rate:.2f}")  # fmt: skip
    for concurrency in args.concurrency:
        by = {r.server: r for r in results if r.concurrency == concurrency}
        on, off = by.get("service (onnx + batching)"), by.get("service, telemetry+drift off")
        if on and off:
            print(
                f"concurrency {concurrency:2d}: telemetry+drift cost {1 - on.throughput / off.throughput:+.1%} "
                f"throughput ({on.throughput:.1f} on vs {off.throughput:.1f} off req/s)"
            )
        naive = by.get(NAIVE)
        for name, r in by.items():
            if naive is not None and name != NAIVE:
                ratio = r.throughput / naive.throughput
                latency = f"p50 {r.pct(50):.0f}/{naive.pct(50):.0f} ms, p99 {r.pct(99):.0f}/{naive.pct(99):.0f} ms"
                print(f"concurrency {concurrency:2d}, {name} / naive: throughput ×{ratio:.2f}, {latency}")
    print(f"(logs and artifacts in {workdir})")
    if any(r.errors for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
