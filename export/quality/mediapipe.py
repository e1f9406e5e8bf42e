"""MediaPipe Tasks' ImageClassifier on an exported .tflite, checked against the LiteRT runner.

MediaPipe's Python `ImageClassifier` (mediapipe.tasks.python.vision) is the same C++ task as
on Android and iOS: it reads the model's metadata (NormalizationOptions, labels) and reports
one classification head per output tensor, named by the tensor metadata, with the raw output
values as scores (dequantized for uint8 outputs; no softmax is applied). Our models have two
heads, `logits` and `probabilities`; both are compared with LiteRT's outputs, and the top-1
category name of the `probabilities` head with LiteRT's top-1 label.

Images must already be at the model's input size: MediaPipe resizes internally (its own
resampler), so a check on other sizes would compare two resizers, not two runtimes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.core.errors import RunnerError, first_line

HEADS = ("logits", "probabilities")
PRIMARY_HEAD = "probabilities"

#: Largest |MediaPipe score - LiteRT output| allowed per precision, per head. Both run the same
#: file on the same TFLite kernels (XNNPACK) at batch 1, so only thread partitioning could
#: differ. Measured on dense/conv/dropout x 12 photos (LiteRT 2.3, MediaPipe 1.2.3, 2 cores):
#: 0.0 on every head of every precision. The allowances are one float32 ulp-scale margin for
#: float outputs and one quantization step (the output's scale) for uint8 outputs.
FLOAT_ATOL = {"logits": 1e-4, "probabilities": 1e-5}
QUANTIZED_STEPS = 1.0
TOLERANCE_SOURCE = ("same file, same TFLite/XNNPACK kernels, batch 1: measured max |diff| 0.0 on 3 variants x "
                    "4 precisions x 12 photos; allowed: float 1e-4 (logits) / 1e-5 (probabilities), "
                    "uint8 one quantization step")


@dataclass
class ImageRow:
    """One image: both runtimes' top-1 (label and probability) and the largest score difference per head."""

    image: str
    mediapipe_top1: str
    litert_top1: str
    mediapipe_probability: float
    litert_probability: float
    max_abs_diff: dict[str, float]


@dataclass
class MediaPipeCheck:
    """MediaPipe vs LiteRT on one .tflite file; `bool(check)` is the verdict."""

    path: str
    precision: str
    head_names: list[str]
    tolerance: dict[str, float]
    tolerance_source: str
    rows: list[ImageRow] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.failures

    def max_abs_diff(self) -> dict[str, float]:
        return {h: max((r.max_abs_diff.get(h, 0.0) for r in self.rows), default=0.0) for h in self.head_names}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": bool(self), "max_abs_diff_by_head": self.max_abs_diff()}


def classify(path: str | Path, images: np.ndarray) -> list[dict[str, Any]]:
    """MediaPipe ImageClassifier on uint8 RGB images [N, H, W, 3]: per image, per head (by name),
    the scores in class-index order and the top category's name (from the model's metadata)."""
    from export.deploy.tflite_metadata import mediapipe_tasks
    mp, vision, BaseOptions = mediapipe_tasks()  # without TensorFlow, which MediaPipe would import for nothing
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)))
    try:
        classifier = vision.ImageClassifier.create_from_options(options)
    except (RuntimeError, ValueError, OSError) as e:  # its C status codes map to these (NOT_FOUND: FileNotFoundError)
        raise RunnerError(f"MediaPipe ImageClassifier cannot load {path}: {first_line(e)}") from None
    out = []
    with classifier:
        for image in images:
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            heads = {}
            for head in result.classifications:
                scores = np.full(max((c.index for c in head.categories), default=-1) + 1, np.nan, np.float32)
                for c in head.categories:
                    scores[c.index] = c.score
                top = head.categories[0] if head.categories else None
                heads[head.head_name] = {"index": head.head_index, "scores": scores,
                                         "top1": top.category_name if top else None,
                                         "top1_index": top.index if top else None}
            out.append(heads)
    return out


def check(path: str | Path, images: np.ndarray, names: list[str], labels: list[str],
          precision: str) -> MediaPipeCheck:
    """Run `path` with MediaPipe and with the LiteRT runner on `images` (uint8, at the model's
    input size) and compare: head names, every score within the tolerance, top-1 names equal.
    `labels` are the exporter's class names (labels.txt), independent of the metadata."""
    from export.runtimes.litert import LiteRTRunner
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise RunnerError(f"MediaPipe check needs uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    runner = LiteRTRunner(path, num_threads=1)
    with runner:
        want = tuple(d for d in runner.inputs["image"].shape[1:3])
        if images.shape[1:3] != want:
            raise RunnerError(f"MediaPipe check needs images at the model's input size {want}, got "
                              f"{images.shape[1:3]}: MediaPipe would resize them with its own resampler")
        litert = [runner.infer({"image": img[None].astype(np.float32)}) for img in images]
        steps = {h: float(runner.quantization[h]["scale"]) * QUANTIZED_STEPS for h in HEADS if h in runner.quantization}
    mediapipe = classify(path, images)
    tolerance = {h: steps.get(h, FLOAT_ATOL[h]) for h in HEADS}
    result = MediaPipeCheck(str(path), precision, list(mediapipe[0]) if mediapipe else [], tolerance,
                            TOLERANCE_SOURCE)
    if result.head_names != list(HEADS):
        result.failures.append(f"MediaPipe heads {result.head_names}, expected {list(HEADS)} in output order")
    for name, mp_heads, lr in zip(names, mediapipe, litert, strict=True):
        diffs = {}
        for h in HEADS:
            if h not in mp_heads:
                continue
            got, ref = mp_heads[h]["scores"], lr[h][0]
            if got.shape != ref.shape or np.isnan(got).any():
                result.failures.append(f"{name}: head {h!r} reported {got.shape[0]} classes, LiteRT {ref.shape[0]}")
                continue
            diffs[h] = float(np.abs(got - ref).max())
            if diffs[h] > tolerance[h]:
                result.failures.append(f"{name}: head {h!r} differs from LiteRT by {diffs[h]:.3g} > {tolerance[h]:.3g}")
        primary = mp_heads.get(PRIMARY_HEAD, {})
        probs = lr[PRIMARY_HEAD][0]
        # An exact tie for first place (common with uint8 probabilities, 1/256 steps) has no single
        # top-1: LiteRT's top-1 is then the tied class MediaPipe listed first, if it is one of them.
        tied = np.flatnonzero(probs >= probs.max())
        lr_top = primary.get("top1_index") if primary.get("top1_index") in tied else int(tied[0])
        row = ImageRow(name, str(primary.get("top1")), labels[lr_top] if lr_top < len(labels) else str(lr_top),
                       float(np.nanmax(primary["scores"])) if primary else float("nan"), float(probs[lr_top]), diffs)
        if row.mediapipe_top1 != row.litert_top1:
            result.failures.append(f"{name}: MediaPipe top-1 {row.mediapipe_top1!r}, LiteRT {row.litert_top1!r}")
        result.rows.append(row)
    return result


def render_markdown(checks: list[MediaPipeCheck]) -> str:
    """One table: per file and image, MediaPipe's top-1 and score next to LiteRT's."""
    lines = ["| file | precision | image | MediaPipe top-1 (score) | LiteRT top-1 (probability) | "
             "max abs diff logits / probabilities | verdict |", "|---|---|---|---|---|---:|---|"]
    for c in checks:
        for r in c.rows:
            d = r.max_abs_diff
            lines.append(f"| `{Path(c.path).name}` | {c.precision} | {r.image} | {r.mediapipe_top1} "
                         f"({r.mediapipe_probability:.4f}) | {r.litert_top1} ({r.litert_probability:.4f}) | "
                         f"{d.get('logits', float('nan')):.2g} / {d.get('probabilities', float('nan')):.2g} | "
                         f"{'pass' if c else 'FAIL'} |")
    return "\n".join(lines) + "\n"
