"""Paired timing: a variant's artifacts (every one, at each runner precision hint) loaded in one
process and run in turn, round after round, at each batch size, so that whatever else the
machine is doing slows them alike and their ratios hold.

On a shared 2-core machine, timing artifacts one after another (each in its own process, as the
isolated table does) lets a neighbour's burst land on one of them only: speed-ups measured that
way moved by 30 % between runs (conv's ONNX int8 read 1.81x ONNX fp32 isolated and 2.90x paired
in one run). Speed-ups are therefore taken from these paired rounds only: per round, one
artifact's time / the other's, and the median over the rounds; the isolated process is kept for
what only it measures (load time, peak RSS).

Each timed run is the second of two back-to-back calls of the same artifact: after a pause (the
previous runtime's spinning threads go idle), one untimed call wakes this runtime's threads and brings
its weights back into cache (the other artifacts of the round evicted them), as a model that serves a
stream of requests has them; then the timed call. Without the untimed call every row paid that cost,
a fixed few ms that weighed on the fast rows most: measured on a 2-core AMD EPYC (family 26), batch 1,
the three default variants one after the other with and without it, against the isolated p50s of a
`make bench` an hour before: without it, rows read up to 1.78x their isolated p50 (dense's TFLite
dynamic; conv's ONNX fp32 1.47x), with it every row 0.77-1.01x. The ceiling GEMMs are timed the same way.

The fp32, int8 and bf16 ceiling GEMMs (export.bench.ceilings.paired_kernels) run in the same rounds, so a
row's % of its own precision's ceiling is taken the same way: per round, its achieved rate / the fastest GEMM of
its precision in that round, and the median over the rounds (paired_pct). Against the best GEMM of the
run, measured at its start and end, the worst int8 row of one bundle read 69 % in one run and 53 % in
the next, 20 minutes apart, with the same artifacts: the ceiling had read 852 and 1096 GOP/s.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

#: Timed rounds at batch 1 by default (`bench --rounds`; each runs every artifact once; larger
#: batches get half as many, at least 5 or all that were asked for) and warm-up runs per artifact
#: and batch size.
ROUNDS = 15
WARMUP = 3
#: Pause before each artifact's two calls (untimed, then timed): ONNX Runtime's and TensorFlow's thread
#: pools spin-wait after a run (ORT's allow_spinning, Eigen's spinning workers), which would steal
#: cycles from the next runtime's run in the same process.
PAUSE_S = 0.02


def rounds_at(batch: int, rounds: int = ROUNDS) -> int:
    return rounds if batch == 1 else max(min(5, rounds), (rounds + 1) // 2)


def plan(artifacts: list[Any]) -> dict[str, list[Any]]:
    """Per variant, every artifact (the recommendation compares them all), in the manifest's order."""
    out: dict[str, list[Any]] = {}
    for a in artifacts:
        out.setdefault(a.variant, []).append(a)
    return out


def label(key: str, hint: str | None) -> str:
    return f"{key}@{hint}" if hint else key


def _runners(arts, root: Path, threads: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Every artifact at every precision hint of its format, loaded; a hint the CPU lacks is skipped."""
    from export.core.registry import get_format
    from export.runtimes import PrecisionUnavailable, runner_for
    runners: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for a in arts:
        for hint in get_format(a.format).precision_hints or (None,):
            name = label(a.key, hint)
            r = runner_for(a, root=root, device="CPU", num_threads=threads, precision_hint=hint)
            try:
                runners[name] = r.load()
            except PrecisionUnavailable as e:
                skipped[name] = e.skip_reason
    return runners, skipped


class _Kernel:
    """A ceiling GEMM where _time_rounds expects a runner (it ignores the feed); like every row, its
    timed run follows an untimed one, as the unpaired ceiling's best-of runs follow one another."""

    def __init__(self, run) -> None:
        self.run = run

    def infer(self, feed) -> None:
        self.run()


def paired_pct(entry: dict[str, Any], kernels: dict[str, dict[str, Any]], name: str, gflop: float,
               precision: str) -> float | None:
    """`name`'s % of its precision's ceiling in the paired rounds of one batch size (`entry`: a
    by_batch value; `gflop`: its GFLOP per call, per image x batch): per round, its rate / the fastest
    GEMM of `precision` in that round, median over the rounds. None where no such GEMM was timed."""
    times, ceiling = entry.get("times_ms", {}).get(name), entry.get("ceiling_ms") or {}
    labels = [k for k, m in kernels.items() if m.get("precision") == precision and k in ceiling]
    if not times or not labels:
        return None
    pcts = [100.0 * (gflop * 1e9 / t) / max(kernels[k]["ops"] / ceiling[k][i] for k in labels)
            for i, t in enumerate(times)]
    return round(float(np.median(pcts)), 2)


def ceiling_pct(entry: dict[str, Any], kernels: dict[str, dict[str, Any]], name: str, gflop: float,
                precision: str, best_gflops: float | None) -> float | None:
    """paired_pct; where the rounds hold no GEMM of `precision` (fp32 rows, a bench.json from before the
    GEMMs ran in the rounds): the row's paired p50 against `best_gflops`, the run's best GEMM (unrounded)."""
    pct = paired_pct(entry, kernels, name, gflop, precision)
    if pct is None and best_gflops:
        pct = pct_of_best(gflop, entry["p50_ms"][name], best_gflops)
    return pct


def pct_of_best(gflop: float, p50_ms: float, best_gflops: float) -> float:
    """A call of `gflop` GFLOP taking `p50_ms` ms, as a % of `best_gflops` (the run's best GEMM)."""
    return 100.0 * gflop * 1e3 / p50_ms / best_gflops


def _time_rounds(runners: dict[str, Any], feed: dict[str, np.ndarray], rounds: int, warmup: int) -> dict[str, list]:
    for r in runners.values():
        for _ in range(warmup):
            r.infer(feed)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(rounds):
        order = list(runners.items())
        order = order[i % len(order):] + order[:i % len(order)]  # no artifact always runs first
        for key, r in order:
            time.sleep(PAUSE_S)  # the previous runtime's spinning worker threads go idle first
            r.infer(feed)  # untimed: this runtime's threads awake, its weights back in cache (module doc)
            t = time.perf_counter()
            r.infer(feed)
            times[key].append(time.perf_counter() - t)
    return {k: [round(s * 1e3, 4) for s in v] for k, v in times.items()}


def paired_ratio(times: dict[str, list[float]], num: str | None, den: str | None) -> float | None:
    """Median over the rounds of times[num] / times[den] (how many times faster `den` is)."""
    if num is None or den is None or num not in times or den not in times:
        return None
    return round(float(np.median(np.asarray(times[num]) / np.asarray(times[den]))), 3)


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Load every artifact of the job, then per batch size warm up and run the rounds. Returns per
    batch size every label's per-round times, p50 and quartiles; at batch 1 also the legacy
    speed-ups of the targets (ONNX int8 vs ONNX fp32, TFLite int8 vs the fastest fp32)."""
    from export.core.registry import get_format
    from export.formats import Artifact
    from export.model import samples
    from export.quality import golden
    root, threads = Path(job["root"]), job["threads"]
    arts = [Artifact.from_dict(a) for a in job["artifacts"]]
    for fmt in {a.format for a in arts}:
        get_format(fmt).runner_class().preload(threads)
    from export.runtimes.onnxruntime import OnnxRuntimeRunner
    # Several ORT sessions share this process: without this, the one that just ran spins its
    # threads through the other's run (measured: int8 2x slower here than in its own process).
    OnnxRuntimeRunner.session_config = {"session.intra_op.allow_spinning": "0"}
    ref = golden.load(root, arts[0].variant)
    rows = [i for i, name in enumerate(ref.names) if name in samples.PHOTO_NAMES]
    photos = np.ascontiguousarray(ref.inputs[rows], dtype=np.float32)
    runners, skipped = _runners(arts, root, threads)
    kernels: dict[str, dict[str, Any]] = {}
    if job.get("ceiling_n"):  # the ceiling GEMMs, timed in the same rounds (paired_pct)
        from export.bench import ceilings
        from export.core import cpu_features
        kernels = ceilings.paired_kernels(job["ceiling_n"], threads, cpu_features.bf16_unit(cpu_features.cpu_flags()))
    timed = {**runners, **{f"ceiling/{k}": _Kernel(m["run"]) for k, m in kernels.items()}}
    by_batch: dict[str, Any] = {}
    try:
        for b in job.get("batch_sizes", [1]):
            feed = {"image": np.ascontiguousarray(np.resize(photos, (b, *photos.shape[1:])))}
            every = _time_rounds(timed, feed, rounds_at(b, job.get("rounds", ROUNDS)), job.get("warmup", WARMUP))
            times = {k: v for k, v in every.items() if k in runners}
            by_batch[str(b)] = {"rounds": len(next(iter(times.values()), [])), "times_ms": times,
                                "p50_ms": {k: round(float(np.median(v)), 3) for k, v in times.items()},
                                "p25_ms": {k: round(float(np.percentile(v, 25)), 3) for k, v in times.items()},
                                "p75_ms": {k: round(float(np.percentile(v, 75)), 3) for k, v in times.items()},
                                **({"ceiling_ms": {k: every[f"ceiling/{k}"] for k in kernels}} if kernels else {})}
    finally:
        for r in runners.values():
            r.close()
    first = by_batch.get("1") or next(iter(by_batch.values()))
    p50, times = first["p50_ms"], first["times_ms"]
    by = {(a.format, a.precision): a.key for a in arts}
    fp32 = [a.key for a in arts if a.precision == "fp32" and a.key in p50]
    fastest = min(fp32, key=lambda k: p50[k]) if fp32 else None
    return {"variant": arts[0].variant, "threads": threads, "rounds": first["rounds"], "skipped": skipped,
            "p50_ms": p50, "min_ms": {k: round(float(min(v)), 3) for k, v in times.items()},
            "fastest_fp32": fastest, "by_batch": by_batch,
            "ceiling_kernels": {k: {f: m[f] for f in ("precision", "library", "kernel", "ops")} for k, m in kernels.items()},
            "speedups": {"onnx_int8_vs_onnx_fp32": paired_ratio(times, by.get(("onnx", "fp32")), by.get(("onnx", "int8"))),
                         "tflite_int8_vs_fastest_fp32": paired_ratio(times, fastest, by.get(("tflite", "int8"))),
                         "tflite_int8_vs_tflite_fp32": paired_ratio(times, by.get(("tflite", "fp32")),
                                                                    by.get(("tflite", "int8")))}}
