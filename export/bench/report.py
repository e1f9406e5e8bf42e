"""bench.md and bench.png from a bench document (export.bench.run.run_bench's result).

The Markdown holds the tables (machine ceiling, every artifact's speed, memory and accuracy, the
export stages); the chart plots latency vs file size coloured by top-1 agreement, one panel per
variant. Both state the CPU, thread count and versions they were measured with.
"""
from __future__ import annotations

import io
import os
from typing import Any

from export.bench.document import counted
from export.core.registry import FORMATS


def plot(doc: dict[str, Any], path: str | os.PathLike) -> None:
    """Draw the chart for a bench document (run_bench's result) and write it atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import ScalarFormatter

    from export.core.atomic import write_bytes
    rows = [r for r in doc["artifacts"] if not r["error"] and not r.get("skipped")]
    variants = sorted({r["variant"] for r in doc["artifacts"]})
    batch = str(min(doc["settings"]["batch_sizes"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 4.8), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("RdYlGn")
    scatter = None
    for ax, variant in zip(axes[0], variants, strict=False):
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["latency_ms"][batch]["p50"])
        for i, r in enumerate(mine):
            x, y, agree = r["bytes"] / 1e6, r["latency_ms"][batch]["p50"], r["top1"]["agreement"]
            scatter = ax.scatter(x, y, c=[agree], cmap=cmap, vmin=0.5, vmax=1.0, s=90,
                                 marker=FORMATS[r["format"]].marker if r["format"] in FORMATS else "D",
                                 edgecolors="black", linewidths=0.6)
            # Alternate the label above / below so neighbours (e.g. int8 and dynamic) stay legible.
            what = f"{r['precision']} {r['precision_hint']}" if r.get("precision_hint") else r["precision"]
            ax.annotate(f"{what} {100 * agree:.0f}%", (x, y), textcoords="offset points",
                        xytext=(7, 3 if i % 2 else -9), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_title(f"{variant}", fontsize=10)
        ax.set_xlabel("file size (MB, log)")
        ax.set_ylabel(f"p50 latency at batch {batch} (ms)")
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], marker=spec.marker, linestyle="", color="grey", markeredgecolor="black", label=f)
               for f, spec in FORMATS.items()]
    axes[0][0].legend(handles=handles, fontsize=8, loc="best")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes[0].tolist(), label="top-1 agreement with fp32 (sample photos)", shrink=0.9)
    env, s = doc["environment"], doc["settings"]
    v = env["tool_versions"]
    fig.suptitle(f"{doc['bundle']}: latency vs size — {env['cpu_model']}, {counted(s['threads'], 'thread')}, "
                 f"{s['warmup']} warm-up, {counted(s['runs'][batch], 'run')}\n"
                 f"TensorFlow {v.get('tensorflow', '?')}, LiteRT {v.get('ai-edge-litert', '?')}, "
                 f"ONNX Runtime {v.get('onnxruntime', '?')}, OpenVINO {v.get('openvino', '?')} · {doc['created_at']}",
                 fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


# -- Markdown -------------------------------------------------------------------------------------

def _mb(n: float | None) -> str:
    return "–" if n is None else f"{n / 1e6:.1f}"


def _f(x, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def render_markdown(doc: dict[str, Any]) -> str:
    """The tables of bench.md: machine, artifacts (speed, memory, accuracy), export stages."""
    env, s, c = doc["environment"], doc["settings"], doc["ceiling"]
    bs = [str(b) for b in s["batch_sizes"]]
    v = env["tool_versions"]
    versions = ", ".join(f"{k} {v[k]}" for k in sorted(v))
    from export.bench.recommend import ceilings_table
    from export.bench.recommend import render as render_recommendation
    lines = [f"# Benchmarks: {doc['bundle']}", "", *render_recommendation(doc), *_targets(doc),
             f"Measured {doc['created_at']} on **{env['cpu_model']}** ({env['logical_cpus']} logical CPUs), "
             f"**{counted(s['threads'], 'thread')}**, device {s['device']}; {counted(s['warmup'], 'warm-up run')} then "
             + ", ".join(f"{counted(s['runs'][b], 'timed run')} at batch {b}" for b in bs)
             + f". Load average {env['load_average_start']} at the start, {env['load_average_end']} at the end.",
             "", f"CPU features detected: {_features(env.get('cpu_features'))}.", "",
             f"Versions: {versions}; Python {env['python']}.", "",
             "## Machine ceiling", "",
             f"**{_f(c.get('gflops'))} GFLOP/s** single precision, {counted(c['threads'], 'thread')}: the best of "
             f"{c['method']} (best: {c.get('best')})."
             + (f" **Failed:** {c['error']}" if c.get("error") else ""), "",
             "| matmul | kernel | when | best GFLOP/s | median GFLOP/s |", "|---|---|---|---:|---:|",
             *(f"| {m['library']} | {m['kernel']} | {m['when']} | {m['gflops']:.1f} | {m['gflops_median']:.1f} |"
               for m in c["measurements"]), "",
             *_busy_note(doc),
             *ceilings_table(doc),
             "## Artifacts", "",
             "| artifact | size MB | load s | " + " | ".join(f"b{b} p50 / p90 / max ms" for b in bs)
             + " | " + " | ".join(f"img/s b{b}" for b in bs)
             + " | peak RSS MB (+load) | top-1 vs fp32 | % of its ceiling (paired) | speed-up |",
             "|---|---:|---:|" + "---:|" * (2 * len(bs)) + "---:|---:|---:|---:|"]
    for r in doc["artifacts"]:
        name = f"`{r['variant']}` {r['format']} {r['precision']}"
        if r.get("precision_hint"):
            name += f" @ {r['precision_hint']}"
        if r["error"]:
            lines.append(f"| {name} | {_mb(r['bytes'])} | **failed:** {r['error']} |")
            continue
        if r.get("skipped"):
            lines.append(f"| {name} | {_mb(r['bytes'])} | **{r['skipped']}** |")
            continue
        lat = r["latency_ms"]
        t = r["top1"]
        gf = (f"{r['pct_of_own_ceiling']:.1f} % {r['ceiling_precision']}" if r.get("pct_of_own_ceiling") is not None
              else "–")
        sp_text = _speedup(r, bs)
        lines.append(
            f"| {name} | {_mb(r['bytes'])} | {r['load_s']:.2f} | "
            + " | ".join(f"{lat[b]['p50']:.1f} / {lat[b]['p90']:.1f} / {lat[b]['max']:.1f}" for b in bs) + " | "
            + " | ".join(f"{lat[b]['images_per_s']:.1f}" for b in bs)
            + f" | {r['peak_rss_mb']:.0f} (+{r['rss_load_mb']:.0f}) | {t['agree']}/{t['total']} "
              f"({100 * t['agreement']:.0f} %) | {gf} | {sp_text} |")
    flops = doc["flops"]
    lines += ["", "GFLOP per image (2 × multiply-accumulates of the conv and dense layers): "
              + "; ".join(f"`{k}` {f['total']:.3f} (ResNet50 {f['backbone']:.3f} + head {f['head']:.3f}, "
                          f"{f['input_size']}²)" for k, f in sorted(flops.items())) + ". "
              "% of its ceiling = the row's rate at its paired p50 (largest batch) against its own precision's "
              "ceiling, as in the table above. "
              "Speed-up = the median over the paired rounds (all of the variant's artifacts run in turn, "
              "see below) of the fp32 artifact of the same variant and format's time ÷ this one's, per "
              "batch size; for a row with a precision hint (`@ f32`, `@ bf16`: OpenVINO's inference "
              "precision), of the fastest fp32 artifact of the same variant in another format (named). The "
              "latency and memory columns come from each artifact's own process (load time and peak RSS "
              "are measured only there); the speed-ups never mix the two. "
              "Top-1: argmax of `logits` against the fp32 "
              "reference stored in the bundle's golden files, on the sample photos.", "",
              f"Isolation: {s['isolation']}. Latency: {s['latency']}. TensorFlow: {s['tensorflow_threads']}.", ""]
    lines += _thread_sweep_table(doc)
    lines += _layer_tables(doc)
    lines += _paired_table(doc)
    lines += _serving_table(doc)
    lines += _timings_table(doc.get("export_timings", []), doc.get("export_total_s"))
    return "\n".join(lines) + "\n"


def _features(features: dict[str, bool | None] | None) -> str:
    if not features:
        return "not recorded"
    from export.core.cpu_features import describe
    return describe(features)


def _speedup(r: dict[str, Any], bs: list[str]) -> str:
    """The speed-up cell: per batch size over the fp32 sibling, or over the fastest fp32 artifact
    of another format (named) for a precision-hint row."""
    sp = r.get("speedup_vs_fastest_fp32")
    if sp:
        return " / ".join(f"**{sp['by_batch'][b]:.2f}×** b{b} vs {sp['baseline'][b].split('/', 1)[1]}"
                          for b in bs if b in sp["by_batch"]) or "–"
    sp = r.get("speedup_vs_fp32")
    return " / ".join(f"{sp['by_batch'][b]:.2f}× b{b}" for b in bs if b in sp["by_batch"]) if sp else "–"


def _targets(doc: dict[str, Any]) -> list[str]:
    """The targets table (export.bench.targets), judged again from the document's numbers."""
    from export.bench.targets import evaluate
    from export.bench.targets import render_markdown as render_targets
    return render_targets(evaluate(doc))


def _paired_table(doc: dict[str, Any]) -> list[str]:
    """Every row's paired p50 (p25-p75) per batch size, and its speed-up over the SavedModel: the
    numbers every speed-up in this file comes from."""
    paired = doc.get("paired") or {}
    if not paired:
        return []
    bs = [str(b) for b in doc["settings"]["batch_sizes"]]
    lines = ["## Artifacts in turn: the timings every speed-up comes from", "",
             "Each variant's artifacts (every precision hint too) loaded in one process and run one after the "
             "other, round after round, at each batch size, so that other load on the machine slows them alike; "
             "each timed run right after an untimed one of the same artifact (its threads awake, its weights in "
             "cache, as when it serves a stream of requests). "
             "Rounds per batch size: " + ", ".join(f"{n} at batch {b}" for b, n in
                                                    (doc["settings"].get("paired_rounds") or {}).items())
             + " (`bench --rounds`). p50 (p25-p75) ms over the rounds; speed-up = median over the rounds of "
             "(SavedModel time / this one's). The per-artifact table above times each in its own process (for "
             "load time and peak RSS); its latencies can differ from these when the machine is shared, and no "
             "ratio is taken from them.", "",
             "| row | " + " | ".join(f"b{b} p50 (p25-p75) ms" for b in bs) + " | "
             + " | ".join(f"b{b} vs SavedModel" for b in bs) + " |",
             "|---|" + "---:|" * (2 * len(bs))]
    for v, p in sorted(paired.items()):
        if p.get("error"):
            lines.append(f"| `{v}` **failed:** {p['error']} |" + " |" * (2 * len(bs)))
            continue
        for r in (r for r in doc["artifacts"] if r["variant"] == v and r.get("paired_ms")):
            cells = [f"{r['paired_ms'][b]['p50']:.1f} ({r['paired_ms'][b]['p25']:.1f}-{r['paired_ms'][b]['p75']:.1f})"
                     if b in r["paired_ms"] else "–" for b in bs]
            sp = (r.get("speedup_vs_savedmodel") or {}).get("by_batch", {})
            cells += ["1.00×" if r["format"] == "savedmodel" else _f(sp.get(b), "{:.2f}×") for b in bs]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
        for label, why in sorted((p.get("skipped") or {}).items()):
            lines.append(f"| {label} | **{why}** |" + " |" * (2 * len(bs) - 1))
    return [*lines, ""]


def _serving_table(doc: dict[str, Any]) -> list[str]:
    s = doc.get("serving")
    if not s:
        return []
    if s.get("error"):
        return ["## Local server", "", f"The load run failed: {s['error']}", ""]
    lines = ["## Local server (serving.tools.loadtest, gRPC on loopback)", ""]
    o = s.get("grpc_overhead")
    if o:
        lines += [f"Batch 1, one client, {o['backend']} `{o['model']}`, {o['rounds']} requests interleaved with "
                  f"direct runner calls in the same process: gRPC p50 **{o['grpc_p50_ms']:.1f} ms**, raw runner "
                  f"p50 **{o['raw_p50_ms']:.1f} ms** (+{o['added_pct']:.1f} %); of the gRPC time, the client's "
                  f"own encoding of the request takes {o['encode_p50_ms']:.2f} ms (reported apart).", ""]
    rows = s.get("load", [])
    if rows:
        lines += ["| backend | batching | clients | requests | req/s | p50 ms | p99 ms | mean batch |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['backend']} | {'on' if r['batching'] else 'off'} | {r['clients']} | {r['requests']} | "
                         f"{r['throughput_rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                         f"{_f(r.get('mean_batch_size'), '{:.2f}')} |")
        lines.append("")
    return lines


def _busy_note(doc: dict[str, Any]) -> list[str]:
    """A warning when the load average says other processes shared the CPUs (this run alone
    keeps at most `threads` <= logical CPUs busy)."""
    env = doc["environment"]
    loads = [env["load_average_start"][0], env.get("load_average_end", [0])[0],
             *(r.get("load_1m") or 0 for r in doc["artifacts"])]
    cpus = env.get("logical_cpus") or 1
    if max(loads) <= cpus + 0.5:
        return []
    note = (f"**Note:** the 1-minute load average reached {max(loads):.1f} on {cpus} CPUs: other processes "
            "competed for them during this run, so latencies are pessimistic and noisy, and an artifact "
            "measured in a quieter moment than the ceiling can show more than 100 % of it. Re-run "
            "`make bench` on an idle machine for figures to quote.")
    return [note, ""]


def _layer_tables(doc: dict[str, Any]) -> list[str]:
    """Per variant, the profiled rows' (run.LAYER_PROFILE) time by layer group at batch 1: each group's
    rate against its row's own precision's ceiling, and the int8 row's speed over the float one's."""
    from export.bench.ceilings import best_by_precision, row_precision
    from export.bench.recommend import ceiling_measurements
    profiled = [r for r in doc["artifacts"] if r.get("layer_profile")]
    if not profiled:
        return []
    best = {p: m["gflops"] for p, m in best_by_precision(ceiling_measurements(doc)).items()}
    runs = profiled[0]["layer_profile"]["runs"]
    lines = ["## Where the time goes: OpenVINO's per-layer counters at batch 1", "",
             f"Each profiled row ran {runs} more times at batch 1 in its own process, on a copy of its model "
             "compiled for that shape with the counters on (`PERF_COUNT`). A group is the convolutions of one "
             "kernel size and output size: ms = the sum of their median times; rate = 2 × multiply-accumulates "
             "÷ that time; % = of the best GEMM of the row's own precision in this run (int8 rows: the int8 "
             "GEMM; float rows: fp32). The counters slow a run a little: the wall time with them on is given.", ""]
    for variant in sorted({r["variant"] for r in profiled}):
        rows = sorted((r for r in profiled if r["variant"] == variant), key=lambda r: r["precision"] != "int8")
        groups = {g["group"]: g for g in rows[0]["layer_profile"]["groups"]}
        order = list(groups) + [g["group"] for r in rows[1:] for g in r["layer_profile"]["groups"]
                                if g["group"] not in groups]
        by_row = [{g["group"]: g for g in r["layer_profile"]["groups"]} for r in rows]
        ratio = len(rows) == 2 and rows[0]["precision"] == "int8" and rows[1]["precision"] != "int8"
        lines += [f"`{variant}`:", "",
                  "| layer group | convs | " + " | ".join(f"{r['label']} ms | G{'OP' if row_precision(r) == 'int8' else 'FLOP'}"
                                                       f"/s | % of {row_precision(r)}" for r in rows)
                  + (" | int8 speed-up |" if ratio else " |"),
                  "|---|---:|" + "---:|---:|---:|" * len(rows) + ("---:|" if ratio else "")]
        for name in order:
            cells = []
            for r, gs in zip(rows, by_row, strict=True):
                g = gs.get(name)
                ceiling = best.get(row_precision(r))
                cells.append("– | – | –" if g is None else
                             f"{g['ms']:.2f} | {_f(g['gops'], '{:.0f}')} | "
                             + (f"{100 * g['gops'] / ceiling:.0f}" if g["gops"] and ceiling else "–"))
            layers = next(gs[name]["layers"] for gs in by_row if name in gs)
            speed = ""
            if ratio:
                a, b = by_row[0].get(name), by_row[1].get(name)
                speed = f" | {b['ms'] / a['ms']:.2f}×" if a and b and a["ms"] > 0 else " | –"
            lines.append(f"| {name} | {layers} | " + " | ".join(cells) + speed + " |")
        lines.append("")
        for r in rows:
            p = r["layer_profile"]
            floats = p["float_convolutions"]
            conv_ms = p["nodes_ms"] - p["other_ms"]
            kernels = sorted({k for g in p["groups"] for k in g["kernels"]})
            lines.append(f"- `{r['label']}`: {p['wall_ms']:.2f} ms a run with the counters on; the nodes "
                         f"{p['nodes_ms']:.2f} ms, convolutions {conv_ms:.2f} ms, other nodes {p['other_ms']:.2f} ms. "
                         + ("Every convolution ran an integer kernel" if not floats and r["precision"] == "int8"
                            else f"{len(floats)} convolution(s) ran a float kernel" + (
                                f" ({', '.join(floats[:3])}{', …' if len(floats) > 3 else ''})"
                                if r["precision"] == "int8" else ""))
                         + f" ({', '.join(f'`{k}`' for k in kernels)}).")
        lines.append("")
    return lines


def _thread_sweep_table(doc: dict[str, Any]) -> list[str]:
    """Batch-1 latency per thread count of the on-device artifacts (LiteRT): what a phone's small
    cores can expect per thread."""
    rows = [r for r in doc["artifacts"] if r.get("thread_sweep")]
    counts = sorted({n for r in rows for n in r["thread_sweep"]}, key=int)
    if not rows:
        return []
    lines = ["## Threads (batch 1): LiteRT on 1 and 2 cores", "",
             "| artifact | " + " | ".join(f"{n} thread{'s' * (n != '1')} p50 ms (img/s)" for n in counts)
             + f" | speed-up {counts[-1]} vs {counts[0]} |", "|---|" + "---:|" * (len(counts) + 1)]
    for r in rows:
        t = r["thread_sweep"]
        cells = [f"failed: {t[n]['error']}" if "error" in t.get(n, {}) else
                 f"{t[n]['p50']:.1f} ({t[n]['images_per_s']:.1f})" if n in t else "n/a" for n in counts]
        first, last = t.get(counts[0], {}), t.get(counts[-1], {})
        speedup = f"{first['p50'] / last['p50']:.2f}x" if first.get("p50") and last.get("p50") else "n/a"
        lines.append(f"| `{r['variant']}` {r['format']} {r['precision']} | " + " | ".join(cells) + f" | {speedup} |")
    lines += ["", "Each thread count in its own process (XNNPACK, batch 1, the same warm-up and timed runs); a "
              "phone's efficiency cores run slower per thread than this CPU, but the scaling from one to two "
              "threads is what to expect when the app asks LiteRT for them.", ""]
    return lines


def _timings_table(timings: list[dict[str, Any]], total: float | None) -> list[str]:
    if not timings:
        return ["## Export pipeline", "", "No `export_timings` in the manifest.", ""]
    stages = list(dict.fromkeys(t["stage"] for t in timings))
    names = list(dict.fromkeys(t["variant"] for t in timings))
    cell = {(t["variant"], t["stage"]): t["seconds"] for t in timings}
    lines = ["## Export pipeline (`make export`), seconds per stage", "",
             "| variant | " + " | ".join(stages) + " | total |", "|---|" + "---:|" * (len(stages) + 1)]
    for n in names:
        vals = [cell.get((n, st)) for st in stages]
        lines.append(f"| {n} | " + " | ".join(_f(x) for x in vals)
                     + f" | {sum(x for x in vals if x is not None):.1f} |")
    lines += ["", f"Total {_f(total)} s, as recorded in manifest.json by the pipeline on the machine that exported "
              "the bundle" + ("; the `bundle` and `pack` stages end after manifest.json is written, so their "
                              "times are not in it." if not {"bundle", "pack"} <= set(stages) else "."), ""]
    return lines
