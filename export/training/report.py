"""What a training run reports: classification metrics from logits, and the two charts of a run
directory (training.png: loss and accuracy per epoch; confusion.png). NumPy and matplotlib only,
so the numbers can be checked without TensorFlow.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def classification_metrics(labels: np.ndarray, logits: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, mean cross-entropy (without any weight penalty), per-class precision and recall,
    and the confusion matrix (rows: true class, columns: predicted class) of `logits`."""
    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    k = len(class_names)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    predicted = logits.argmax(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    hits = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(confusion.sum(axis=0) > 0, hits / confusion.sum(axis=0), 0.0)
        recall = np.where(confusion.sum(axis=1) > 0, hits / confusion.sum(axis=1), 0.0)
    return {
        "images": len(labels),
        "accuracy": round(float((predicted == labels).mean()), 6) if len(labels) else 0.0,
        "loss": round(float(-log_probs[np.arange(len(labels)), labels].mean()), 6) if len(labels) else 0.0,
        "per_class": {name: {"precision": round(float(precision[i]), 6), "recall": round(float(recall[i]), 6),
                             "images": int(confusion[i].sum())} for i, name in enumerate(class_names)},
        "confusion_matrix": confusion.tolist(),
    }


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The rows of a Keras CSVLogger file as floats (epoch, phase, loss, accuracy, val_*)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot_history(history: list[dict[str, float]], path: str | Path, title: str = "") -> None:
    """training.png: loss and accuracy per epoch, training and validation, phases marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    epochs = [row["epoch"] + 1 for row in history]
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "o-"), (f"val_{metric}", "s--")):
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key, np.nan) for row in history], style, label=key, markersize=3)
        second = [e for e, row in zip(epochs, history, strict=True) if row.get("phase") == 2]
        if second:
            ax.axvline(second[0] - 0.5, color="grey", linestyle=":", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                   title: str = "") -> None:
    """confusion.png: the validation confusion matrix with counts in the cells."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matrix = np.asarray(confusion)
    k = len(class_names)
    side = min(12.0, 2.5 + 0.5 * k)
    fig, ax = plt.subplots(figsize=(side, side), constrained_layout=True)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), labels=class_names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        peak = matrix.max() if matrix.size else 0
        for (i, j), n in np.ndenumerate(matrix):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > peak / 2 else "black")
    ax.set_title(title or "validation confusion matrix")
    fig.savefig(path, dpi=100)
    plt.close(fig)
