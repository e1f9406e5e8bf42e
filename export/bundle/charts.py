"""report.html's charts: matplotlib figures as inline SVG text (no files, no network), each drawn
from numbers the bundle's documents hold. Text stays text (svg.fonttype none) and ids are salted
per chart, so one page can hold many and two renders of the same documents are byte-identical.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

_COLOURS = {"fp32": "#1f77b4", "fp16": "#2ca02c", "dynamic": "#ff7f0e", "int8": "#d62728"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return matplotlib, plt


def _svg(fig: Any, salt: str) -> str:
    matplotlib, plt = _pyplot()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _height(n: int) -> float:
    return max(1.6, 0.38 * n + 0.9)


def accuracy(rows: Sequence[dict[str, Any]], reference: dict[str, Any], salt: str) -> str:
    """Accuracy per artifact on the eval set with its 95% interval; the Keras reference as a band."""
    _, plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, _height(len(rows))))
    ci = reference.get("accuracy_ci")
    if ci:
        ax.axvspan(ci[0], ci[1], color="#dddddd", label="reference 95% interval")
    ax.axvline(reference["accuracy"], color="black", linewidth=1, label=f"Keras reference {reference['accuracy']:.3f}")
    for i, r in enumerate(rows):
        lo, hi = r["ci_values"] or (r["accuracy"], r["accuracy"])
        ax.errorbar(r["accuracy"], i, xerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]], fmt="o", capsize=3,
                    color=_COLOURS.get(r["precision"], "grey"))
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("top-1 accuracy on the eval set (95% interval)")
    ax.legend(loc="lower left", fontsize="small")
    return _svg(fig, salt)


def latency(rows: Sequence[dict[str, Any]], salt: str) -> str:
    """Batch-1 p50 latency per artifact (bench.json), each bar labelled with its speed-up over fp32."""
    _, plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, _height(len(rows))))
    ax.barh(range(len(rows)), [r["p50"] for r in rows], color=[_COLOURS.get(r["precision"], "grey") for r in rows])
    for i, r in enumerate(rows):
        note = f"{r['p50']:.2f} ms" + (f"  ×{r['speedup']:.2f}" if r.get("speedup") else "")
        ax.text(r["p50"], i, " " + note, va="center", fontsize="small")
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["p50"] for r in rows) * 1.45)
    ax.set_xlabel("latency p50 at batch 1 (ms); ×: speed-up over the same format's fp32")
    return _svg(fig, salt)


def parity(rows: Sequence[dict[str, Any]], salt: str) -> str:
    """The worst logits error of each artifact against the Keras reference (log scale)."""
    _, plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, _height(len(rows))))
    values = [max(r["max_abs"], 1e-9) for r in rows]
    ax.barh(range(len(rows)), values, color=[_COLOURS.get(r["precision"], "grey") for r in rows])
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("logits max abs error vs the Keras reference")
    return _svg(fig, salt)


def training(history: Sequence[dict[str, float]], salt: str) -> str:
    """Loss and accuracy per epoch, training and validation (the run's history.csv, via the manifest)."""
    _, plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    epochs = [int(row.get("epoch", i)) + 1 for i, row in enumerate(history)]
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "o-"), (f"val_{metric}", "s--")):
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key, float("nan")) for row in history], style, label=key, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend(fontsize="small")
    return _svg(fig, salt)


def confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], salt: str) -> str:
    """The validation confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    _, plt = _pyplot()
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * k, 1.0 + 0.5 * k))
    ax.imshow(matrix, cmap="Blues")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > peak / 2 else "black")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _svg(fig, salt)
