"""The bench's measuring worker: one job (an artifact, the matmul ceiling or a paired timing) in a
fresh Python process, so memory and thread pools never bleed across artifacts.

The parent calls `in_fresh_process(job, threads)`; the child (`python -m export.bench.worker JOB
RESULT`) reads the job file, measures, and writes the result file.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.core.processes import peak_rss_bytes
from export.core.registry import get_format

#: Seconds one artifact's measuring process may take before it is recorded as failed.
WORKER_TIMEOUT_S = 900


def runs_at(batch: int, runs: int) -> int:
    """Timed runs at a batch size: `runs` at batch 1, half as many (at least 1) at larger batches."""
    return runs if batch == 1 else max(1, (runs + 1) // 2)


def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = str(Path(__file__).resolve().parents[2])  # the repository
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def in_fresh_process(job: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run one job (`_worker`) in a new Python process; {"error": ...} if it fails."""
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-bench.") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        try:
            proc = subprocess.run([sys.executable, "-m", "export.bench.worker", str(job_path), str(out_path)],
                                  env=_thread_env(threads), capture_output=True, text=True, check=False,
                                  timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {WORKER_TIMEOUT_S} s"}
        if proc.returncode != 0 or not out_path.is_file():
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            return {"error": (lines[-1] if lines else f"exit code {proc.returncode}")[:300]}
        return json.loads(out_path.read_text())


def _ceiling(n: int, reps: int, threads: int) -> list[dict[str, Any]]:
    """Float32 n x n matmul GFLOP/s with NumPy and with TensorFlow, `threads` threads each."""
    from export.bench.ceilings import time_matmul
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    out = [{"library": "numpy", "kernel": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
            **time_matmul(lambda: a @ b, n, reps)}]
    from export.runtimes.tensorflow import TensorFlowRunner
    TensorFlowRunner.preload(threads)
    import tensorflow as tf
    with tf.device("/CPU:0"):
        ta, tb = tf.constant(a), tf.constant(b)
        fn = tf.function(lambda x, y: tf.linalg.matmul(x, y))
        out.append({"library": "tensorflow", "kernel": f"tf.linalg.matmul (TensorFlow {tf.__version__})",
                    **time_matmul(lambda: fn(ta, tb).numpy(), n, reps)})
    return out


def stats(seconds: list[float], batch: int) -> dict[str, Any]:
    """Latency of `batch`-image runs (ms): median, p90 and the slowest run (`max`: a p99 of the ten
    or so runs a bench times would only be the maximum under another name), mean, fastest, and
    images per second at the mean."""
    ms = np.asarray(seconds) * 1e3
    mean = float(ms.mean())
    return {"runs": len(ms), "p50": round(float(np.percentile(ms, 50)), 3),
            "p90": round(float(np.percentile(ms, 90)), 3), "max": round(float(ms.max()), 3),
            "mean": round(mean, 3), "min": round(float(ms.min()), 3),
            "images_per_s": round(batch * 1e3 / mean, 3)}


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
            latency[str(b)] = stats(times, b)
        # OpenVINO's per-layer counters at batch 1 (export.runtimes.openvino.OpenVINORunner.layer_profile),
        # after the timed runs, on a copy compiled with the counters on: the timings above never carry them
        profile = None
        if job.get("layer_profile"):
            from export.runtimes.openvino import OpenVINORunner
            if isinstance(runner, OpenVINORunner):
                profile = runner.layer_profile({"image": photos[:1]})
        chunk = max(job["batch_sizes"])
        top1 = np.concatenate([np.argmax(runner.infer({"image": photos[i:i + chunk]})["logits"], axis=-1)
                               for i in range(0, len(photos), chunk)])
        device = runner.device
    agree = int((top1 == ref_top1).sum())
    peak = peak_rss_bytes()
    return {"device": device, "load_s": round(load_s, 4), "first_inference_s": round(first_s, 4),
            "latency_ms": latency, **({"layer_profile": profile} if profile else {}),
            "peak_rss_mb": round(peak / 2**20, 1), "rss_load_mb": round((peak - rss_before) / 2**20, 1),
            "top1": {"agree": agree, "total": len(rows), "agreement": round(agree / max(1, len(rows)), 4),
                     "photos": [ref.names[i] for i in rows],
                     "reference": f"{ref.meta.get('reference', 'keras')} fp32 outputs in golden/{art.variant}/"}}


def _worker(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    if job["kind"] == "ceiling":
        from export.bench import ceilings
        from export.core import cpu_features
        result = {"measurements": _ceiling(job["n"], job["reps"], job["threads"]),
                  "precisions": ceilings.measure(job["n"], job["reps"], job["threads"],
                                                 cpu_features.bf16_unit(cpu_features.cpu_flags()))}
    elif job["kind"] == "paired":
        from export.bench.paired import measure
        result = measure(job)
    else:
        result = _measure(job)
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
