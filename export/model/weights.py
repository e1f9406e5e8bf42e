"""Resolve a weights source and load it into a built model.

Sources:
- `imagenet`: the real Keras path (its cache in ~/.keras/models, then a download); offline
  with an empty cache this fails with one line that says what to do instead.
- `random[:SEED]` (seed 0 by default): seeded, bit-identical on every run, then a
  data-dependent initialisation on the sample photos (see `calibrate`), so that outputs are
  informative: different photos get different classes and the softmax is not saturated.
- a file: `.weights.h5` (model.save_weights) or `.keras` (loaded with safe_mode on).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.core.atomic import sha256_file
from export.core.errors import WeightsError

#: Standard deviation of the head's logits over the sample photos after calibration: large
#: enough for the photos to disagree on their top-1 class, small enough to keep softmax < 0.99.
CALIBRATED_LOGIT_STD = 1.0


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "imagenet" | "random" | "file"
    seed: int = 0
    path: str | None = None

    def __str__(self) -> str:
        if self.kind == "random":
            return f"random:{self.seed}"
        return str(self.path) if self.kind == "file" else self.kind


def parse_weights(text: str) -> WeightsSource:
    """`imagenet`, `random`, `random:SEED` or a path to a .weights.h5/.keras file."""
    text = (text or "").strip()
    if text == "imagenet":
        return WeightsSource("imagenet")
    if text == "random" or text.startswith("random:"):
        seed_text = text.partition(":")[2] or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            raise WeightsError(f"bad weights seed {seed_text!r}: use random or random:<integer>") from None
        if seed < 0:
            raise WeightsError(f"bad weights seed {seed}: use a non-negative integer")
        return WeightsSource("random", seed=seed)
    if not text.endswith((".weights.h5", ".keras")):
        raise WeightsError(f"unknown weights source {text!r}: use imagenet, random[:SEED], "
                           "or a path to a .weights.h5 or .keras file")
    if not os.path.isfile(text):
        raise WeightsError(f"weights file not found: {text}")
    return WeightsSource("file", path=text)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic."""
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def calibrate(model, images: np.ndarray) -> dict[str, Any]:
    """Data-dependent initialisation of a randomly initialised model, on `images`.

    1. BatchNorm recalibration: every backbone BatchNorm's moving mean/variance is set to the
       statistics of its own input on `images` (one forward pass in training mode with
       momentum 0). Untouched random init leaves mean 0 / variance 1, activations blow up
       through 50 layers and every photo gets the same class.
    2. Head: the `logits` Dense kernel's columns are set to the principal directions of the
       photos' (centred) features (as many as there are classes, up to the photos' rank; any
       further columns keep their seeded random init), rescaled so the logits have standard
       deviation CALIBRATED_LOGIT_STD over the photos, with a bias that centres them at zero.
    """
    import keras
    backbone = model.get_layer("resnet50")
    pre = model.get_layer("preprocess")
    bns = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer, layer.trainable) for layer in backbone.layers] + [(backbone, backbone.trainable)]
    momenta = [bn.momentum for bn in bns]
    try:
        backbone.trainable = True
        for bn in bns:
            bn.momentum = 0.0
        backbone(pre(images), training=True)
    finally:
        for bn, m in zip(bns, momenta, strict=False):
            bn.momentum = m
        for layer, trainable in saved:
            layer.trainable = trainable

    logits_layer = model.get_layer("logits")
    features = keras.Model(model.input, logits_layer.input)(images, training=False)
    features = np.asarray(features, dtype=np.float64)
    kernel = np.asarray(logits_layer.get_weights()[0], dtype=np.float64)
    centred = features - features.mean(axis=0)
    # Principal directions of the photos' features: the directions along which the photos
    # differ most, so the classes stay apart under quantization noise (a random direction
    # carries mostly noise: int8 top-1 agreement fell to ~50% with one).
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    rank = int(np.sum(sv > sv[0] * 1e-6)) if sv.size and sv[0] > 0 else 0
    if rank == 0:
        raise WeightsError("calibration failed: the head's features are constant on the sample photos")
    k = min(rank, kernel.shape[1])
    pcs = vt[:k].T
    pcs *= np.sign(pcs[np.abs(pcs).argmax(axis=0), np.arange(k)])  # a sign that doesn't depend on LAPACK
    kernel[:, :k] = pcs * np.linalg.norm(kernel[:, :k], axis=0)
    scale = CALIBRATED_LOGIT_STD / float((centred @ kernel).std())
    kernel = kernel * scale
    bias = -(features @ kernel).mean(axis=0)
    logits_layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return {"batchnorm_layers": len(bns), "calibration_images": len(images),
            "logit_std": CALIBRATED_LOGIT_STD, "head_scale": scale}


def load_file(model, path: str) -> None:
    """Load a .weights.h5 or .keras file into `model`; any mismatch is a WeightsError."""
    import keras
    if path.endswith(".weights.h5"):
        try:
            model.load_weights(path)
        except Exception as e:  # noqa: BLE001 -- h5py/keras raise many types for corrupt or mismatched files
            raise WeightsError(f"cannot load weights file {path}: {first_line(e)} "
                               "(is it a .weights.h5 saved from this variant?)") from None
        return
    try:
        loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as e:
        if "safe_mode" in str(e) or "unsafe" in str(e).lower() or "lambda" in str(e).lower():
            raise WeightsError(f"refusing {path}: it needs unsafe deserialization (a Lambda or "
                               "arbitrary code); re-save it without Lambda layers") from None
        raise WeightsError(f"cannot load model file {path}: {first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 -- the converter/runtime raises many types; each becomes one user-facing line
        raise WeightsError(f"cannot load model file {path}: {first_line(e)} "
                           "(is it a .keras file saved by Keras 3?)") from None
    src, dst = loaded.get_weights(), model.get_weights()
    shapes_src, shapes_dst = [w.shape for w in src], [w.shape for w in dst]
    if shapes_src != shapes_dst:
        raise WeightsError(f"{path} does not fit this variant: it has {len(src)} weight tensors "
                           f"{_brief(shapes_src)}, the variant needs {len(dst)} {_brief(shapes_dst)}; "
                           "check --variant and --num-classes")
    model.set_weights(src)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _brief(shapes: list) -> str:
    return f"(last: {tuple(shapes[-1]) if shapes else ()})"


def provenance(source: WeightsSource, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a manifest records about where the weights came from."""
    out: dict[str, Any] = {"source": str(source), "kind": source.kind}
    if source.kind == "random":
        out["seed"] = source.seed
        out["initialisation"] = ("seeded Keras initialisers, then BatchNorm statistics and the "
                                 "head's logits calibrated on the scikit-image sample photos")
    if source.kind == "imagenet":
        out["backbone"] = "keras.applications.ResNet50 ImageNet (notop)"
        out["head"] = "seeded Keras initialisers (seed 0)"
    if source.kind == "file":
        out["path"] = str(Path(str(source.path)).resolve())
        out["sha256"] = sha256_file(str(source.path))
    if details:
        out.update(details)
    return out
