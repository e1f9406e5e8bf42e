"""Repair of an int8 ONNX artifact that fails the accuracy gate, with the field's standard remedies,
in order, stopping at the first that passes:

1. another calibration method: ONNX Runtime's CalibrationMethod Percentile (MinMax is the
   default; one outlier image stretches its ranges, Percentile clips them). Entropy is not in the
   chain by default: with its histograms merged one image at a time it took 120 s on the 4-layer
   test model (Percentile: under 2 s), far too slow for ResNet50's ~100 activations; pass
   `methods=("Percentile", "Entropy")` to try it;
2. the most sensitive layers kept in float: per-tensor quantization error measured with ONNX
   Runtime's QDQ debugging tools (onnxruntime.quantization.qdq_loss_debug: the signal-to-
   quantization-noise ratio of each activation before and after its QuantizeLinear/
   DequantizeLinear pair), and the producers of the worst tensors passed to quantize_static
   as `nodes_to_exclude`, 1, then 4, then 16 of them.

What was tried and what fired goes into the artifact's details (`repair`); the per-layer errors
go into the bundle's quantization.md. TFLite int8 is repaired by export.quality.repair_tflite (layers kept in
float only: its converter has one calibration method); quantization_markdown renders both.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from export.formats import Artifact
from export.quality.accuracy import AccuracyResult

CALIBRATION_REMEDIES: tuple[str, ...] = ("Percentile",)
EXCLUDE_STEPS = (1, 4, 16)
#: Calibration images the per-layer error is measured on (each keeps every activation of both models).
LAYER_ERROR_IMAGES = 4


def onnx_layer_errors(fp32_path: str | Path, int8_path: str | Path, images: np.ndarray,
                      max_images: int = LAYER_ERROR_IMAGES) -> list[dict[str, Any]]:
    """Per activation of the QDQ model: the node that produces it, the SQNR (dB; lower is worse) of
    its quantization (`qdq_sqnr_db`) and of the QDQ model against the float one (`float_sqnr_db`).
    Worst quantization first."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    feed = np.asarray(images[:max_images], dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix=".qdq-debug.") as tmp:
        aug_float, aug_qdq = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(fp32_path), str(aug_float))
        modify_model_output_intermediate_tensors(str(int8_path), str(aug_qdq))
        feeds = [{"image": feed[i:i + 1]} for i in range(len(feed))]
        float_acts = collect_activations(str(aug_float), iter(feeds))  # any iterable of feeds
        qdq_acts = collect_activations(str(aug_qdq), iter(feeds))
    matched = create_activation_matching(qdq_acts, float_acts)
    producer = {out: node.name for node in onnx.load(str(int8_path), load_external_data=False).graph.node
                for out in node.output}
    rows = []
    for tensor, m in matched.items():
        row: dict[str, Any] = {"tensor": tensor, "node": producer.get(tensor, ""),
                               "qdq_sqnr_db": round(compute_signal_to_quantization_noice_ratio(m["pre_qdq"],
                                                                                               m["post_qdq"]), 2)}
        if m.get("float") is not None:
            row["float_sqnr_db"] = round(compute_signal_to_quantization_noice_ratio(m["float"], m["post_qdq"]), 2)
        rows.append(row)
    return sorted(rows, key=lambda r: r["qdq_sqnr_db"])


def repair_onnx(art: Artifact, result: AccuracyResult, *, requantize: Callable[[Any], Artifact],
                evaluate: Callable[[Artifact], AccuracyResult], fp32_path: str | Path, root: str | Path,
                calibration: np.ndarray, scheme,
                methods: tuple[str, ...] = CALIBRATION_REMEDIES) -> tuple[Artifact, AccuracyResult, dict[str, Any]]:
    """Try the remedies on a failing ONNX int8 artifact; `requantize(scheme)` rewrites it and
    returns its new Artifact, `evaluate(artifact)` judges it. Returns the artifact and result that
    stand (the first passing remedy's, or the last tried), and the repair record."""
    tried: list[dict[str, Any]] = [{"remedy": f"calibration {scheme.calibration} (default)",
                                    "accuracy": result.scored.accuracy, "drop_points": result.drop_points,
                                    "passed": result.passed}]
    record: dict[str, Any] = {"tried": tried, "fired": None, "layer_errors": []}

    def attempt(name: str, new_scheme) -> bool:
        nonlocal art, result
        art = requantize(new_scheme)
        result = evaluate(art)
        tried.append({"remedy": name, "accuracy": result.scored.accuracy, "drop_points": result.drop_points,
                      "passed": result.passed})
        if result.passed:
            record["fired"] = name
        return result.passed

    for method in methods:
        if attempt(f"calibration {method}", replace(scheme, calibration=method)):
            return art, _fired(result, record), record
    # Remedy 2 measures the errors of the default calibration's model (requantized once more).
    art = requantize(scheme)
    errors = onnx_layer_errors(fp32_path, Path(root) / art.path if not Path(art.path).is_absolute() else art.path,
                               calibration)
    record["layer_errors"] = errors
    nodes = [e["node"] for e in errors if e["node"]]
    for k in EXCLUDE_STEPS:
        chosen = tuple(dict.fromkeys(nodes))[:k]
        if not chosen:
            break
        if attempt(f"{len(chosen)} most sensitive node(s) kept in float", replace(scheme, nodes_to_exclude=chosen)):
            record["excluded"] = list(chosen)
            return art, _fired(result, record), record
        if len(chosen) < k:
            break
    return art, result, record


def _fired(result: AccuracyResult, record: dict[str, Any]) -> AccuracyResult:
    result.remedy = record["fired"] or ""
    return result


def _nncf_sentence(rec: dict[str, Any]) -> str:
    """What NNCF said of an OpenVINO int8 IR (its log lines), and why its accuracy control was not kept."""
    return ("NNCF: " + "; ".join(rec["nncf_log"]) + "."
            + (f" {rec['accuracy_control']}." if rec.get("accuracy_control") else ""))


def quantization_markdown(records: dict[str, dict[str, Any]], top: int = 15) -> str:
    """quantization.md: per int8 artifact, what it was calibrated on, the remedies tried and the
    per-layer errors (worst first) when they were measured."""
    lines = ["# Quantization", "",
             "How each int8 artifact was calibrated, whether the accuracy gate sent it through the repair "
             "remedies (another calibration method, then the most sensitive layers kept in float), and the "
             "per-layer quantization errors that chose those layers.", ""]
    for key, rec in sorted(records.items()):
        cal = rec.get("calibration_data") or {}
        lines += [f"## {key}", "",
                  f"Calibrated on {cal.get('count', '?')} images of {cal.get('source', '?')} "
                  f"(`{cal.get('path', '?')}`, sha256 {str(cal.get('sha256', ''))[:12]}); "
                  f"scheme: {rec.get('scheme', 'converter default')}.", ""]
        repair = rec.get("repair")
        if not repair:
            nncf = rec.get("nncf_log")
            if nncf is not None:  # OpenVINO int8 as NNCF quantized it (the gate did not send it to accuracy control)
                gate = rec.get("gate", "not judged (no eval set)")
                if nncf:
                    lines += [f"Accuracy gate: {gate}. {_nncf_sentence(rec)}", ""]
                elif gate == "passed":
                    lines += ["Passed the accuracy gate as calibrated (plain NNCF post-training quantization): "
                              "NNCF's accuracy control not needed.", ""]
                else:
                    lines += [f"Accuracy gate: {gate}. NNCF: plain post-training quantization.", ""]
                continue
            lines += ["Passed the accuracy gate as calibrated: no remedy needed." if rec.get("gate") == "passed"
                      else f"Accuracy gate: {rec.get('gate', 'not judged (no eval set)')}; "
                           f"{rec.get('note', 'no repair attempted')}.", ""]
            continue
        lines += [f"Remedy that fired: **{repair['fired'] or 'none passed'}**.", "",
                  "| remedy | accuracy | drop (points) | passed |", "|---|---|---|---|"]
        lines += [f"| {t['remedy']} | {t['accuracy']:.3f} | {t['drop_points']:g} | {'yes' if t['passed'] else 'no'} |"
                  for t in repair["tried"]]
        if repair.get("note"):
            lines += ["", f"Note: {repair['note']}."]
        if rec.get("nncf_log"):  # OpenVINO int8 repaired by NNCF's accuracy control: what NNCF said
            lines += ["", _nncf_sentence(rec)]
        if repair.get("layer_errors") and "rmse_scale" in repair["layer_errors"][0]:
            lines += ["", f"Worst {min(top, len(repair['layer_errors']))} layers by quantization error "
                      "(tf.lite.experimental.QuantizationDebugger; RMS error in quantization steps: higher is worse; "
                      "model outputs are never kept in float):", "",
                      "| tensor | op | rmse/scale | elements | model output |", "|---|---|---|---|---|"]
            lines += [f"| `{e['tensor']}` | {e['op']} | {e['rmse_scale']} | {e['num_elements']} | "
                      f"{'yes' if e['output'] else 'no'} |" for e in repair["layer_errors"][:top]]
        elif repair.get("layer_errors"):
            lines += ["", f"Worst {min(top, len(repair['layer_errors']))} activations by quantization error:", "",
                      "| tensor | produced by | quantization SQNR dB | vs float SQNR dB |", "|---|---|---|---|"]
            lines += [f"| `{e['tensor']}` | `{e['node']}` | {e['qdq_sqnr_db']} | {e.get('float_sqnr_db', '-')} |"
                      for e in repair["layer_errors"][:top]]
        lines.append("")
    return "\n".join(lines)
