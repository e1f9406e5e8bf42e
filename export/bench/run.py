"""Benchmarks: how fast every artifact of a bundle runs on this machine, against its own ceiling.

`resnet-deploy bench BUNDLE` (`make bench`) measures every artifact in the bundle's manifest, each
in a fresh Python process (so memory and thread pools never bleed across artifacts): load time,
latency percentiles per batch size, throughput, peak RSS and top-1 agreement with the fp32
reference; plus a float32 matmul ceiling, achieved GFLOP/s and quantized speed-ups, all measured
in the same run. Formats with a runner precision hint (OpenVINO: f32, bf16) get one row per
hint, with their speed-up over the fastest fp32 artifact of another format; a bf16 row on a CPU
without bf16 units reads "skipped: no bf16 hardware". The header names the CPU's matrix and
dot-product units (AMX, AVX512-BF16, VNNI). Writes `<bundle>.bench/bench.{json,md,png}` beside
the bundle (export.bench.results); the bundle itself is checked, never changed.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from export.bench.ceilings import row_precision
from export.bench.document import BENCH_FORMAT_VERSION, BenchReport, counted
from export.bench.flops import gflop_per_image
from export.bench.paired import rounds_at
from export.bench.results import write_results
from export.bench.worker import in_fresh_process, runs_at
from export.core.errors import BundleError, UsageError
from export.core.registry import FORMATS, get_format

#: The float32 matmul that measures the machine's ceiling: matrix size and timed repetitions.
#: It runs with NumPy (its BLAS) and TensorFlow (oneDNN/Eigen), at the start and the end of a run;
#: the ceiling is the best of them (a BLAS without kernels for the CPU's widest vectors, or a
#: neighbour process busy during one measurement, would understate it).
CEILING_N = 2048
CEILING_REPS = 8
CEILING_LIBRARIES = ("numpy", "tensorflow")
#: (format, precision hint) of the rows whose per-layer counters the bench records at batch 1 in
#: their own process (`layer_profile`; bench.md's "Where the time goes"): OpenVINO at the f32 hint, the
#: int8 IR's integer kernels beside the fp16 IR's float ones, layer group by layer group.
LAYER_PROFILE = {("openvino", "f32")}
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
    from export.core import cpu_features
    from export.core.versions import CONVERTERS, tool_versions
    versions = tool_versions((*CONVERTERS, "numpy", "matplotlib", "psutil"))
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads,
            "cpu_features": cpu_features.detect(cpu_features.cpu_flags()),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()], "tool_versions": versions}


# -- the run --------------------------------------------------------------------------------------

def _thread_sweep(row: dict[str, Any], artifact, job: dict[str, Any], counts: tuple[int, ...]) -> dict[str, Any]:
    """Batch-1 latency of one artifact with each of `counts` threads (the registry's bench_threads),
    each in a fresh process; the main measurement stands in when it ran with that many threads."""
    out: dict[str, Any] = {}
    for n in counts:
        if n == job["threads"] and "1" in row["latency_ms"]:
            stats = row["latency_ms"]["1"]
        else:
            result = in_fresh_process({**job, "artifact": artifact.to_dict(), "threads": n, "batch_sizes": [1]}, n)
            if result.get("error"):
                out[str(n)] = {"error": result["error"]}
                continue
            stats = result["latency_ms"]["1"]
        out[str(n)] = {k: stats[k] for k in ("runs", "p50", "p90", "max", "images_per_s")}
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
            "by_precision": [{**m, "when": when} for when, r in (("start", start), ("end", end))
                             for m in r.get("precisions", [])],  # int8 and bf16 (export.bench.ceilings)
            "error": "; ".join(errors) or None}


def _derive(rows: list[dict[str, Any]], ceiling: float | None) -> None:
    """Achieved GFLOP/s (fp32 and precision-hint rows) and its % of the fp32 matmul ceiling (rows held to
    that ceiling: export.bench.ceilings.row_precision), speed-up over the fp32 sibling (quantized) or over
    the fastest fp32 artifact of another format (hint rows), computed from the numbers stored in the rows
    (each artifact's own process; recommend.apply_paired replaces the speed-ups with paired ones and adds
    `pct_of_own_ceiling`, the paired % that bench.md and the targets show)."""
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
            if ceiling and row_precision(r) == "fp32":  # an int8 IR at the f32 hint is held to the int8 GEMM
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
              rounds: int | None = None,
              batch_sizes: list[int] | tuple[int, ...] = (1, 8), out: str | os.PathLike | None = None,
              variants: list[str] | None = None, progress=None,
              serving_probe: Callable[[int], dict[str, Any]] | None = None,
              export_run: str | os.PathLike | None = None, wait: bool = False) -> BenchReport:
    """Benchmark every artifact of the bundle directory `bundle`; write bench.{json,md,png} into
    `out` (default `<bundle>.bench/` beside the bundle). Returns the bench document.

    The bundle's files are checked against its manifest first: a bundle changed since it was
    exported is refused (BundleError naming the files) before anything is loaded. Nothing in the
    bundle is written (manifest, signature and tarball stay as exported). The run holds the lock
    of the bundle's parent directory (export/core/locks.py), so `make export` cannot replace or
    sweep the bundle while it is being measured (a busy one refuses, or is waited for: wait=True).

    Besides the per-artifact table: paired batch-1 timings per variant (export.bench.paired),
    `serving_probe(threads)` if given (the server's load run: serving/ measures it, the CLI passes
    it in) and the export's own record (`export_run`, default `<bundle>.export.json` beside the
    bundle); bench.md opens with the targets (export.bench.targets) judged on all of them."""
    from export.core.locks import exclusive_output
    root = Path(bundle)
    if warmup < 0 or runs < 1 or (rounds is not None and rounds < 1):
        raise UsageError(f"--warmup must be >= 0, --runs and --rounds >= 1, got {warmup}, {runs} and {rounds}")
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory; give dist/<name>-<version>")
    with exclusive_output(root.resolve().parent, command=f"resnet-deploy bench {root.name}", wait=wait, sweep=False):
        return _run_bench(root, threads, warmup, runs, rounds, batch_sizes, out, variants, progress, serving_probe,
                          export_run)


def _run_bench(root: Path, threads: int | None, warmup: int, runs: int, rounds: int | None, batch_sizes, out, variants, progress,
               serving_probe, export_run) -> BenchReport:
    manifest, artifacts = _artifacts_to_measure(root, variants)
    batch_sizes = sorted(set(batch_sizes))
    threads = threads or os.cpu_count() or 1
    note = progress or (lambda *_: None)
    started = time.perf_counter()
    env = environment(threads)
    ceiling_job = {"kind": "ceiling", "n": CEILING_N, "reps": CEILING_REPS, "threads": threads}
    note("ceiling", f"float32 matmul {CEILING_N}x{CEILING_N}, {counted(threads, 'thread')} (start of the run)")
    first = in_fresh_process(ceiling_job, threads)
    flops = {v: gflop_per_image(asdict(manifest.variants[v])) for v in {a.variant for a in artifacts}}
    job = {"kind": "artifact", "root": str(root.resolve()), "threads": threads, "warmup": warmup,
           "runs": runs, "batch_sizes": batch_sizes}
    rows = _measure_artifacts(artifacts, job, flops, note)
    paired = {}
    from export.bench import paired as bench_paired
    rounds = rounds or bench_paired.ROUNDS
    for variant, arts in sorted(bench_paired.plan(artifacts).items()):
        note(f"{variant}/paired", f"batch {', '.join(map(str, batch_sizes))}: {len(arts)} artifacts in turn, "
                                  f"{rounds} rounds at batch 1")
        paired[variant] = in_fresh_process({**job, "kind": "paired", "rounds": rounds, "ceiling_n": CEILING_N,
                                            "artifacts": [a.to_dict() for a in arts]},
                                           threads)
    serving = _serving(serving_probe, threads, note)
    note("ceiling", f"float32 matmul {CEILING_N}x{CEILING_N}, {counted(threads, 'thread')} (end of the run)")
    ceiling = _ceiling_summary(first, in_fresh_process(ceiling_job, threads), threads)
    _derive(rows, ceiling["gflops"])
    timings = [asdict(t) for t in manifest.export_timings]
    env["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = {"format_version": BENCH_FORMAT_VERSION, "bundle": root.resolve().name,
           "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
           "environment": env, "settings": _settings(threads, warmup, runs, batch_sizes, rounds),
           "ceiling": ceiling, "flops": flops, "artifacts": rows,
           "export_timings": timings, "export_total_s": round(sum(t["seconds"] for t in timings), 2),
           "paired": paired, "serving": serving, "export_run": _export_run(root, export_run),
           "seconds": round(time.perf_counter() - started, 1)}
    from export.bench import recommend
    doc["recommended"] = recommend.compute(doc, root)  # paired speed-ups onto the rows, then the deploy choice
    from export.bench.targets import evaluate
    doc["targets"] = [t.to_dict() for t in evaluate(doc)]
    note("results", "writing bench.json, bench.md, bench.png")
    report = BenchReport.from_dict(doc)  # the typed document; what is written is its to_dict()
    report.files = write_results(root, report, out)
    return report


def _artifacts_to_measure(root: Path, variants: list[str] | None) -> tuple[Any, list]:
    """The bundle's manifest and the artifacts to measure (of `variants`, if given); BundleError or
    UsageError before anything runs when a file differs from the manifest, or a variant or its
    golden files are missing."""
    from export.bundle import layout as bundle_mod
    from export.quality import golden
    manifest = bundle_mod.read_manifest(root)
    files = bundle_mod.check_files(root, manifest)
    if not files:
        raise BundleError(f"refusing to benchmark {root}: its files do not match manifest.json "
                          f"({'; '.join(files.problems()[:3])}); check it with `resnet-deploy verify` "
                          "and re-export it")
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
    return manifest, artifacts


def _measure_artifacts(artifacts: list, job: dict[str, Any], flops: dict[str, Any], note) -> list[dict[str, Any]]:
    """One row per artifact and runner precision hint, each measured in a fresh process."""
    threads = job["threads"]

    def hints(a) -> tuple[str | None, ...]:  # one row per runner precision hint (OpenVINO: f32, bf16)
        return get_format(a.format).precision_hints or (None,)
    measured = [(a, hint) for a in sorted(artifacts, key=lambda a: (a.variant, hints(a) != (None,), a.format,
                                                                     a.precision != "fp32", a.precision))
                for hint in hints(a)]
    rows = []
    for a, hint in measured:
        label = f"{a.key}@{hint}" if hint else a.key
        note(label, "measuring")
        load_1m = round(os.getloadavg()[0], 2)
        t = time.perf_counter()
        result = in_fresh_process({**job, "artifact": a.to_dict(), "precision_hint": hint,
                                   "layer_profile": (a.format, hint) in LAYER_PROFILE}, threads)
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
    return rows


def _serving(serving_probe: Callable[[int], dict[str, Any]] | None, threads: int, note) -> dict[str, Any] | None:
    """The local server's load run, if a probe was given; its error is reported, not raised."""
    if serving_probe is None:
        return None
    note("serving", "local server, gRPC: batch-1 overhead and 8 clients with batching on/off")
    try:
        return serving_probe(threads)
    except Exception as e:  # noqa: BLE001 -- a failed load run is reported in the targets, not fatal
        from export.core.errors import first_line
        return {"error": f"{type(e).__name__}: {first_line(e)}"}


def _settings(threads: int, warmup: int, runs: int, batch_sizes: list[int], rounds: int) -> dict[str, Any]:
    """How the run measured: threads, warm-up, runs per batch size, isolation, what latency is."""
    return {"threads": threads, "warmup": warmup, "batch_sizes": batch_sizes,
            "runs": {str(b): runs_at(b, runs) for b in batch_sizes},
            "paired_rounds": {str(b): rounds_at(b, rounds) for b in batch_sizes}, "device": "CPU",
            "isolation": ISOLATION,
            "latency": "wall time of Runner.infer (feed check, LiteRT (de)quantization included) "
                       "on the sample photos, after the warm-up runs at that batch size",
            "tensorflow_threads": f"intra-op {threads}, inter-op 1",
            "thread_sweep": {f: list(FORMATS[f].bench_threads) for f in FORMATS
                             if FORMATS[f].bench_threads}}


def _export_run(root: Path, path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The export's run record (wall, CPU, peak RSS): `path`, or `<bundle>.export.json` beside it."""
    from export.pipeline.run import EXPORT_RUN_SUFFIX
    p = Path(path) if path else root.resolve().with_name(root.resolve().name + EXPORT_RUN_SUFFIX)
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None

