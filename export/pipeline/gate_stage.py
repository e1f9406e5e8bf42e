"""The accuracy gate inside `make export`'s worker tasks (export.pipeline.stages).

The Keras task `prepare`s a variant's gate: its eval set (the variant's `eval_data`, else its
training run's validation split), its calibration set (`calibration`, else a seeded stratified
sample of the run's training split, else the sample photos), and the reference's logits on the
eval set. It leaves them in the staging's scratch directory for the converter tasks, and the
reference's eval logits in golden/<variant>/eval.json (so `parity --eval-data` can reuse them).
Each task then `judge`s its artifacts; an int8 that fails goes through export.quality.repair_onnx (ONNX),
export.quality.repair_tflite (TFLite) or export.quality.repair_openvino (OpenVINO: quantized again with
NNCF's accuracy control, given the eval set and the int8 threshold by `accuracy_control`); one that still
fails is dropped or fails the bundle like the others.

The gate's eval runs ride on the parity check (`Measured.take` as check_artifacts' `while_loaded`):
each artifact is loaded once for both, and an fp32 artifact whose parity is bit-close to the
reference is not run on the eval set at all (its result says so).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.formats import Artifact
from export.quality import accuracy

EVAL_REFERENCE = "eval.json"


def _scratch(work: str | Path) -> Path:
    return Path(work) / "gate.npz"


def prepare(built, staging: str | Path, gate: dict[str, Any], run_dir: str | None,
            work: str | Path, saved_model: str | Path | None = None) -> dict[str, Any] | None:
    """Eval and calibration sets of the variant and the reference's eval logits (left in the
    variant's scratch directory `work`); None when the variant has neither an eval set nor
    calibration data (then int8 uses the sample photos)."""
    from export.quality import golden
    from export.runtimes.keras import KerasRunner
    from export.training import labeled_sets
    size, labels, name = built.input_size, list(built.labels), built.spec.name
    train: labeled_sets.LabeledSet | None = None
    val: labeled_sets.LabeledSet | None = None
    if run_dir:
        train, val = labeled_sets.run_split(run_dir, size)
    evalset: labeled_sets.LabeledSet | None = val
    if gate.get("eval_data"):
        evalset = labeled_sets.eval_set(gate["eval_data"], size, labels, what=f"variant {name!r} eval_data")
    count = gate.get("calibration_count", labeled_sets.DEFAULT_CALIBRATION_COUNT)
    calib: labeled_sets.LabeledSet | None = None
    if gate.get("calibration"):
        calib = labeled_sets.calibration_set(gate["calibration"], size, count=count, demo_root=gate["demo_root"],
                                             what=f"variant {name!r} calibration")
    elif train is not None:
        calib = labeled_sets.sample(train, count)
    if evalset is None and calib is None:
        return None
    arrays: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {"variant": name, "class_names": labels, "max_drop": gate["max_drop"],
                           "eval_set": None, "calibration": None}
    if calib is not None:
        arrays["calibration"] = calib.images
        out["calibration"] = calib.record
    if evalset is not None:
        with KerasRunner(built.model, name=f"{name}/keras") as runner:
            logits = accuracy.logits_of(runner, evalset.images)
        arrays.update(eval_images=evalset.images, eval_labels=evalset.labels, reference_logits=logits)
        out["eval_set"] = evalset.record
        out["reference"] = accuracy.score(logits, evalset.labels, labels)
        if saved_model is not None and (Path(saved_model) / "saved_model.pb").is_file():
            out["bytes_path"] = bytes_path_check(saved_model, evalset, logits)
        from export.core.atomic import write_text
        from export.quality.evaluation import pixels_sha256
        write_text(golden.golden_dir(staging, name) / EVAL_REFERENCE, json.dumps(
            {"eval_set": evalset.record, "pixels_sha256": pixels_sha256(evalset.images), "files": evalset.files,
             "class_names": labels, "bytes_path": out.get("bytes_path"),
             "labels": evalset.labels.tolist(), "logits": np.asarray(logits).round(6).tolist()}, indent=1))
    path = _scratch(work)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, allow_pickle=False, **arrays)
    return out


def bytes_path_check(saved_model: str | Path, evalset, logits: np.ndarray) -> dict[str, Any]:
    """The eval set's files through the SavedModel's `predict_image_bytes` (the production path)
    against the reference on the contract-decoded pixels the gate judges: top-1 agreement and the
    largest probability difference (the stored uint8 pixels are the contract's whole grey levels, the
    graph's bit for bit on the test corpus; a flip here is a bug)."""
    import tensorflow as tf
    sm = tf.saved_model.load(str(saved_model))
    root = Path(evalset.record["path"])
    probs = []
    for i in range(0, len(evalset.files), 16):
        blobs = tf.constant([(root / rel).read_bytes() for rel in evalset.files[i:i + 16]])
        probs.append(sm.signatures["predict_image_bytes"](image_bytes=blobs)["probabilities"].numpy())
    got = np.concatenate(probs) if probs else np.zeros((0, logits.shape[-1]), np.float32)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    ref = z / z.sum(axis=1, keepdims=True)
    flips = [f for f, a, b in zip(evalset.files, got.argmax(1), ref.argmax(1), strict=True) if a != b]
    return {"signature": "predict_image_bytes", "images": len(got),
            "top1_agreement": round(1 - len(flips) / max(len(got), 1), 4),
            "max_prob_diff": round(float(np.abs(got - ref).max()) if len(got) else 0.0, 6), "flips": flips[:10]}


def load(work: str | Path) -> dict[str, np.ndarray]:
    path = _scratch(work)
    if not path.is_file():
        return {}
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def calibration_options(work: str | Path, prepared: dict[str, Any] | None) -> dict[str, Any]:
    """The exporters' int8 calibration options: the prepared calibration set and its record."""
    if not prepared or prepared.get("calibration") is None:
        return {}
    return {"calibration": load(work)["calibration"], "calibration_record": prepared["calibration"]}


def accuracy_control(work: str | Path, prepared: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenVINO int8's NNCF accuracy control settings: the eval set's images and labels and the
    gate's int8 threshold (points); None without an eval set (plain PTQ then)."""
    if not prepared or prepared.get("eval_set") is None:
        return None
    arrays = load(work)
    return {"images": arrays["eval_images"], "labels": arrays["eval_labels"],
            "max_drop": prepared["max_drop"].get("int8", accuracy.DEFAULT_MAX_DROP["int8"])}


class Measured:
    """What the parity check measured for the gate while each artifact's runner was loaded: the eval
    set's logits, or, for a bit-close fp32 artifact, its parity error instead (not run again).
    Entries are keyed by artifact key and sha256, so a repaired (re-exported) int8 is evaluated anew."""

    def __init__(self, prepared: dict[str, Any] | None, work: str | Path) -> None:
        has_eval = bool(prepared) and prepared.get("eval_set") is not None  # type: ignore[union-attr]
        self.images = load(work).get("eval_images") if has_eval else None
        self.logits: dict[tuple[str, str], np.ndarray] = {}
        self.bit_close: dict[tuple[str, str], float] = {}
        self.seconds = 0.0

    def take(self, art: Artifact, runner, result) -> None:
        """check_artifacts' `while_loaded`: the eval logits of `art` on its loaded CPU runner."""
        if self.images is None:
            return
        worst = result.worst("logits", "max_abs")
        if (art.precision == "fp32" and not result.failures and worst is not None
                and worst <= accuracy.BIT_CLOSE_LOGITS):
            self.bit_close[art.key, art.sha256] = worst
            return
        start = time.perf_counter()
        try:
            self.logits[art.key, art.sha256] = accuracy.logits_of(runner, self.images)
        except Exception:  # noqa: BLE001 -- judge evaluates it again on its own runner and reports why it fails
            pass
        self.seconds += time.perf_counter() - start


def _nncf_record(art: Artifact) -> dict[str, Any]:
    """quantization.md's entries for an OpenVINO int8 IR: NNCF's scheme with what it kept in float, its
    own log lines, and why its accuracy control was not kept, if it was not."""
    q = art.details["quantization"]
    return {"scheme": f"{q['name']}; {q['summary']}", "nncf_log": q.get("nncf_log", []),
            "accuracy_control": q.get("accuracy_control", "")}


def judge(artifacts: list[Artifact], root: str | Path, prepared: dict[str, Any] | None, threads: int,
          work: str | Path, repair_int8=None,
          measured: Measured | None = None) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Judge every artifact on the eval set; an int8 (of the task's format) that fails goes
    through `repair_int8(art, result, evaluate) -> (art, result, record)`. Returns the results (as dicts) and the
    quantization records of the int8 artifacts (for quantization.md). What `measured` holds for an
    artifact (same sha256) is used instead of loading it again."""
    quant: dict[str, dict[str, Any]] = {}
    for art in artifacts:
        if art.precision == "int8":
            quant[art.key] = {"calibration_data": art.details.get("calibration_data"),
                              "scheme": (art.details.get("quantization") or {}).get("name", "TFLite converter "
                                                                                    "(MinMax, per-channel)")}
            if art.format == "openvino":
                quant[art.key].update(_nncf_record(art))
    if not prepared or prepared.get("eval_set") is None:
        for rec in quant.values():
            rec["gate"] = "not judged (no eval set)"
        return [], quant
    arrays = load(work)
    images, labels, ref = arrays["eval_images"], arrays["eval_labels"], arrays["reference_logits"]

    def evaluate(art: Artifact) -> accuracy.AccuracyResult:
        known = (art.key, art.sha256)
        args = (prepared["class_names"], prepared["max_drop"])
        if measured is not None and known in measured.bit_close:
            return accuracy.judge_bit_close(art.key, art.key, art.variant, art.format, art.precision,
                                            measured.bit_close[known], ref, labels, *args)
        if measured is not None and known in measured.logits:
            return accuracy.judge(art.key, art.key, art.variant, art.format, art.precision, measured.logits[known],
                                  ref, labels, prepared["class_names"], prepared["max_drop"])
        (r,) = accuracy.evaluate_artifacts([art], root, images, labels, prepared["class_names"], ref,
                                           prepared["max_drop"], num_threads=threads)
        return r

    results = []
    for i, art in enumerate(artifacts):
        result = evaluate(art)
        if not result.passed and art.precision == "int8" and repair_int8:
            art, result, record = repair_int8(art, result, evaluate)
            artifacts[i] = art
            quant[art.key].update(repair=record)
            if art.format == "onnx":
                quant[art.key]["scheme"] = art.details["quantization"]["name"]
            elif art.format == "openvino":  # quantized again: NNCF's new record
                quant[art.key].update(_nncf_record(art))
            elif art.details.get("keep_float"):
                quant[art.key]["scheme"] += f"; {len(art.details['keep_float'])} layer(s) kept in float"
            art.details["repair"] = {k: v for k, v in record.items() if k != "layer_errors"}
        if art.key in quant:
            quant[art.key]["gate"] = str(result.status)
        results.append(accuracy.asdict_result(result))
    return results, quant
