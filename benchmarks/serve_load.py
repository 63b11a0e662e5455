"""`inflame serve` under load: concurrent clients on loopback against the same model called
in-process, as ratios measured in one run.

    python benchmarks/serve_load.py [--clients 1,4,16] [--requests 64] [--backend torch|onnx]
                                    [--json PATH]

Trains the tiny run of cli_startup.py (1 epoch, 32 px) in a temp dir, starts `inflame serve`
on a free loopback port, and sends one-image `POST /predict` requests from N client threads
(httpx with TCP_NODELAY, a kept-alive connection each). The baseline is the same images
labelled one at a time in this process (decode + forward pass, no HTTP). Reported per
case: requests/s, p50 and p99 latency, and requests/s as a ratio of the in-process
baseline; the service's batch-size histogram (`/metrics`) shows how often concurrent
requests shared a forward pass.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import describe, machine, print_table, settings, write_json
from cli_startup import tiny_run


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def start_service(run: Path, backend: str, env: dict[str, str]) -> tuple[Any, str]:
    command = [sys.executable, "-m", "inflame", "serve", str(run), "--port", "0"]
    process = subprocess.Popen(
        [*command, "--backend", backend, "--max-wait-ms", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    found = threading.Event()
    holder: dict[str, str] = {}

    def drain() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            match = re.search(r"on (http://\S+) ", line)
            if match and not found.is_set():
                holder["url"] = match.group(1)
                found.set()

    threading.Thread(target=drain, daemon=True).start()
    if not found.wait(120):
        process.kill()
        raise SystemExit("the service did not start")
    return process, holder["url"]


def client(url: str) -> Any:
    """An HTTP client as browsers and urllib3 are: TCP_NODELAY on (httpx leaves Nagle on, and
    a kept-alive connection then waits ~40 ms for a delayed ACK on every request)."""
    import socket

    import httpx

    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    return httpx.Client(
        base_url=url, timeout=60, transport=httpx.HTTPTransport(socket_options=nodelay)
    )


def load(
    url: str, payloads: list[tuple[str, bytes]], clients: int, requests: int
) -> tuple[float, list[float]]:
    """`requests` one-image predictions from `clients` threads: requests/s and latencies."""

    local = threading.local()

    def one(i: int) -> float:
        if not hasattr(local, "client"):
            local.client = client(url)
        name, data = payloads[i % len(payloads)]
        start = time.perf_counter()
        answer = local.client.post("/predict", files=[("files", (name, data))])
        answer.raise_for_status()
        return time.perf_counter() - start

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients * 2)))  # warm up the connections
        began = time.perf_counter()
        latencies = list(pool.map(one, range(requests)))
        return requests / (time.perf_counter() - began), latencies


def main() -> None:
    import httpx

    from inflame.predict import load_predictor

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=64, help="requests per case")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="inflame-bench-"))
    env = {
        **os.environ,
        "INFLAME_RUNS_DIR": str(work / "runs"),
        "INFLAME_CACHE_DIR": str(work / "cache"),
    }
    process = None
    try:
        image = tiny_run(work, env)
        run = next((work / "runs").iterdir())
        if args.backend == "onnx":
            export = [sys.executable, "-m", "inflame", "export", str(run), "--format", "onnx"]
            subprocess.run(export, check=True, stdout=subprocess.DEVNULL, env=env)
        images = sorted(image.parent.parent.rglob("*.jpg"))
        payloads = [(p.name, p.read_bytes()) for p in images]

        predictor = load_predictor(run, args.backend)
        for name, data in payloads[:4]:  # warm up
            predictor.probabilities([predictor.decode(name, data)])
        latencies = []
        began = time.perf_counter()
        for i in range(args.requests):
            name, data = payloads[i % len(payloads)]
            start = time.perf_counter()
            predictor.probabilities([predictor.decode(name, data)])
            latencies.append(time.perf_counter() - start)
        baseline_rps = args.requests / (time.perf_counter() - began)
        rows = [
            {
                "case": f"in-process, 1 image per call ({args.backend}, baseline)",
                "requests_per_s": baseline_rps,
                "p50_ms": statistics.median(latencies) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
                "x_baseline": 1.0,
            }
        ]

        process, url = start_service(run, args.backend, env)
        with httpx.Client(base_url=url, timeout=60) as probe:
            deadline = time.monotonic() + 120
            while probe.get("/readyz").status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the service did not get ready")
                time.sleep(0.1)
        for clients in (int(c) for c in args.clients.split(",")):
            rps, latencies = load(url, payloads, clients, args.requests)
            rows.append(
                {
                    "case": f"inflame serve, {clients} client(s)",
                    "requests_per_s": rps,
                    "p50_ms": statistics.median(latencies) * 1000,
                    "p99_ms": percentile(latencies, 0.99) * 1000,
                    "x_baseline": rps / baseline_rps,
                }
            )
        with httpx.Client(base_url=url) as probe:
            text = probe.get("/metrics").text
        found = dict(re.findall(r"^inflame_batch_size_(sum|count) (\S+)$", text, re.M))
        mean_batch = float(found["sum"]) / max(float(found["count"]), 1.0)
    finally:
        if process is not None:
            process.terminate()
            process.wait(60)
        shutil.rmtree(work, ignore_errors=True)

    info = machine()
    print(describe(info))
    print_table(
        rows,
        [
            ("case", "case", ""),
            ("requests_per_s", "requests/s", ".1f"),
            ("p50_ms", "p50 ms", ".1f"),
            ("p99_ms", "p99 ms", ".1f"),
            ("x_baseline", "x baseline", ".2f"),
        ],
    )
    print(f"images per forward pass in the service, mean: {mean_batch:.2f}")
    write_json(
        args.json,
        "serve_load",
        info,
        settings=settings(args),
        results=rows,
        mean_batch=mean_batch,
    )


if __name__ == "__main__":
    main()
