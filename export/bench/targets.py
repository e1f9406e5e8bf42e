"""The speed targets of a bundle on the machine that benchmarks it: one table, judged from what
`make export` and `make bench` measured, printed first in bench.md. Never a test assertion.

Each value is read from the bench document (bench.json): `export_run` (the export's own record,
`<bundle>.export.json`), `paired` (batch-1 latencies of a variant's artifacts, interleaved in one
process so that other load on the machine hits them alike), the artifact rows with the matmul
ceiling, `serving` (the local server measured by serving.tools.loadtest) and the bench's own seconds.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """A number to reach: `value op limit` passes."""

    key: str
    what: str
    op: str      # "<=" or ">="
    limit: float
    unit: str    # "s", "x", "GiB", "%"

    def passes(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def show(self, value: float) -> str:
        return {"s": f"{value:.0f} s", "x": f"{value:.2f}x", "GiB": f"{value:.2f} GiB", "%": f"{value:.0f} %"}[self.unit]


TARGETS: tuple[Target, ...] = (
    Target("export_wall", "`make export` wall time (training excluded)", "<=", 240, "s"),
    Target("export_cpu", "`make export` CPU time / wall time", ">=", 1.6, "x"),
    Target("export_rss", "`make export` peak RSS, all its processes together (sampled sum)", "<=", 6.0, "GiB"),
    Target("onnx_int8", "ONNX int8 speed-up over ONNX fp32 at batch 1 (worst variant)", ">=", 2.5, "x"),
    Target("tflite_int8", "TFLite int8 speed-up over the fastest fp32 artifact of its variant at batch 1 "
                          "(worst variant)", ">=", 3.5, "x"),
    Target("int8_best", "fastest int8 artifact over the fastest fp32 artifact of its variant at batch 1, paired "
                        "(worst variant)", ">=", 3.5, "x"),
    Target("int8_ceiling", "that fastest int8 artifact at batch 1, % of the int8 GEMM ceiling, paired "
                            "(worst variant)",
           ">=", 70, "%"),
    Target("fp32_ceiling", "best fp32 artifact of each variant, % of the matmul ceiling, paired (worst variant)",
           ">=", 85, "%"),
    Target("grpc_overhead", "gRPC at batch 1: p50 added to the raw runner's p50", "<=", 15, "%"),
    Target("batching_gain", "8 gRPC clients: throughput with server-side batching on / off", ">=", 1.3, "x"),
    Target("bench_wall", "`make bench` wall time", "<=", 300, "s"),
)


@dataclass
class TargetResult:
    target: Target
    value: float | None
    detail: str

    @property
    def passed(self) -> bool | None:
        return None if self.value is None else self.target.passes(self.value)

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        return {"key": t.key, "what": t.what, "op": t.op, "limit": t.limit, "unit": t.unit,
                "value": self.value, "passed": self.passed, "detail": self.detail}


def _worst(per_variant: dict[str, float], lowest: bool = True) -> tuple[float | None, str]:
    if not per_variant:
        return None, "not measured"
    value = min(per_variant.values()) if lowest else max(per_variant.values())
    return value, ", ".join(f"{v} {x:.2f}" for v, x in sorted(per_variant.items()))


def _export(doc: dict[str, Any], key: str) -> tuple[float | None, str]:
    run = doc.get("export_run") or {}
    if not run.get("wall_s"):
        return None, "no export record (<bundle>.export.json) beside the bundle: run make export"
    load = run.get("load_average_start", ["?"])[0]
    where = f"{run.get('workers')} workers, 1-min load {load} at the start"
    if key == "export_wall":
        beside = run.get("training", {}).get("beside_export_s", 0.0)
        if beside >= 1:  # training heads, one thread each, beside the first variants' export tasks
            where += (f"; {beside:.0f} s of training ran beside the export (heads trained in this run): "
                      "with training cached the export alone is faster")
        return run["wall_s"], f"{where}{_export_split(run)}; stages in the export table below"
    if key == "export_cpu":
        return run["cpu_per_wall"], f"CPU {run['cpu_s']:.0f} s over wall {run['wall_s']:.0f} s"
    tasks = run.get("pool", {}).get("tasks", {})
    detail = "RSS of the pool's processes summed every 0.2 s (shared library pages count once per process)"
    if run.get("peak_total_pss_mb"):
        detail += f"; PSS sum (shared pages split) {run['peak_total_pss_mb'] / 1024:.2f} GiB"
    if tasks:
        key, top = max(tasks.items(), key=lambda kv: kv[1]["peak_rss_mb"])
        detail += f"; largest task {key} {top['peak_rss_mb'] / 1024:.2f} GiB"
    at_peak = run.get("pool", {}).get("rss_at_peak_mb")
    if at_peak:
        detail += "; at the peak: " + ", ".join(f"{k} {v / 1024:.2f}" for k, v in at_peak.items())
    return run["peak_total_rss_mb"] / 1024, detail


def _export_split(run: dict[str, Any]) -> str:
    """Where the export's wall time went, and the floor its CPU time puts under it on this machine's
    cores: the pool (conversions, parity, the accuracy gate) apart from the end-to-end parity from files,
    so that a reader of a FAIL sees whether any scheduling could have met the limit."""
    pool = run.get("pool") or {}
    parts = []
    if pool.get("wall_s") and pool.get("cpu_s"):
        parts.append(f"conversions, parity and the accuracy gate {pool['wall_s']:.0f} s ({pool['cpu_s']:.0f} CPU s)")
    e2e = sum(s.get("seconds", 0.0) for s in run.get("stages") or [] if s.get("stage") == "e2e")
    if e2e:
        parts.append(f"end-to-end parity from files {e2e:.0f} s")
    cores = run.get("cpu_count")
    if cores and run.get("cpu_s"):
        parts.append(f"{run['cpu_s']:.0f} CPU s over {cores} cores take at least {run['cpu_s'] / cores:.0f} s")
    return "".join(f"; {p}" for p in parts)


def _paired_speedup(doc: dict[str, Any], fmt: str) -> tuple[float | None, str]:
    values = {}
    for variant, p in sorted((doc.get("paired") or {}).items()):
        ratios = p.get("speedups", {})
        key = "onnx_int8_vs_onnx_fp32" if fmt == "onnx" else "tflite_int8_vs_fastest_fp32"
        if ratios.get(key) is not None:
            values[variant] = ratios[key]
    value, detail = _worst(values)
    if fmt == "tflite" and values:
        fastest = {v: p.get("fastest_fp32") for v, p in (doc.get("paired") or {}).items()}
        detail += "; fastest fp32: " + ", ".join(f"{v} {k}" for v, k in sorted(fastest.items()))
    return value, detail


#: Per variant: (speed-up over the fastest fp32 row, % of the int8 ceiling, int8 label, fp32 label,
#: (speed-up, label) against a faster float row of fp16 weights, or None).
Fastest = tuple[float, float | None, str, str, tuple[float, str] | None]


def _fastest_int8(doc: dict[str, Any]) -> dict[str, Fastest]:
    """Per variant, from the batch-1 paired rounds: the fastest int8 row's speed-up over the fastest
    fp32 row (median of the per-round ratios), its % of the int8 ceiling (export.bench.paired.paired_pct:
    against the int8 GEMMs of the same rounds), the two rows' labels, and its speed-up over the fastest
    row of float arithmetic whatever its weights' precision, where that is another row: OpenVINO's IR
    stores fp16 weights (labelled fp16) and computes in f32 at the `f32` hint (not at `bf16`)."""
    from export.bench.ceilings import best_by_precision
    from export.bench.paired import ceiling_pct, paired_ratio
    c = doc.get("ceiling") or {}
    int8 = best_by_precision([*c.get("measurements", []), *c.get("by_precision", [])]).get("int8")
    out = {}
    for variant, p in sorted((doc.get("paired") or {}).items()):
        b1 = (p.get("by_batch") or {}).get("1")
        if not b1:
            continue
        rows = {r["label"]: r for r in doc.get("artifacts", []) if r.get("variant") == variant and r["label"] in b1["p50_ms"]}
        fp32 = [k for k, r in rows.items() if r["precision"] == "fp32"]
        q = [k for k, r in rows.items() if r["precision"] == "int8"]
        if not fp32 or not q:
            continue
        f, i = min(fp32, key=b1["p50_ms"].get), min(q, key=b1["p50_ms"].get)
        ratio = paired_ratio(b1["times_ms"], f, i)
        floats = [k for k, r in rows.items() if r["precision"] in ("fp32", "fp16") and not k.endswith("@bf16")]
        fastest_float = min(floats, key=b1["p50_ms"].get)
        vs_float = paired_ratio(b1["times_ms"], fastest_float, i) if fastest_float != f else None
        # against the int8 GEMMs timed in the same rounds; a bench.json without them: the run's best GEMM
        pct = ceiling_pct(b1, p.get("ceiling_kernels") or {}, i, rows[i]["gflop_per_image"], "int8",
                          int8["gflops"] if int8 else None)
        if ratio is not None:
            out[variant] = (ratio, pct, i, f, None if vs_float is None else (vs_float, fastest_float))
    return out


def _int8_best(doc: dict[str, Any], key: str) -> tuple[float | None, str]:
    best = _fastest_int8(doc)
    if key == "int8_best":
        value, _ = _worst({v: x[0] for v, x in best.items()})
        detail = "; ".join(f"{v}: {i} {x:.2f}x {f}" for v, (x, _, i, f, _) in best.items()) or "not measured"
        floats = ", ".join(f"{v} {x[4][0]:.2f}x {x[4][1]}" for v, x in best.items() if x[4])
        if floats:  # shown, not judged
            detail += f"; against the fastest float row of any weight precision (f32 arithmetic, shown, not judged): {floats}"
        return value, detail
    pcts = {v: x[1] for v, x in best.items() if x[1] is not None}
    value, _ = _worst(pcts)
    return value, "; ".join(f"{v}: {best[v][2]} {x:.0f} %" for v, x in pcts.items()) or "not measured"


def _ceiling(doc: dict[str, Any]) -> tuple[float | None, str]:
    """Per variant, its best fp32 artifact's % of its ceiling, from the paired rounds (`pct_of_own_ceiling`,
    at the largest batch: the % bench.md's ceilings table shows), against the fp32 GEMM timed in those
    rounds (or the run's best matmul, in a bench.json whose rounds held none), with the run's-best reading
    shown beside it; a bench.json without paired rounds: each artifact's own process (`pct_of_ceiling`)."""
    fp32 = [r for r in doc.get("artifacts", []) if r.get("precision") == "fp32"]
    paired = any(r.get("pct_of_own_ceiling") is not None for r in fp32)
    field = "pct_of_own_ceiling" if paired else "pct_of_ceiling"
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for r in fp32:
        if r.get(field) is not None and (r["variant"] not in best or r[field] > best[r["variant"]][0]):
            best[r["variant"]] = (r[field], r)
    if not best:
        return None, "not measured"
    value, _ = _worst({v: x for v, (x, _) in best.items()})
    gflops = (doc.get("ceiling") or {}).get("gflops")
    detail = ", ".join(f"{v} {r['format']} {x:.0f} %" for v, (x, r) in sorted(best.items()))
    if not paired:
        return value, f"{detail} of {gflops} GFLOP/s (each artifact in its own process (no paired rounds))"
    from export.bench.paired import pct_of_best
    from export.bench.recommend import paired_ceilings
    if not paired_ceilings(doc, "fp32"):
        return value, f"{detail} of {gflops} GFLOP/s, the run's best matmul (paired rounds, largest batch)"
    detail += " of the fp32 GEMM timed in the same rounds (paired rounds, largest batch)"
    if not gflops:
        return value, detail
    vs_best = []
    for v, (_, r) in sorted(best.items()):
        top = max(r["paired_ms"], key=int)
        vs_best.append(f"{v} {pct_of_best(r['gflop_per_image'] * int(top), r['paired_ms'][top]['p50'], gflops):.0f} %")
    return value, f"{detail}; against the run's best matmul, {gflops} GFLOP/s (shown, not judged): {', '.join(vs_best)}"


def _serving(doc: dict[str, Any], key: str) -> tuple[float | None, str]:
    s = doc.get("serving") or {}
    if s.get("error"):
        return None, f"load run failed: {s['error']}"
    if key == "grpc_overhead":
        o = s.get("grpc_overhead")
        if not o:
            return None, "not measured (make bench runs it; --no-serving skips it)"
        return o["added_pct"], (f"{o['backend']} `{o['model']}`: gRPC p50 {o['grpc_p50_ms']:.1f} ms vs raw "
                                f"{o['raw_p50_ms']:.1f} ms; client encoding {o['encode_p50_ms']:.2f} ms (apart)")
    gains = {r["backend"]: r["gain"] for r in s.get("batching", []) if r.get("gain") is not None}
    if not gains:
        return None, "not measured (make bench runs it; --no-serving skips it)"
    first = s.get("target_backend", "savedmodel")
    value = gains.get(first, min(gains.values()))
    detail = "; ".join(f"{b} {g:.2f}x" for b, g in gains.items()) + f" (target judged on {first})"
    model = (s.get("grpc_overhead") or {}).get("model")
    bound = {r["format"]: r["latency_ms"]["8"]["images_per_s"] / r["latency_ms"]["1"]["images_per_s"]
             for r in doc.get("artifacts", []) if r.get("variant") == model and r.get("precision") == "fp32"
             and not r.get("error") and {"1", "8"} <= set(r.get("latency_ms", {}))}
    if bound:
        detail += ("; upper bound, the runner's own batch-8 / batch-1 images/s: "
                   + ", ".join(f"{f} {x:.2f}x" for f, x in sorted(bound.items())))
    return value, detail


READERS: dict[str, Callable[[dict[str, Any]], tuple[float | None, str]]] = {
    "export_wall": lambda d: _export(d, "export_wall"),
    "export_cpu": lambda d: _export(d, "export_cpu"),
    "export_rss": lambda d: _export(d, "export_rss"),
    "onnx_int8": lambda d: _paired_speedup(d, "onnx"),
    "tflite_int8": lambda d: _paired_speedup(d, "tflite"),
    "int8_best": lambda d: _int8_best(d, "int8_best"),
    "int8_ceiling": lambda d: _int8_best(d, "int8_ceiling"),
    "fp32_ceiling": _ceiling,
    "grpc_overhead": lambda d: _serving(d, "grpc_overhead"),
    "batching_gain": lambda d: _serving(d, "batching_gain"),
    "bench_wall": lambda d: (d.get("seconds") or None, "this run, measuring included, writing excluded"),
}


def evaluate(doc: dict[str, Any]) -> list[TargetResult]:
    """Every target judged on a bench document (a target without its measurement is 'not measured')."""
    return [TargetResult(t, *READERS[t.key](doc)) for t in TARGETS]


def render_markdown(results: list[TargetResult]) -> list[str]:
    """The targets table: target, limit, measured, pass/fail, where the number came from."""
    lines = ["## Targets", "", "| target | limit | measured | verdict | detail |", "|---|---:|---:|---|---|"]
    for r in results:
        t = r.target
        verdict = {True: "**pass**", False: "**FAIL**", None: "not measured"}[r.passed]
        measured = "–" if r.value is None else t.show(r.value)
        lines.append(f"| {t.what} | {t.op} {t.show(t.limit)} | {measured} | {verdict} | {r.detail} |")
    passed = sum(1 for r in results if r.passed)
    lines += ["", f"{passed} of {len(results)} targets met (judged from the numbers of this run; see below).", ""]
    return lines
