"""Repair of an int8 TFLite artifact that fails the accuracy gate: the most sensitive layers kept in
float, chosen and built with TensorFlow's own tools.

- The converter calibrates once (`_experimental_calibrate_only`: the float model with the
  representative dataset's ranges recorded), as tf.lite.experimental.QuantizationDebugger does.
- Per-layer error: the debugger runs a NumericVerify model (mlir_quantize(enable_numeric_verify))
  on calibration images and reports, per quantized op output, the error between the quantized op
  and its float twin; `rmse/scale` (RMS error in units of the tensor's quantization step) ranks
  them, as the TFLite debugger guide does.
- The selective model: `mlir_quantize(calibrated, input/output uint8, denylisted_nodes=[...])`,
  the call the converter itself makes for full-integer models (fully_quantize=False: with True
  the I/O come out int8, not uint8), then export.formats.tflite.raw_pixel_input. The ops that
  produce the model's outputs are never denylisted (their outputs would turn float32).

The worst 1, then 4, then 16 layers are kept in float; the first that passes stands. TFLite's
converter has one calibration method (MinMax), so there is no calibration remedy here (see
quantization.md's note); ai-edge-quantizer could give one, but not with this project's uint8
raw-pixel I/O without more work.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from export.formats import Artifact
from export.quality.accuracy import AccuracyResult

EXCLUDE_STEPS = (1, 4, 16)
#: Calibration images the per-layer error is measured on.
LAYER_ERROR_IMAGES = 8


def layer_errors(calibrated: bytes, images: np.ndarray, max_images: int = LAYER_ERROR_IMAGES) -> list[dict[str, Any]]:
    """Per quantized op output, from tf.lite.experimental.QuantizationDebugger: the op, the tensor,
    its RMS error in quantization steps (`rmse_scale`), elements, scale, and whether it is a model
    output (`output`: never kept in float). Worst first."""
    import tensorflow as tf
    from tensorflow.lite.python import convert
    feed = np.asarray(images[:max_images], np.float32)
    debug_model = convert.mlir_quantize(calibrated, enable_numeric_verify=True)
    debugger = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=debug_model, debug_dataset=lambda: ([feed[i:i + 1]] for i in range(len(feed))),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(model_debug_metrics=None))
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    outputs = _output_tensor_names(calibrated)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(r["scale"])
        rmse = float(np.sqrt(float(r["mean_squared_error"])))
        rows.append({"tensor": r["tensor_name"], "op": r["op_name"], "num_elements": int(float(r["num_elements"])),
                     "scale": scale, "rmse_scale": round(rmse / scale, 4) if scale else float("inf"),
                     "max_abs_error": round(float(r["max_abs_error"]), 6),
                     "output": any(r["tensor_name"] == o or o.startswith(r["tensor_name"]) for o in outputs)})
    return sorted(rows, key=lambda e: -e["rmse_scale"])


def _output_tensor_names(model: bytes) -> list[str]:
    from tensorflow.lite.tools import flatbuffer_utils
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    sub = m.subgraphs[0]
    return [bytes(sub.tensors[i].name).decode() if not isinstance(sub.tensors[i].name, str)
            else sub.tensors[i].name for i in sub.outputs]


def repair_tflite(art: Artifact, result: AccuracyResult, *, requantize: Callable[[tuple[str, ...]], Artifact],
                  evaluate: Callable[[Artifact], AccuracyResult],
                  errors: list[dict[str, Any]]) -> tuple[Artifact, AccuracyResult, dict[str, Any]]:
    """Keep the worst 1, 4, 16 layers of `errors` (from `layer_errors`) in float until the artifact
    passes; `requantize(keep_float)` rewrites it, `evaluate(artifact)` judges it. Returns the artifact
    and result that stand (the first passing one's, or the last tried) and the repair record."""
    tried: list[dict[str, Any]] = [{"remedy": "calibration MinMax (TFLite converter default)",
                                    "accuracy": result.scored.accuracy, "drop_points": result.drop_points,
                                    "passed": result.passed}]
    record: dict[str, Any] = {"tried": tried, "fired": None, "layer_errors": errors,
                              "note": "TFLite's converter has one calibration method; no calibration remedy"}
    candidates = tuple(dict.fromkeys(e["tensor"] for e in errors if not e["output"]))
    for k in EXCLUDE_STEPS:
        chosen = candidates[:k]
        if not chosen:
            break
        name = f"{len(chosen)} most sensitive layer(s) kept in float"
        art = requantize(chosen)
        result = evaluate(art)
        tried.append({"remedy": name, "accuracy": result.scored.accuracy, "drop_points": result.drop_points,
                      "passed": result.passed})
        if result.passed:
            record.update(fired=name, excluded=list(chosen))
            result.remedy = name
            return art, result, record
        if len(chosen) < k:
            break
    return art, result, record


def repair_exported(art: Artifact, result: AccuracyResult, evaluate: Callable[[Artifact], AccuracyResult], *,
                    built, root: str | Path, export_options: dict[str, Any],
                    calibration: dict[str, Any]) -> tuple[Artifact, AccuracyResult, dict[str, Any]]:
    """`repair_tflite` for an artifact export.formats.tflite.export wrote under `root` (paths relative
    to it): calibrates once, measures the layers, rewrites model_int8.tflite with its metadata.
    `export_options` and `calibration` are the exporter's keyword arguments (saved_model_dir, card;
    calibration, calibration_record)."""
    from export.formats import tflite
    from export.model import samples
    images = calibration.get("calibration")
    if images is None:
        images = samples.photos(built.input_size)
    calibrated = tflite.calibrated_int8(built, export_options.get("saved_model_dir"), images)
    errors = layer_errors(calibrated, images)

    def requantize(keep_float: tuple[str, ...]) -> Artifact:
        return tflite.export(built, root, "int8", **export_options, **calibration, keep_float=keep_float,
                             calibrated=calibrated, overwrite=True).relative_to(root)
    return repair_tflite(art, result, requantize=requantize, evaluate=evaluate, errors=errors)
