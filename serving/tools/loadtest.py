"""A loopback load run: throughput and p50/p99 latency of the local server, batching on and off,
for every backend (SavedModel, ONNX, TFLite), and the cost gRPC adds to one batch-1 request.

    python -m serving.tools.loadtest BUNDLE [--backend savedmodel] [--clients 8] [--seconds 10] [--api grpc|rest]

Starts `resnet-deploy serve BUNDLE --local --model M --backend B` (with the bundle's
batching.config, then with --no-batching) on free loopback ports, drives each with N closed-loop
clients sending one image per request for S seconds, and prints one row per run. The clients
share the machine with the server, so on a small machine the numbers are a lower bound; they
are reported, never asserted. `--overhead` also times batch-1 gRPC requests against direct calls
of the same artifact's runner in this process, in turn, and reports the client's own encoding of
the request apart. `make bench` runs `--bench-json` (both, shorter) for its targets table.
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
from typing import Any

import numpy as np

BACKENDS = ("savedmodel", "onnx", "tflite")


@dataclass
class LoadResult:
    backend: str
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
        return (f"{self.backend:10s} {'on' if self.batching else 'off':8s} {self.api:5s} {self.signature:20s} "
                f"{self.clients:7d} {self.requests:8d} {self.errors:6d} {self.throughput_rps:9.1f} "
                f"{self.p50_ms:8.1f} {self.p99_ms:8.1f} {mbs:>10s}")


HEADER = (f"{'backend':10s} {'batching':8s} {'api':5s} {'signature':20s} {'clients':>7s} {'requests':>8s} "
          f"{'errors':>6s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean batch':>10s}")


def start_local_server(bundle: Path, batching: bool, backend: str = "savedmodel", model: str | None = None,
                       timeout: float = 300) -> tuple[subprocess.Popen, int, int]:
    cmd = [sys.executable, "-m", "export.cli", "serve", str(bundle), "--local", "--rest-port", "0", "--grpc-port", "0",
           "--backend", backend]
    if model:
        cmd += ["--model", model]
    if not batching:
        cmd.append("--no-batching")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rest_port, grpc_port = wait_ready(proc, f"the local server ({backend})", timeout)
    return proc, rest_port, grpc_port


def wait_ready(proc: subprocess.Popen, what: str, timeout: float) -> tuple[int, int]:
    """The ports from the server's `ready:` line, waiting at most `timeout` seconds by the clock
    (a server that hangs silently is given up on too); RuntimeError, the server killed, otherwise.
    Its output is drained from a thread for as long as it runs."""
    import queue
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True, name="server-output").start()
    end = time.monotonic() + timeout
    seen: list[str] = []
    exited = False
    while (left := end - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            exited = True
            break
        seen.append(line.strip())
        m = re.match(r"ready: rest_port=(\d+) grpc_port=(\d+)", line)
        if m:
            return int(m[1]), int(m[2])
    proc.kill()
    proc.wait()
    last = next((s for s in reversed(seen) if s), "no output")
    raise RuntimeError(f"{what} did not start: {last}" if exited
                       else f"{what} did not start within {timeout:g} s: {last}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    from export.model import samples
    from serving.client.clients import GrpcClient, RestClient, encode_png
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


def _load_row(rest_url: str, grpc_target: str, model: str, backend: str, batching: bool, api: str,
              image_bytes: bool, clients: int, seconds: float, warmup_seconds: float) -> LoadResult:
    drive(rest_url, grpc_target, model, api, image_bytes, clients, min(warmup_seconds, seconds))
    rows0, batches0 = batch_counters(rest_url)
    lat, errors, wall = drive(rest_url, grpc_target, model, api, image_bytes, clients, seconds)
    rows1, batches1 = batch_counters(rest_url)
    mean_batch = (rows1 - rows0) / (batches1 - batches0) if batches1 > batches0 else None
    ms = np.asarray(lat) * 1000 if lat else np.zeros(1)
    return LoadResult(backend, batching, api, "predict_image_bytes" if image_bytes else "serving_default", clients,
                      round(wall, 2), len(lat), errors, len(lat) / wall, float(np.percentile(ms, 50)),
                      float(np.percentile(ms, 99)), mean_batch)


def run_load(bundle: str | Path, model: str | None = None, clients: int = 8, seconds: float = 10.0,
             apis: tuple[str, ...] = ("grpc",), image_bytes: bool = False, backends: tuple[str, ...] = BACKENDS,
             warmup_seconds: float = 2.0, out=sys.stdout, overhead: dict[str, Any] | None = None) -> list[LoadResult]:
    """For each backend, batching on then off: one LoadResult per (backend, batching, api).

    Both servers of a backend start together (loading overlaps; only one is driven at a time).
    With `overhead` (a dict), the batch-1 gRPC overhead is measured on the SavedModel server with
    batching on before its load run, and stored in it.
    """
    from serving.backends.registry import bundle_models
    bundle = Path(bundle)
    model = model or bundle_models(bundle)[0]["name"]
    results: list[LoadResult] = []
    print(HEADER, file=out, flush=True)
    for backend in backends:
        servers = {}
        try:
            for batching in (True, False):
                servers[batching] = start_local_server(bundle, batching, backend, model)
            for batching in (True, False):
                _proc, rest_port, grpc_port = servers[batching]
                if overhead is not None and backend == "savedmodel" and batching:
                    overhead.update(grpc_overhead(bundle, model, backend, grpc_port=grpc_port))
                rest_url, grpc_target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
                for api in apis:
                    results.append(_load_row(rest_url, grpc_target, model, backend, batching, api, image_bytes,
                                              clients, seconds, warmup_seconds))
                    print(results[-1].row(), file=out, flush=True)
        finally:
            for proc, _rest, _grpc in servers.values():
                stop_server(proc)
    return results


def grpc_overhead(bundle: str | Path, model: str | None = None, backend: str = "savedmodel", rounds: int = 20,
                  threads: int | None = None, warmup: int = 3, grpc_port: int | None = None) -> dict[str, Any]:
    """Batch-1 gRPC requests against direct calls of the same artifact's runner, in turn: p50 of
    each, the percentage gRPC adds, and the client's encoding (array -> PredictRequest) apart.
    Uses the server at `grpc_port` (batching on), else starts one."""
    from export.model import samples
    from export.runtimes import runner_for
    from serving.backends.registry import artifact_path, bundle_models
    from serving.client.clients import GrpcClient
    bundle = Path(bundle)
    model = model or bundle_models(bundle)[0]["name"]
    path = artifact_path(bundle, model, backend, None)
    image = samples.photos()[:1]
    proc = None
    if grpc_port is None:
        proc, _rest_port, grpc_port = start_local_server(bundle, True, backend, model)
    runner = runner_for(path, device="CPU", num_threads=threads).load()
    try:
        with GrpcClient(f"127.0.0.1:{grpc_port}") as client:
            raw, grpc, encode = [], [], []
            for i in range(warmup + rounds):
                t0 = time.perf_counter()
                runner.infer({"image": image})
                t1 = time.perf_counter()
                request = client.predict_request(model, {"image": image})
                t2 = time.perf_counter()
                client.predict_outputs(client.send(request))
                t3 = time.perf_counter()
                if i >= warmup:
                    raw.append(t1 - t0)
                    encode.append(t2 - t1)
                    grpc.append(t3 - t2)
    finally:
        runner.close()
        if proc is not None:
            stop_server(proc)
    raw_p50, grpc_p50 = float(np.median(raw)) * 1e3, float(np.median(grpc)) * 1e3
    return {"backend": backend, "model": model, "rounds": rounds, "raw_p50_ms": round(raw_p50, 2),
            "grpc_p50_ms": round(grpc_p50, 2), "encode_p50_ms": round(float(np.median(encode)) * 1e3, 3),
            "added_pct": round(100 * (grpc_p50 / raw_p50 - 1), 1),
            "note": "gRPC time = send, server (decode, batch queue, run, encode), client decode; "
                    "the client's encoding of the request is measured apart"}


def bench_probe(bundle: str | Path, threads: int | None = None, seconds: float = 3.0,
                backends: tuple[str, ...] = BACKENDS) -> dict[str, Any]:
    """What `make bench` reports of the server: the gRPC overhead (SavedModel) and, per backend,
    8 gRPC clients with batching on and off, and the throughput gain batching gives."""
    import io
    overhead: dict[str, Any] = {}
    rows = run_load(bundle, clients=8, seconds=seconds, backends=backends, warmup_seconds=1.0, out=io.StringIO(),
                    overhead=overhead if "savedmodel" in backends else None)
    if not overhead:
        overhead = grpc_overhead(bundle, threads=threads)
    gains = []
    for b in backends:
        on = next((r for r in rows if r.backend == b and r.batching), None)
        off = next((r for r in rows if r.backend == b and not r.batching), None)
        gain = round(on.throughput_rps / off.throughput_rps, 3) if on and off and off.throughput_rps else None
        gains.append({"backend": b, "on_rps": on and round(on.throughput_rps, 2),
                      "off_rps": off and round(off.throughput_rps, 2), "gain": gain})
    return {"grpc_overhead": overhead, "load": [asdict(r) for r in rows], "batching": gains,
            "target_backend": "savedmodel", "clients": 8, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.tools.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--model", help="the model (variant) to load and drive (default: the bundle's first)")
    p.add_argument("--backend", action="append", choices=BACKENDS, help="repeatable (default: all three)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--api", action="append", choices=["grpc", "rest"], help="repeatable (default grpc)")
    p.add_argument("--bytes", action="store_true", help="send PNG bytes to predict_image_bytes instead of pixels")
    p.add_argument("--overhead", action="store_true", help="also time batch-1 gRPC against the raw runner")
    p.add_argument("--threads", type=int, default=None, help="runner threads for --overhead")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--bench-json", metavar="FILE", help="run make bench's probe (short) and write it as JSON")
    args = p.parse_args(argv)
    backends = tuple(args.backend or BACKENDS)
    if args.bench_json:
        probe = bench_probe(args.bundle, args.threads, backends=backends)
        Path(args.bench_json).write_text(json.dumps(probe, indent=2))
        return 0
    overhead: dict[str, Any] | None = {} if args.overhead else None
    results = run_load(args.bundle, args.model, args.clients, args.seconds, tuple(args.api or ["grpc"]), args.bytes,
                       backends, overhead=overhead)
    doc: dict[str, Any] = {"load": [asdict(r) for r in results]}
    if overhead is not None:
        o = overhead or grpc_overhead(args.bundle, args.model, threads=args.threads)
        doc["grpc_overhead"] = o
        print(f"gRPC batch 1 ({o['backend']} {o['model']}): p50 {o['grpc_p50_ms']:.1f} ms vs raw runner "
              f"{o['raw_p50_ms']:.1f} ms (+{o['added_pct']:.1f} %); client encoding {o['encode_p50_ms']:.2f} ms apart")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
