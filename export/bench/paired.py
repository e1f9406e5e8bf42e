"""Paired batch-1 timing: a variant's artifacts loaded in one process and run in turn, round after
round, so that whatever else the machine is doing slows them alike and their ratios hold.

On a shared 2-core machine, timing artifacts one after another (each in its own process, as the
main bench table does) lets a neighbour's burst land on one of them only: speed-ups measured that
way moved by 30 % between runs. The speed-up targets are judged on these paired numbers instead:
per round, fp32 time / int8 time, and the median over the rounds.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

#: Timed rounds (each runs every artifact once) and warm-up runs per artifact.
ROUNDS = 15
WARMUP = 3
#: Pause before each timed run: ONNX Runtime's and TensorFlow's thread pools spin-wait after a run
#: (ORT's allow_spinning, Eigen's spinning workers), which would steal cycles from the next
#: runtime's run in the same process.
PAUSE_S = 0.02


def plan(artifacts: list[Any]) -> dict[str, list[Any]]:
    """Per variant, the artifacts the speed-up targets compare: every fp32 artifact, ONNX int8,
    TFLite int8."""
    out: dict[str, list[Any]] = {}
    for a in artifacts:
        if a.precision == "fp32" or (a.format in ("onnx", "tflite") and a.precision == "int8"):
            out.setdefault(a.variant, []).append(a)
    return {v: arts for v, arts in out.items() if any(a.precision == "int8" for a in arts)}


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Load every artifact of the job, warm up, run ROUNDS rounds at batch 1; p50 per artifact and
    median paired speed-ups (ONNX int8 vs ONNX fp32, TFLite int8 vs the fastest fp32)."""
    from export.core.registry import get_format
    from export.formats import Artifact
    from export.model import samples
    from export.quality import golden
    from export.runtimes import runner_for
    root, threads = Path(job["root"]), job["threads"]
    arts = [Artifact.from_dict(a) for a in job["artifacts"]]
    for fmt in {a.format for a in arts}:
        get_format(fmt).runner_class().preload(threads)
    from export.runtimes.onnxruntime import OnnxRuntimeRunner
    # Two ORT sessions (fp32, int8) share this process: without this, the one that just ran spins
    # its threads through the other's run (measured: int8 2x slower here than in its own process).
    OnnxRuntimeRunner.session_config = {"session.intra_op.allow_spinning": "0"}
    ref = golden.load(root, arts[0].variant)
    rows = [i for i, name in enumerate(ref.names) if name in samples.PHOTO_NAMES]
    feed = {"image": np.ascontiguousarray(ref.inputs[rows[:1]], dtype=np.float32)}
    runners = {a.key: runner_for(a, root=root, device="CPU", num_threads=threads).load() for a in arts}
    try:
        for r in runners.values():
            for _ in range(job.get("warmup", WARMUP)):
                r.infer(feed)
        times: dict[str, list[float]] = {k: [] for k in runners}
        for i in range(job.get("rounds", ROUNDS)):
            order = list(runners.items())
            order = order[i % len(order):] + order[:i % len(order)]  # no artifact always runs first
            for key, r in order:
                time.sleep(PAUSE_S)  # the previous runtime's spinning worker threads go idle first
                t = time.perf_counter()
                r.infer(feed)
                times[key].append(time.perf_counter() - t)
    finally:
        for r in runners.values():
            r.close()
    ms = {k: np.asarray(v) * 1e3 for k, v in times.items()}
    p50 = {k: round(float(np.median(v)), 3) for k, v in ms.items()}
    by = {(a.format, a.precision): a.key for a in arts}
    fp32 = [a.key for a in arts if a.precision == "fp32"]
    fastest = min(fp32, key=lambda k: p50[k]) if fp32 else None

    def ratio(num: str | None, den: str | None) -> float | None:
        if num is None or den is None:
            return None
        return round(float(np.median(ms[num] / ms[den])), 3)
    return {"variant": arts[0].variant, "threads": threads, "rounds": len(next(iter(ms.values()))),
            "p50_ms": p50, "min_ms": {k: round(float(v.min()), 3) for k, v in ms.items()},
            "fastest_fp32": fastest,
            "speedups": {"onnx_int8_vs_onnx_fp32": ratio(by.get(("onnx", "fp32")), by.get(("onnx", "int8"))),
                         "tflite_int8_vs_fastest_fp32": ratio(fastest, by.get(("tflite", "int8"))),
                         "tflite_int8_vs_tflite_fp32": ratio(by.get(("tflite", "fp32")), by.get(("tflite", "int8")))}}
