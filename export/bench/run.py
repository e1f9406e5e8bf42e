"""Benchmarks: how fast every artifact of a bundle runs on this machine, against its own ceiling.

`resnet-deploy bench BUNDLE` (`make bench`) measures every artifact in the bundle's manifest, each
in a fresh Python process (so memory and thread pools never bleed across artifacts): load time,
latency percentiles per batch size, throughput, peak RSS and top-1 agreement with the fp32
reference; plus a float32 matmul ceiling, achieved GFLOP/s and quantized speed-ups, all measured
in the same run. Formats with a runner precision hint (OpenVINO: f32, bf16) get one row per
hint, with their speed-up over the fastest fp32 artifact of another format; a bf16 row on a CPU
without bf16 units reads "skipped: no bf16 hardware". The header names the CPU's matrix and
dot-product units (AMX, AVX512-BF16, VNNI). Writes bench/bench.{json,md,png} and re-lists them
in the bundle's manifest.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from export.bench.document import BENCH_FORMAT_VERSION, BenchReport
from export.core.errors import BundleError, UsageError
from export.core.registry import FORMATS, get_format

BENCH_DIR = "bench"
#: The float32 matmul that measures the machine's ceiling: matrix size and timed repetitions.
#: It runs with NumPy (its BLAS) and TensorFlow (oneDNN/Eigen), at the start and the end of a run;
#: the ceiling is the best of them (a BLAS without kernels for the CPU's widest vectors, or a
#: neighbour process busy during one measurement, would understate it).
CEILING_N = 2048
CEILING_REPS = 8
CEILING_LIBRARIES = ("numpy", "tensorflow")
#: Seconds one artifact's measuring process may take before it is recorded as failed.
WORKER_TIMEOUT_S = 900
ISOLATION = ("each artifact in a fresh Python process; peak RSS is that process's high-water mark "
             "(VmHWM: interpreter + runtime library + model + activations), and '+load' is the "
             "part above its RSS after importing the runtime, before loading the artifact")


# -- arguments ------------------------------------------------------------------------------------

def parse_batch_sizes(text: str) -> list[int]:
    """"1,8" -> [1, 8]; UsageError on anything but comma-separated integers >= 1."""
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError(f"--batch-sizes expects comma-separated integers >= 1 (e.g. 1,8), got {text!r}")
    return sorted(set(sizes))


def runs_at(batch: int, runs: int) -> int:
    """Timed runs at a batch size: `runs` at batch 1, half as many (at least 1) at larger batches."""
    return runs if batch == 1 else max(1, (runs + 1) // 2)


# -- FLOPs ----------------------------------------------------------------------------------------

def _out(n: int, stride: int) -> int:
    return -(-n // stride)


def resnet50_macs(size: int = 224) -> tuple[int, int, int]:
    """Multiply-accumulates of Keras' ResNet50 (v1, no top) at size x size, and its output H, W.

    Counts the conv layers (BatchNorm, ReLU, adds and pooling are < 1 % and left out):
    2 x 3.86 G = 7.7 GFLOP at 224 x 224.
    """
    h = _out(size, 2)
    macs = h * h * 7 * 7 * 3 * 64                      # conv1, stride 2
    h = _out(h, 2)                                     # max-pool 3x3, stride 2
    cin = 64
    for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            s = stride if b == 0 else 1
            ho = _out(h, s)
            if b == 0:
                macs += ho * ho * cin * 4 * filters    # projection shortcut (1x1, stride s)
            macs += ho * ho * cin * filters            # 1x1 (stride s: Keras v1)
            macs += ho * ho * 9 * filters * filters    # 3x3
            macs += ho * ho * filters * 4 * filters    # 1x1 expand
            h, cin = ho, 4 * filters
    return macs, h, cin


def head_macs(head: list[dict[str, Any]], num_classes: int, h: int, cin: int) -> int:
    """Multiply-accumulates of a declared head (conv2d 'same', dense) and the final logits Dense."""
    macs, spatial = 0, True
    for layer in head:
        kind = layer["kind"]
        if kind == "conv2d" and spatial:
            k = int(layer.get("kernel_size", 1))
            macs += h * h * k * k * cin * int(layer["filters"])
            cin = int(layer["filters"])
        elif kind == "gap":
            spatial = False
        elif kind == "dense":
            macs += cin * int(layer["units"])
            cin = int(layer["units"])
    return macs + cin * num_classes


def gflop_per_image(variant_meta: dict[str, Any]) -> dict[str, float]:
    """GFLOP (2 x MACs) per image of a variant: backbone, head and total, from the manifest's spec."""
    spec = variant_meta["spec"]
    shape = (variant_meta.get("inputs", {}).get("image", {}) or {}).get("shape") or []
    size = int(shape[1]) if len(shape) == 4 and shape[1] else int(spec.get("input_size", 224))
    backbone, h, cin = resnet50_macs(size)
    head = head_macs(spec.get("head", []), int(variant_meta["num_classes"]), h, cin)
    return {"input_size": size, "backbone": round(2 * backbone / 1e9, 4), "head": round(2 * head / 1e9, 6),
            "total": round(2 * (backbone + head) / 1e9, 6)}


# -- environment ----------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment(threads: int) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from export.core import cpu_features
    from export.formats import tool_versions
    versions = tool_versions()
    for pkg in ("numpy", "matplotlib", "psutil"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads,
            "cpu_features": cpu_features.detect(cpu_features.cpu_flags()),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()], "tool_versions": versions}


# -- the measuring process ------------------------------------------------------------------------

def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _in_fresh_process(job: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run one job (`_worker`) in a new Python process; {"error": ...} if it fails."""
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-bench.") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        try:
            proc = subprocess.run([sys.executable, "-m", "export.bench.run", str(job_path), str(out_path)],
                                  env=_thread_env(threads), capture_output=True, text=True, check=False,
                                  timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {WORKER_TIMEOUT_S} s"}
        if proc.returncode != 0 or not out_path.is_file():
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            return {"error": (lines[-1] if lines else f"exit code {proc.returncode}")[:300]}
        return json.loads(out_path.read_text())


def _time_matmul(matmul, n: int, reps: int) -> dict[str, Any]:
    matmul()  # warm-up: thread pool start, page faults, tracing
    seconds = []
    for _ in range(reps):
        t = time.perf_counter()
        matmul()
        seconds.append(time.perf_counter() - t)
    flops = 2.0 * n ** 3
    return {"gflops": round(flops / min(seconds) / 1e9, 2),
            "gflops_median": round(flops / float(np.median(seconds)) / 1e9, 2),
            "seconds": [round(s, 5) for s in seconds]}


def _ceiling(n: int, reps: int, threads: int) -> list[dict[str, Any]]:
    """Float32 n x n matmul GFLOP/s with NumPy and with TensorFlow, `threads` threads each."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    out = [{"library": "numpy", "kernel": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
            **_time_matmul(lambda: a @ b, n, reps)}]
    from export.runtimes.tensorflow import TensorFlowRunner
    TensorFlowRunner.preload(threads)
    import tensorflow as tf
    with tf.device("/CPU:0"):
        ta, tb = tf.constant(a), tf.constant(b)
        fn = tf.function(lambda x, y: tf.linalg.matmul(x, y))
        out.append({"library": "tensorflow", "kernel": f"tf.linalg.matmul (TensorFlow {tf.__version__})",
                    **_time_matmul(lambda: fn(ta, tb).numpy(), n, reps)})
    return out


def _stats(seconds: list[float], batch: int) -> dict[str, Any]:
    ms = np.asarray(seconds) * 1e3
    mean = float(ms.mean())
    return {"runs": len(ms), "p50": round(float(np.percentile(ms, 50)), 3),
            "p90": round(float(np.percentile(ms, 90)), 3), "p99": round(float(np.percentile(ms, 99)), 3),
            "mean": round(mean, 3), "min": round(float(ms.min()), 3),
            "images_per_s": round(batch * 1e3 / mean, 3)}


def _peak_rss() -> int:
    """This process's peak resident set, bytes: VmHWM, which (unlike ru_maxrss, which keeps the
    parent's high-water mark across fork + exec) counts only this program."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _measure(job: dict[str, Any]) -> dict[str, Any]:
    """Load one artifact, time it per batch size after warm-up, check its top-1 on the photos."""
    import psutil

    from export.formats import Artifact
    from export.model import samples
    from export.quality import golden
    from export.runtimes import PrecisionUnavailable, runner_for
    root, threads = Path(job["root"]), job["threads"]
    art = Artifact.from_dict(job["artifact"])
    get_format(art.format).runner_class().preload(threads)
    ref = golden.load(root, art.variant)
    rows = [i for i, name in enumerate(ref.names) if name in samples.PHOTO_NAMES]
    photos = np.ascontiguousarray(ref.inputs[rows], dtype=np.float32)
    ref_top1 = np.argmax(ref.outputs["logits"][rows], axis=-1)

    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    runner = runner_for(art, root=root, device="CPU", num_threads=threads,
                        precision_hint=job.get("precision_hint"))
    try:
        runner.load()
    except PrecisionUnavailable as e:
        return {"skipped": e.skip_reason, "skip_detail": str(e)}
    load_s = time.perf_counter() - start
    with runner:
        start = time.perf_counter()
        runner.infer({"image": photos[:1]})
        first_s = time.perf_counter() - start
        latency = {}
        for b in job["batch_sizes"]:
            feed = {"image": np.ascontiguousarray(np.resize(photos, (b, *photos.shape[1:])))}
            # The runtime is warm after batch 1: one run at a new batch size allocates for it.
            for _ in range(job["warmup"] if b == job["batch_sizes"][0] else min(1, job["warmup"])):
                runner.infer(feed)
            times = []
            for _ in range(runs_at(b, job["runs"])):
                t = time.perf_counter()
                runner.infer(feed)
                times.append(time.perf_counter() - t)
            latency[str(b)] = _stats(times, b)
        chunk = max(job["batch_sizes"])
        top1 = np.concatenate([np.argmax(runner.infer({"image": photos[i:i + chunk]})["logits"], axis=-1)
                               for i in range(0, len(photos), chunk)])
        device = runner.device
    agree = int((top1 == ref_top1).sum())
    peak = _peak_rss()
    return {"device": device, "load_s": round(load_s, 4), "first_inference_s": round(first_s, 4),
            "latency_ms": latency,
            "peak_rss_mb": round(peak / 2**20, 1), "rss_load_mb": round((peak - rss_before) / 2**20, 1),
            "top1": {"agree": agree, "total": len(rows), "agreement": round(agree / max(1, len(rows)), 4),
                     "photos": [ref.names[i] for i in rows],
                     "reference": f"{ref.meta.get('reference', 'keras')} fp32 outputs in golden/{art.variant}/"}}


def _worker(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    if job["kind"] == "ceiling":
        result = {"measurements": _ceiling(job["n"], job["reps"], job["threads"])}
    elif job["kind"] == "paired":
        from export.bench.paired import measure
        result = measure(job)
    else:
        result = _measure(job)
    Path(argv[1]).write_text(json.dumps(result))
    return 0


# -- the run --------------------------------------------------------------------------------------

def _thread_sweep(row: dict[str, Any], artifact, job: dict[str, Any], counts: tuple[int, ...]) -> dict[str, Any]:
    """Batch-1 latency of one artifact with each of `counts` threads (the registry's bench_threads),
    each in a fresh process; the main measurement stands in when it ran with that many threads."""
    out: dict[str, Any] = {}
    for n in counts:
        if n == job["threads"] and "1" in row["latency_ms"]:
            stats = row["latency_ms"]["1"]
        else:
            result = _in_fresh_process({**job, "artifact": artifact.to_dict(), "threads": n, "batch_sizes": [1]}, n)
            if result.get("error"):
                out[str(n)] = {"error": result["error"]}
                continue
            stats = result["latency_ms"]["1"]
        out[str(n)] = {k: stats[k] for k in ("runs", "p50", "p90", "p99", "images_per_s")}
    return out


def _ceiling_summary(start: dict[str, Any], end: dict[str, Any], threads: int) -> dict[str, Any]:
    """The best float32 matmul GFLOP/s of the start and end measurements, and all of them."""
    measurements = [{**m, "when": when} for when, r in (("start", start), ("end", end))
                    for m in r.get("measurements", [])]
    errors = [f"{when}: {r['error']}" for when, r in (("start", start), ("end", end)) if r.get("error")]
    best = max(measurements, key=lambda m: m["gflops"], default=None)
    return {"gflops": best["gflops"] if best else None,
            "best": f"{best['library']} ({best['when']} of the run)" if best else None,
            "method": f"float32 {CEILING_N}x{CEILING_N} matmul with {' and '.join(CEILING_LIBRARIES)}, "
                      f"best of {CEILING_REPS} timed runs after 1 warm-up, at the start and the end of the run",
            "n": CEILING_N, "reps": CEILING_REPS, "threads": threads, "measurements": measurements,
            "error": "; ".join(errors) or None}


def _derive(rows: list[dict[str, Any]], ceiling: float | None) -> None:
    """Achieved GFLOP/s and % of the ceiling (fp32 and precision-hint rows), speed-up over the
    fp32 sibling (quantized) or over the fastest fp32 artifact of another format (hint rows),
    computed from the numbers stored in the rows."""
    by_key = {r["key"]: r for r in rows if not r.get("precision_hint")}
    for r in rows:
        r["achieved_gflops"] = r["pct_of_ceiling"] = r["achieved_at_batch"] = r["speedup_vs_fp32"] = None
        r["speedup_vs_fastest_fp32"] = None
        if r.get("error") or r.get("skipped"):
            continue
        best = max(r["latency_ms"], key=lambda b: r["latency_ms"][b]["images_per_s"])
        if r.get("precision_hint"):
            r["achieved_at_batch"] = int(best)
            r["achieved_gflops"] = round(r["gflop_per_image"] * r["latency_ms"][best]["images_per_s"], 2)
            if ceiling:
                r["pct_of_ceiling"] = round(100.0 * r["achieved_gflops"] / ceiling, 2)
            r["speedup_vs_fastest_fp32"] = _vs_fastest_fp32(r, rows)
            continue
        if r["precision"] == "fp32":
            r["achieved_at_batch"] = int(best)
            r["achieved_gflops"] = round(r["gflop_per_image"] * r["latency_ms"][best]["images_per_s"], 2)
            if ceiling:
                r["pct_of_ceiling"] = round(100.0 * r["achieved_gflops"] / ceiling, 2)
            continue
        sib = by_key.get(f"{r['variant']}/{r['format']}_fp32")
        if sib is None or sib.get("error"):
            continue
        r["speedup_vs_fp32"] = {"sibling": sib["key"], "by_batch": {
            b: round(sib["latency_ms"][b]["p50"] / r["latency_ms"][b]["p50"], 3)
            for b in r["latency_ms"] if b in sib["latency_ms"] and r["latency_ms"][b]["p50"] > 0}}


def _vs_fastest_fp32(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per batch size: the fastest (lowest p50) fp32 artifact of the same variant in another
    format, and this row's speed-up over it (its p50 / this row's p50)."""
    others = [o for o in rows if o["variant"] == row["variant"] and o["format"] != row["format"]
              and o["precision"] == "fp32" and not o.get("error") and not o.get("skipped")]
    baseline, by_batch = {}, {}
    for b, stats in row["latency_ms"].items():
        timed = [o for o in others if b in o["latency_ms"]]
        if not timed or stats["p50"] <= 0:
            continue
        fastest = min(timed, key=lambda o: o["latency_ms"][b]["p50"])
        baseline[b] = fastest["key"]
        by_batch[b] = round(fastest["latency_ms"][b]["p50"] / stats["p50"], 3)
    return {"baseline": baseline, "by_batch": by_batch}


def run_bench(bundle: str | os.PathLike, *, threads: int | None = None, warmup: int = 3, runs: int = 10,
              batch_sizes: list[int] | tuple[int, ...] = (1, 8), out: str | os.PathLike | None = None,
              variants: list[str] | None = None, progress=None,
              serving_probe: Callable[[int], dict[str, Any]] | None = None,
              export_run: str | os.PathLike | None = None) -> BenchReport:
    """Benchmark every artifact of the bundle directory `bundle`; write bench.{json,md,png} into
    `out` (default `<bundle>/bench/`). Inside the bundle, manifest.json is rewritten to list them
    and the .tar.gz (if any) re-packed, so the bundle still verifies. Returns the bench document.

    Besides the per-artifact table: paired batch-1 timings per variant (export.bench.paired),
    `serving_probe(threads)` if given (the server's load run: serving/ measures it, the CLI passes
    it in) and the export's own record (`export_run`, default `<bundle>.export.json` beside the
    bundle); bench.md opens with the targets (export.bench.targets) judged on all of them."""
    from export.bundle import layout as bundle_mod
    from export.quality import golden
    root = Path(bundle)
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory; give dist/<name>-<version>")
    manifest = bundle_mod.read_manifest(root)
    if warmup < 0 or runs < 1:
        raise UsageError(f"--warmup must be >= 0 and --runs >= 1, got {warmup} and {runs}")
    batch_sizes = sorted(set(batch_sizes))
    threads = threads or os.cpu_count() or 1
    artifacts = list(manifest.artifacts)
    if variants:
        unknown = sorted(set(variants) - {a.variant for a in artifacts})
        if unknown:
            raise UsageError(f"variant(s) {unknown} not in {root}; it has {sorted({a.variant for a in artifacts})}")
        artifacts = [a for a in artifacts if a.variant in variants]
    if not artifacts:
        raise BundleError(f"{root / bundle_mod.MANIFEST} lists no artifacts to benchmark")
    for v in sorted({a.variant for a in artifacts}):
        if not golden.exists(root, v):
            raise BundleError(f"{root} has no golden files for variant {v!r} (golden/{v}/): "
                              "cannot measure top-1 agreement; re-export the bundle")
    note = progress or (lambda *_: None)
    started = time.perf_counter()
    env = environment(threads)
    ceiling_job = {"kind": "ceiling", "n": CEILING_N, "reps": CEILING_REPS, "threads": threads}
    note("ceiling", f"float32 matmul {CEILING_N}x{CEILING_N}, {threads} threads (start of the run)")
    first = _in_fresh_process(ceiling_job, threads)
    flops = {v: gflop_per_image(asdict(manifest.variants[v])) for v in {a.variant for a in artifacts}}
    rows = []
    job = {"kind": "artifact", "root": str(root.resolve()), "threads": threads, "warmup": warmup,
           "runs": runs, "batch_sizes": batch_sizes}
    def hints(a) -> tuple[str | None, ...]:  # one row per runner precision hint (OpenVINO: f32, bf16)
        return get_format(a.format).precision_hints or (None,)
    measured = [(a, hint) for a in sorted(artifacts, key=lambda a: (a.variant, hints(a) != (None,), a.format,
                                                                     a.precision != "fp32", a.precision))
                for hint in hints(a)]
    for a, hint in measured:
        label = f"{a.key}@{hint}" if hint else a.key
        note(label, "measuring")
        load_1m = round(os.getloadavg()[0], 2)
        t = time.perf_counter()
        result = _in_fresh_process({**job, "artifact": a.to_dict(), "precision_hint": hint}, threads)
        row = {"key": a.key, "label": label, "precision_hint": hint or "", "variant": a.variant, "format": a.format,
               "precision": a.precision, "path": a.path, "bytes": a.bytes,
               "gflop_per_image": flops[a.variant]["total"], "error": None, "skipped": None,
               "device": None, "load_s": None, "first_inference_s": None, "latency_ms": {},
               "peak_rss_mb": None, "rss_load_mb": None, "top1": None, "load_1m": load_1m, **result}
        counts = get_format(a.format).bench_threads
        if counts and not row["error"]:
            note(a.key, f"at {' and '.join(map(str, counts))} threads, batch 1")
            row["thread_sweep"] = _thread_sweep(row, a, job, counts)
        row["wall_s"] = round(time.perf_counter() - t, 2)
        note(label, row["error"] or row["skipped"] or f"done in {row['wall_s']} s")
        rows.append(row)
    paired = {}
    from export.bench import paired as bench_paired
    for variant, arts in sorted(bench_paired.plan(artifacts).items()):
        note(f"{variant}/paired", f"batch 1, {len(arts)} artifacts in turn, {bench_paired.ROUNDS} rounds")
        paired[variant] = _in_fresh_process({**job, "kind": "paired", "artifacts": [a.to_dict() for a in arts]},
                                            threads)
    serving: dict[str, Any] | None = None
    if serving_probe is not None:
        note("serving", "local server, gRPC: batch-1 overhead and 8 clients with batching on/off")
        try:
            serving = serving_probe(threads)
        except Exception as e:  # noqa: BLE001 -- a failed load run is reported in the targets, not fatal
            from export.core.errors import first_line
            serving = {"error": f"{type(e).__name__}: {first_line(e)}"}
    note("ceiling", f"float32 matmul {CEILING_N}x{CEILING_N}, {threads} threads (end of the run)")
    ceiling = _ceiling_summary(first, _in_fresh_process(ceiling_job, threads), threads)
    _derive(rows, ceiling["gflops"])
    timings = [asdict(t) for t in manifest.export_timings]
    env["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = {"format_version": BENCH_FORMAT_VERSION, "bundle": root.resolve().name,
           "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
           "environment": env,
           "settings": {"threads": threads, "warmup": warmup, "batch_sizes": batch_sizes,
                        "runs": {str(b): runs_at(b, runs) for b in batch_sizes}, "device": "CPU",
                        "isolation": ISOLATION,
                        "latency": "wall time of Runner.infer (feed check, LiteRT (de)quantization included) "
                                   "on the sample photos, after the warm-up runs at that batch size",
                        "tensorflow_threads": f"intra-op {threads}, inter-op 1",
                        "thread_sweep": {f: list(FORMATS[f].bench_threads) for f in FORMATS
                                         if FORMATS[f].bench_threads}},
           "ceiling": ceiling, "flops": flops, "artifacts": rows,
           "export_timings": timings, "export_total_s": round(sum(t["seconds"] for t in timings), 2),
           "paired": paired, "serving": serving, "export_run": _export_run(root, export_run),
           "seconds": round(time.perf_counter() - started, 1)}
    from export.bench.targets import evaluate
    doc["targets"] = [t.to_dict() for t in evaluate(doc)]
    note("results", "writing bench.json, bench.md, bench.png (and re-listing them in manifest.json, "
                    "re-packing the .tar.gz when there is one)")
    report = BenchReport.from_dict(doc)  # the typed document; what is written is its to_dict()
    report.files = write_results(root, report, out)
    return report


def _export_run(root: Path, path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The export's run record (wall, CPU, peak RSS): `path`, or `<bundle>.export.json` beside it."""
    from export.pipeline.run import EXPORT_RUN_SUFFIX
    p = Path(path) if path else root.resolve().with_name(root.resolve().name + EXPORT_RUN_SUFFIX)
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_results(root: Path, report: BenchReport, out: str | os.PathLike | None = None) -> list[str]:
    """Write bench.json/.md/.png atomically; inside the bundle, re-list them in the manifest and
    re-pack the tarball. Returns the paths written."""
    from export.bench.report import plot, render_markdown
    from export.core.atomic import ensure_writable_dir, write_text
    out_dir = ensure_writable_dir(Path(out) if out else root / BENCH_DIR)
    paths = [out_dir / "bench.json", out_dir / "bench.md", out_dir / "bench.png"]
    inside = out_dir.resolve().is_relative_to(root.resolve())
    report.files = [p.resolve().relative_to(root.resolve()).as_posix() if inside else str(p) for p in paths]
    doc = report.to_dict()
    write_text(paths[0], json.dumps(doc, indent=2) + "\n")
    write_text(paths[1], render_markdown(doc))
    plot(doc, paths[2])
    if inside:
        _relist(root, doc)
    return doc["files"]


def _relist(root: Path, doc: dict[str, Any]) -> None:
    """Rewrite manifest.json (every field kept, plus a `bench` summary) and re-pack the tarball."""
    from export.bundle import layout as bundle_mod
    from export.core.atomic import write_text
    readme = root / "README.md"
    if readme.is_file() and "## Benchmarks" not in readme.read_text():
        write_text(readme, readme.read_text().rstrip("\n") + "\n\n" + bundle_mod.BENCH_README_SECTION)
    manifest = bundle_mod.read_manifest(root)
    manifest.bench = {
        "created_at": doc["created_at"], "files": doc["files"], "cpu_model": doc["environment"]["cpu_model"],
        "threads": doc["settings"]["threads"], "ceiling_gflops": doc["ceiling"].get("gflops"),
        "artifacts": {r["label"]: None if r["error"] or r["skipped"] else {
            "p50_ms": {b: s["p50"] for b, s in r["latency_ms"].items()},
            "images_per_s": max(s["images_per_s"] for s in r["latency_ms"].values()),
            "top1_agreement": r["top1"]["agreement"]} for r in doc["artifacts"]}}
    signature = root / "signature.sig"
    if signature.is_file():  # it signed the manifest rewritten here: left in place it would read as tampering
        signature.unlink()
        print(f"bench: removed {signature}, which signed the previous manifest; re-sign the bundle: "
              f"resnet-deploy sign {root} --private-key KEY.pem", file=sys.stderr, flush=True)
    bundle_mod.write_manifest(root, manifest)
    tar = root.with_name(root.name + ".tar.gz")
    if tar.is_file():
        bundle_mod.pack(root)


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
