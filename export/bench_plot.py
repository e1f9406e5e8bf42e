"""bench.png: latency vs file size of every artifact, coloured by top-1 agreement with fp32.

One panel per variant; the title states the CPU, thread count and versions it was measured with.
"""
from __future__ import annotations

import io
import os
from typing import Any

MARKERS = {"savedmodel": "o", "tflite": "s", "onnx": "^"}


def plot(doc: dict[str, Any], path: str | os.PathLike) -> None:
    """Draw the chart for a bench document (run_bench's result) and write it atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from export.atomic import write_bytes
    rows = [r for r in doc["artifacts"] if not r["error"]]
    variants = sorted({r["variant"] for r in doc["artifacts"]})
    batch = str(min(doc["settings"]["batch_sizes"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 4.6), squeeze=False)
    cmap = plt.get_cmap("RdYlGn")
    scatter = None
    for ax, variant in zip(axes[0], variants):
        for r in (r for r in rows if r["variant"] == variant):
            x, y, agree = r["bytes"] / 1e6, r["latency_ms"][batch]["p50"], r["top1"]["agreement"]
            scatter = ax.scatter(x, y, c=[agree], cmap=cmap, vmin=0.5, vmax=1.0, s=90,
                                 marker=MARKERS.get(r["format"], "D"), edgecolors="black", linewidths=0.6)
            ax.annotate(f"{r['precision']} {100 * agree:.0f}%", (x, y), textcoords="offset points",
                        xytext=(6, 4), fontsize=7)
        ax.set_xscale("log")
        ax.set_title(f"{variant}", fontsize=10)
        ax.set_xlabel("file size (MB, log)")
        ax.set_ylabel(f"p50 latency at batch {batch} (ms)")
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], marker=m, linestyle="", color="grey", markeredgecolor="black", label=f)
               for f, m in MARKERS.items()]
    axes[0][0].legend(handles=handles, fontsize=8, loc="best")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes[0].tolist(), label="top-1 agreement with fp32 (sample photos)", shrink=0.85)
    env, s = doc["environment"], doc["settings"]
    v = env["tool_versions"]
    fig.suptitle(f"{doc['bundle']}: latency vs size — {env['cpu_model']}, {s['threads']} threads, "
                 f"{s['warmup']} warm-up, {s['runs'][batch]} runs\n"
                 f"TensorFlow {v.get('tensorflow', '?')}, LiteRT {v.get('ai-edge-litert', '?')}, "
                 f"ONNX Runtime {v.get('onnxruntime', '?')} · {doc['created_at']}", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())
