"""A loopback load run: throughput and p50/p99 latency of the local server, batching on and off.

    python -m serving.loadtest BUNDLE [--clients 8] [--seconds 10] [--api grpc|rest] [--bytes]

Starts `resnet-deploy serve BUNDLE --local` twice (with the bundle's batching.config, then with
--no-batching) on free loopback ports, drives each with N closed-loop clients sending one image
per request for S seconds, and prints one row per run. The clients share the machine with the
server, so on a small machine the numbers are a lower bound; they are reported, never asserted.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class LoadResult:
    batching: bool
    api: str
    signature: str
    clients: int
    seconds: float
    requests: int
    errors: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    mean_batch_size: float | None

    def row(self) -> str:
        mbs = "-" if self.mean_batch_size is None else f"{self.mean_batch_size:.2f}"
        return (f"{'on' if self.batching else 'off':8s} {self.api:5s} {self.signature:20s} {self.clients:7d} "
                f"{self.requests:8d} {self.errors:6d} {self.throughput_rps:9.1f} {self.p50_ms:8.1f} "
                f"{self.p99_ms:8.1f} {mbs:>10s}")


HEADER = (f"{'batching':8s} {'api':5s} {'signature':20s} {'clients':>7s} {'requests':>8s} {'errors':>6s} "
          f"{'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean batch':>10s}")


def start_local_server(bundle: Path, batching: bool, timeout: float = 300) -> tuple[subprocess.Popen, int, int]:
    cmd = [sys.executable, "-m", "export.cli", "serve", str(bundle), "--local", "--rest-port", "0", "--grpc-port", "0"]
    if not batching:
        cmd.append("--no-batching")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    stdout = proc.stdout
    end = time.monotonic() + timeout
    for line in stdout:
        m = re.match(r"ready: rest_port=(\d+) grpc_port=(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()  # keep draining
            return proc, int(m[1]), int(m[2])
        if time.monotonic() > end:
            break
    proc.kill()
    raise RuntimeError("the local server did not start")


def batch_counters(rest_url: str) -> tuple[float, float]:
    """(rows, batches) the server has run, from its Prometheus endpoint."""
    import httpx
    text = httpx.get(f"{rest_url}/monitoring/prometheus/metrics", timeout=30).text
    total = sum(float(v) for v in re.findall(r"processed_batch_size_sum\{[^}]*\} (\S+)", text))
    count = sum(float(v) for v in re.findall(r"processed_batch_size_count\{[^}]*\} (\S+)", text))
    return total, count


def drive(rest_url: str, grpc_target: str, model: str, api: str, image_bytes: bool, clients: int,
          seconds: float, max_requests_per_client: int = 100_000) -> tuple[list[float], int, float]:
    """N closed-loop clients for `seconds`: latencies (s), error count, wall time."""
    from export import samples
    from serving.client import GrpcClient, RestClient, encode_png
    photos = samples.photos()[:4]
    blobs = np.empty(len(photos), dtype=object)
    blobs[:] = [encode_png(p) for p in photos]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(n: int) -> None:
        c = GrpcClient(grpc_target) if api == "grpc" else RestClient(rest_url)
        mine: list[float] = []
        bad = 0
        start_gate.wait()
        for j in range(max_requests_per_client):
            if time.monotonic() >= stop_at[0]:
                break
            i = (n + j) % len(photos)
            inputs = {"image_bytes": blobs[i:i + 1]} if image_bytes else {"image": photos[i:i + 1]}
            t0 = time.perf_counter()
            try:
                c.predict(model, inputs, "predict_image_bytes" if image_bytes else "serving_default")
            except Exception:  # noqa: BLE001 - counted and reported
                bad += 1
                continue
            mine.append(time.perf_counter() - t0)
        c.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + seconds
    t0 = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    return latencies, errors[0], time.perf_counter() - t0


def run_load(bundle: str | Path, model: str | None = None, clients: int = 8, seconds: float = 10.0,
             apis: tuple[str, ...] = ("grpc",), image_bytes: bool = False, out=sys.stdout) -> list[LoadResult]:
    """Batching on, then off: one LoadResult per (batching, api)."""
    from serving.servables import bundle_models
    bundle = Path(bundle)
    model = model or bundle_models(bundle)[0]["name"]
    results = []
    for batching in (True, False):
        proc, rest_port, grpc_port = start_local_server(bundle, batching)
        try:
            rest_url, grpc_target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
            for api in apis:
                drive(rest_url, grpc_target, model, api, image_bytes, clients, min(2.0, seconds))  # warm up
                rows0, batches0 = batch_counters(rest_url)
                lat, errors, wall = drive(rest_url, grpc_target, model, api, image_bytes, clients, seconds)
                rows1, batches1 = batch_counters(rest_url)
                mean_batch = (rows1 - rows0) / (batches1 - batches0) if batches1 > batches0 else None
                ms = np.asarray(lat) * 1000 if lat else np.zeros(1)
                results.append(LoadResult(
                    batching, api, "predict_image_bytes" if image_bytes else "serving_default", clients,
                    round(wall, 2), len(lat), errors, len(lat) / wall, float(np.percentile(ms, 50)),
                    float(np.percentile(ms, 99)), mean_batch))
                print(results[-1].row() if len(results) > 1 else HEADER + "\n" + results[-1].row(), file=out, flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--model")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--api", action="append", choices=["grpc", "rest"], help="repeatable (default grpc)")
    p.add_argument("--bytes", action="store_true", help="send PNG bytes to predict_image_bytes instead of pixels")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    results = run_load(args.bundle, args.model, args.clients, args.seconds, tuple(args.api or ["grpc"]), args.bytes)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
