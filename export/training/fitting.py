"""The numbers behind the fast path's head fit: per-channel feature scaling and its exact fold into
the head's first layer, the convex softmax solver of the dense head, and the logistic-regression
probe every run reports beside its head. NumPy, SciPy and scikit-learn only (no TensorFlow).

Random-backbone features differ in scale by orders of magnitude across channels, and a head fitted
on them raw underfits. The head is fitted on scaled features and the scaling is then folded into
its first layer, so the saved model keeps the variant's layers and takes the raw features:
- Dense on pooled features: z = (x - mean) / std, and z @ W + b = x @ (W / std) + (b - (mean / std) @ W).
- a 3x3 `same` Conv2D on feature maps pads with zeros, and a mean shift would move the padding
  (exact only away from the borders), so there the map is a scale only: z = x / rms, folded as
  W[:, :, c, :] / rms[c] (zero padding stays zero).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: L2 strengths (mean cross-entropy + l2/2 * |W|^2) the dense head's solver tries; the validation
#: split picks one. sklearn's default C=1 is l2 = 1 / n_train (0.01 at 100 training images).
DENSE_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
#: Learning rates the Adam-trained heads (conv, dropout) try. Each point is a full fit with EarlyStopping,
#: and a conv-head epoch costs seconds, not milliseconds (3.6 s on 96 images, 2 shared cores: 58 epochs
#: at 1e-3, 112 at 1e-4, both 0.917 validation accuracy on the 4-photo crops), so one point by default;
#: `--learning-rate` or a longer grid here trades time for the choice.
ADAM_LR_GRID = (1e-3,)


@dataclass(frozen=True)
class FeatureScaling:
    """A per-channel affine map of features (last axis): z = (x - mean) / scale."""

    mean: np.ndarray
    scale: np.ndarray
    centred: bool

    def apply(self, x: np.ndarray) -> np.ndarray:
        """float32 z of float32 x (a batch at a time: feature maps of a data set can be large)."""
        x = np.asarray(x, dtype=np.float32)
        if self.centred:
            x = x - self.mean.astype(np.float32)
        return x / self.scale.astype(np.float32)

    def record(self) -> dict[str, Any]:
        """What metrics.json says about it (the map itself is folded into the model)."""
        return {"centred": self.centred, "channels": int(self.scale.size),
                "kind": "standardised (mean, std)" if self.centred else "scaled by per-channel RMS (no mean shift)",
                "scale_min": float(self.scale.min()), "scale_max": float(self.scale.max())}


def feature_scaling(x: np.ndarray, centred: bool) -> FeatureScaling:
    """The training split's per-channel statistics of `x` ([N, C] or [N, H, W, C]): mean and standard
    deviation when `centred`, else zero mean and the root mean square. A constant channel keeps scale 1."""
    flat = x.reshape(-1, x.shape[-1])
    mean = flat.mean(axis=0, dtype=np.float64) if centred else np.zeros(x.shape[-1])
    square = np.zeros(x.shape[-1])
    for i in range(0, len(flat), 4096):  # in chunks: the maps of a few thousand images are gigabytes in float64
        square += ((flat[i:i + 4096].astype(np.float64) - mean) ** 2).sum(axis=0)
    scale = np.sqrt(square / max(len(flat), 1))
    floor = 1e-6 * scale.max() if scale.size and scale.max() > 0 else 1.0
    scale = np.where(scale > floor, scale, 1.0)
    return FeatureScaling(mean, scale, centred)


def fold_dense(kernel: np.ndarray, bias: np.ndarray, s: FeatureScaling) -> tuple[np.ndarray, np.ndarray]:
    """Dense weights on raw features that give what (kernel, bias) give on `s.apply(features)`."""
    k64 = np.asarray(kernel, np.float64) / s.scale[:, None]
    b64 = np.asarray(bias, np.float64) - s.mean @ k64
    return k64.astype(np.float32), b64.astype(np.float32)


def fold_conv(kernel: np.ndarray, s: FeatureScaling) -> np.ndarray:
    """A Conv2D kernel [kh, kw, C, F] on raw maps that gives what `kernel` gives on `s.apply(maps)`;
    a scale only (`same` zero padding stays zero), so `s` must not be centred."""
    if s.centred:
        raise ValueError("a mean shift does not fold exactly into a zero-padded convolution")
    return (np.asarray(kernel, np.float64) / s.scale[None, None, :, None]).astype(np.float32)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, l2: float, max_iter: int = 1000,
                start: tuple[np.ndarray, np.ndarray] | None = None,
                val: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Multinomial logistic regression by L-BFGS: minimise mean cross-entropy + l2/2 * |W|^2 (bias free).
    Convex, so the optimum does not depend on the start or a seed. Returns (W [C, k], b [k], info);
    info["history"] has a row per iteration (history.csv's columns; `val` = (x, y) adds val_*)."""
    from scipy.optimize import minimize
    x64 = np.asarray(x, np.float64)
    n, c = x64.shape
    onehot = np.eye(k)[np.asarray(y)]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:c * k].reshape(c, k), theta[c * k:]
        logp = _log_softmax(x64 @ w + b)
        diff = (np.exp(logp) - onehot) / n
        loss = -(onehot * logp).sum() / n + 0.5 * l2 * float((w * w).sum())
        return loss, np.concatenate([(x64.T @ diff + l2 * w).ravel(), diff.sum(axis=0)])

    history: list[dict[str, float]] = []

    def record(theta: np.ndarray) -> None:
        w, b = theta[:c * k].reshape(c, k), theta[c * k:]
        acc, ce = accuracy_and_loss(x64 @ w + b, y)
        row = {"epoch": len(history), "accuracy": acc, "loss": ce + 0.5 * l2 * float((w * w).sum()), "phase": 1}
        if val is not None:
            row["val_accuracy"], row["val_loss"] = accuracy_and_loss(np.asarray(val[0], np.float64) @ w + b, val[1])
        history.append(row)

    theta0 = np.zeros(c * k + k) if start is None else np.concatenate([start[0].ravel(), start[1]]).astype(np.float64)
    result = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", callback=record,
                      options={"maxiter": max_iter, "gtol": 1e-6, "ftol": 1e-12})
    w, b = result.x[:c * k].reshape(c, k), result.x[c * k:]
    info = {"iterations": int(result.nit), "converged": bool(result.success), "history": history}
    return w.astype(np.float32), b.astype(np.float32), info


def accuracy_and_loss(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    logp = _log_softmax(np.asarray(logits, np.float64))
    y = np.asarray(y)
    return float((logp.argmax(axis=1) == y).mean()), float(-logp[np.arange(len(y)), y].mean())


def best_trial(trials: Sequence[dict[str, Any]]) -> int:
    """Index of the trial with the highest validation accuracy; ties go to the stronger L2 (smaller
    weights: the fp32 rounding noise of the backbone reaches the logits scaled by them, so a weakly
    regularised head needlessly spends the formats' fp32 parity tolerance), then to the lower loss."""
    return min(range(len(trials)),
               key=lambda i: (-trials[i]["val_accuracy"], -trials[i].get("l2", 0.0), trials[i]["val_loss"]))


def pooled(x: np.ndarray) -> np.ndarray:
    """Features as vectors: feature maps [N, H, W, C] averaged over space (the heads' GAP), vectors as they are."""
    return x.mean(axis=(1, 2)) if x.ndim == 4 else x


def probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> dict[str, Any]:
    """The baseline every run reports: scikit-learn's StandardScaler + LogisticRegression (default C=1)
    on the pooled cached features of the same split; what a linear model reaches on these features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    tick = time.perf_counter()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    model.fit(pooled(x_train), y_train)
    return {"model": "sklearn StandardScaler + LogisticRegression(C=1) on the pooled cached features",
            "train_accuracy": round(float(model.score(pooled(x_train), y_train)), 6),
            "val_accuracy": round(float(model.score(pooled(x_val), y_val)), 6),
            "seconds": round(time.perf_counter() - tick, 3)}
