"""OpenVINO int8 by NNCF post-training quantization, with NNCF's accuracy control when there is a
labeled validation set (export.formats.openvino's `int8`).

- Calibration: the variant's calibration images (its training split's sample or
  `--calibration-data`; the sample photos without either), one image per NNCF item, all of them
  used (`subset_size` = their count). Preset PERFORMANCE: symmetric int8 weights and activations
  (what the CPU plugin's VNNI kernels run), fast bias correction.
- Activation ranges: the minimum and maximum over the whole calibration set (MinMax, what the TFLite
  and ONNX Runtime int8 artifacts calibrate with), not NNCF's default for per-tensor activations, the
  mean over the calibration images of each one's extremes (MEAN_MINMAX). The mean clips every
  activation larger than the typical calibration image's, which is what an input outside the
  calibration data (a colour photo, all-white, noise) produces: measured on the default bundle's
  lfw_subset heads, NNCF's default flipped decisive top-1 classes in parity on all three (dense 'camera',
  dropout 'all_white', conv 'camera', 'coins' and 'all_white', margins 1.74-8.5 logits; mean cosine
  0.63 / 0.81 / 0.96) and lost 7.5 accuracy points on dense; MinMax kept every decisive class (mean
  cosine 0.947 / 0.952 / 0.997) and lost 2.5 / 2.5 / 0 points.
- Accuracy control (given `validation`): `nncf.quantize_with_accuracy_control` with the validation
  images and labels, top-1 accuracy as the metric and the accuracy gate's int8 threshold as `max_drop`
  (absolute, in points / 100). NNCF quantizes, validates, and if the drop exceeds `max_drop`, ranks the
  quantized operations by their effect on the outputs and reverts the worst to float until it is within.
  `make export` quantizes plainly first and asks for this only when the accuracy gate fails the plain
  IR (export.quality.repair_openvino): it costs ~10 CPU s more per ResNet50 variant.
- When accuracy control cannot reach `max_drop` (NNCF then returns a model with every layer it
  tried reverted, float in all but name), the plain PTQ is kept and the accuracy gate judges it:
  it fails or is dropped like any int8 that fails.
- The record says which weighted operations compute in float in the result: read from the graph
  (a Convolution or MatMul whose activation input is not a FakeQuantize), so it holds whichever
  way NNCF got there; plus NNCF's own summary lines (metrics, drop, what it reverted).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

#: Weighted operations: the ones int8 speeds up, and the ones NNCF reverts to float.
WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")
#: Operations that pass a quantized tensor through unchanged in kind (NNCF puts its FakeQuantize
#: before them: ResNet's stem MaxPool and its Pad feed the first block's convolutions int8 values).
PASS_THROUGH_OPS = ("Convert", "Reshape", "Transpose", "MaxPool", "Pad")
#: Added to NNCF's max_drop (a fraction): the accuracy gate's float slack (export.quality.accuracy).
MAX_DROP_SLACK = 1e-9
#: NNCF's logger lines worth keeping in the record (the rest is progress chatter).
LOG_KEYS = ("Metric of", "Accuracy drop", "Reverted", "were reverted", "Algorithm completed", "could not achieve",
            "Total number of quantized operations")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if any(k in text for k in LOG_KEYS):
            self.lines.append(" ".join(text.split()))


def float_layers(model) -> list[str]:
    """Names of the weighted operations of an ov.Model whose activation input is not quantized."""
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OPS:
            continue
        source = op.input_value(0).get_node()
        while source.get_type_name() in PASS_THROUGH_OPS:
            source = source.input_value(0).get_node()
        if source.get_type_name() != "FakeQuantize":
            out.append(op.get_friendly_name())
    return out


def weighted_layers(model) -> int:
    return sum(op.get_type_name() in WEIGHTED_OPS for op in model.get_ordered_ops())


def _top1(compiled, items) -> float:
    """NNCF's validation_fn: top-1 accuracy of an ov.CompiledModel over (image, label) items."""
    right = total = 0
    output = next(o for o in compiled.outputs if "logits" in o.get_names())
    for image, label in items:
        logits = compiled(image)[output]
        right += int(np.argmax(logits, axis=-1)[0] == label)
        total += 1
    return right / max(total, 1)


def quantize(model, calibration: np.ndarray, *, validation: tuple[np.ndarray, np.ndarray] | None = None,
             max_drop_points: float | None = None) -> tuple[Any, dict[str, Any]]:
    """The int8 ov.Model of `model` (an ov.Model in float) and the record of how it was made.

    `validation` (images, integer labels) with `max_drop_points` turns on NNCF's accuracy control.
    """
    from export.core.telemetry import decline_unless_opted_in
    decline_unless_opted_in()  # before NNCF's import, where it reads its consent
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    images = np.asarray(calibration, dtype=np.float32)
    calib = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    common = {"preset": nncf.QuantizationPreset.PERFORMANCE, "subset_size": len(images)}
    # MinMax activation ranges over the whole calibration set (the module docstring says why)
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    record: dict[str, Any] = {"tool": f"nncf {nncf.__version__}", "preset": "performance",
                              "activation_ranges": "min/max over the calibration set (MinMax)",
                              "calibration_images": len(images), "weighted_layers": weighted_layers(model)}
    handler = _Collect()
    logger = logging.getLogger("nncf")
    # NNCF's INFO lines go to its record (below), not to the export's output
    previous, logger.handlers, level = logger.handlers, [handler], logger.level
    logger.setLevel(logging.INFO)
    try:
        if validation is None or max_drop_points is None:
            quantized = nncf.quantize(model, calib, advanced_parameters=advanced, **common)
            record.update(method="nncf.quantize", name="NNCF PTQ (MinMax, preset performance)")
        else:
            v_images, v_labels = np.asarray(validation[0], dtype=np.float32), np.asarray(validation[1])
            items = [(v_images[i:i + 1], int(v_labels[i])) for i in range(len(v_images))]
            val = nncf.Dataset(items, lambda item: item[0])
            # the gate's rule (drop > limit + 1e-9 fails): without the 1e-9, NNCF read a drop of one image
            # in 40 against a 2.5-point limit as 0.025000000000000022 > 0.025 and reverted a layer for it
            quantized = nncf.quantize_with_accuracy_control(
                model, calib, val, validation_fn=_top1, max_drop=max_drop_points / 100.0 + MAX_DROP_SLACK,
                drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced, **common)
            record.update(method="nncf.quantize_with_accuracy_control",
                          name="NNCF PTQ with accuracy control (MinMax, preset performance)",
                          max_drop_points=max_drop_points, validation_images=len(items))
            if any("could not achieve" in line for line in handler.lines):
                # NNCF returns what it reached, every layer reverted included: an "int8" IR that
                # computes in float. The plain PTQ is kept instead, and the accuracy gate judges it.
                quantized = nncf.quantize(model, calib, advanced_parameters=advanced, **common)
                record.update(method="nncf.quantize", name="NNCF PTQ (MinMax, preset performance)",
                              accuracy_control="NNCF could not reach max_drop by reverting layers to float; "
                                               "the plain PTQ is kept and the accuracy gate judges it")
    except Exception as e:  # noqa: BLE001 -- NNCF raises many kinds; one line for the user
        from export.core.errors import ExportError, first_line
        raise ExportError(f"NNCF int8 quantization failed: {first_line(e)}") from None
    finally:
        logger.handlers = previous
        logger.setLevel(level)
    kept = float_layers(quantized)
    record["float_layers"] = kept
    record["nncf_log"] = handler.lines
    record["summary"] = (f"{record['weighted_layers'] - len(kept)} of {record['weighted_layers']} weighted layers "
                         f"in int8" + (f"; kept in float: {', '.join(kept)}" if kept else ""))
    return quantized, record
