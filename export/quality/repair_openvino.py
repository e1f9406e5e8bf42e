"""The accuracy gate's repair of an OpenVINO int8 IR: NNCF's own accuracy control.

`make export` quantizes the IR with plain NNCF post-training quantization (export.formats.nncf_int8),
which the gate then judges on the eval set with the other artifacts. Only one that fails is quantized
again with `nncf.quantize_with_accuracy_control` (the eval set, the gate's int8 threshold as `max_drop`):
NNCF reverts the most sensitive layers to float until the drop is within it. Measured on the default
bundle's dense head (2-core EPYC): plain PTQ 12.8 CPU s, with accuracy control 22.4 CPU s, both every
weighted layer in int8 at a drop of 2.5 points (the threshold), so accuracy control was paid on every
export for nothing.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from export.formats import Artifact
from export.quality.accuracy import AccuracyResult

#: The remedy's name in the repair record and quantization.md.
REMEDY = "NNCF accuracy control (layers reverted to float until the drop is within the threshold)"


def repair_openvino(art: Artifact, result: AccuracyResult, *, requantize: Callable[[], Artifact],
                    evaluate: Callable[[Artifact], AccuracyResult]) -> tuple[Artifact, AccuracyResult, dict[str, Any]]:
    """`requantize()` rewrites the failing int8 IR with NNCF's accuracy control and returns its Artifact;
    `evaluate(artifact)` judges it. Returns the artifact and result that stand and the repair record
    (the shape of export.quality.repair_onnx's)."""
    def row(name: str, r: AccuracyResult) -> dict[str, Any]:
        return {"remedy": name, "accuracy": r.scored.accuracy, "drop_points": r.drop_points, "passed": r.passed}

    tried = [row("NNCF post-training quantization as calibrated", result)]
    art = requantize()
    result = evaluate(art)
    tried.append(row(REMEDY, result))
    record: dict[str, Any] = {"tried": tried, "fired": REMEDY if result.passed else None, "layer_errors": []}
    if result.passed:
        result.remedy = REMEDY
    return art, result, record
