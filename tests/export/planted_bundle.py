"""A bundle directory with planted documents (manifest.json, parity.json, bench/bench.json) written
through the project's own dataclasses, and small artifact files whose sha256 the manifest records:
what the model card, BOM and report tests render, with figures no real run would produce by chance.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from export.bundle import layout as bundle
from export.bundle.manifest import Manifest, ParitySummary, VariantRecord
from export.core.atomic import sha256_file
from export.formats import Artifact
from export.quality.accuracy import AccuracyResult, AccuracySection, ClassAccuracy, GateStatus, Scored
from export.quality.report import ArtifactResult, OutputMetrics, ParityReport, ReferenceInfo, Status

LABELS = ["zebra", "yak"]
#: The planted figures, as the card and the report must print them.
PLANTED = {
    "val_accuracy": 0.8731, "train_accuracy": 0.9612, "probe": 0.9137, "data_sha256": "5eed" * 16,
    "eval_sha256": "e7a1" * 16, "ref_accuracy": 0.8125, "ref_ci": [0.6543, 0.9021],
    "int8_accuracy": 0.6875, "int8_ci": [0.5212, 0.8164], "int8_drop": 12.5, "yak_recall": 0.4286,
    "int8_max_abs": 0.04321, "fp32_max_abs": 3.21e-06, "p50_fp32": 41.37, "p50_int8": 12.89, "speedup": 3.209,
    "images": {"zebra": 61, "yak": 39}, "val_images": 32, "licence": "Apache-2.0",
}


def _scored(acc: float, ci: list[float], yak: float) -> Scored:
    return Scored(32, round(acc * 32), acc, ci, {"zebra": ClassAccuracy(18, 17, 0.9444),
                                                  "yak": ClassAccuracy(14, round(yak * 14), yak)})


def _artifact(root: Path, rel: str, fmt: str, precision: str) -> Artifact:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"planted {fmt} {precision} model".encode())
    return Artifact(path=rel, format=fmt, precision=precision, variant="dense", sha256=sha256_file(path),
                    bytes=path.stat().st_size, inputs=[{"name": "image"}], outputs=[{"name": "logits"}],
                    tool_versions={}, seconds=1.0)


def _parity_row(a: Artifact, max_abs: float) -> ArtifactResult:
    metrics = [OutputMetrics("logits", 1, max_abs, max_abs / 3, max_abs / 2, 0.01, 0.999, 0.9995, 1.0, 6, None, None, 0)]
    return ArtifactResult(a.key, "dense", a.format, a.precision, a.path, "litert", "CPU", "CPU", a.precision,
                          Status.PASSED, metrics=metrics, mean_ms={"1": 1.0})


def _accuracy_section(arts: list[Artifact]) -> AccuracySection:
    p = PLANTED
    results = [AccuracyResult(a.key, a.key, "dense", a.format, a.precision,
                              _scored(acc, ci, yak), p["ref_accuracy"], drop, [-3.1, drop + 3.0], 0.84, 4, 0, 1,
                              limit, GateStatus.PASSED)
               for a, acc, ci, yak, drop, limit in [
                   (arts[0], p["ref_accuracy"], p["ref_ci"], 0.6429, 0.0, 0.0),
                   (arts[1], p["int8_accuracy"], p["int8_ci"], p["yak_recall"], p["int8_drop"], 15.0)]]
    eval_set = {"source": "validation split of training run dense-abc", "path": "/data", "count": 32,
                "sha256": p["eval_sha256"], "images_per_class": {"zebra": 18, "yak": 14}}
    return AccuracySection("dense", eval_set, _scored(p["ref_accuracy"], p["ref_ci"], 0.6429), {"int8": 15.0}, results)


def plant(root: Path, *, bench: bool = True, probe: bool = True, end_to_end: bool = True) -> dict[str, Any]:
    """Write the planted bundle into `root` (manifest last, listing every file); returns PLANTED."""
    p = PLANTED
    root.mkdir(parents=True, exist_ok=True)
    arts = [_artifact(root, "tflite/dense/model_fp32.tflite", "tflite", "fp32"),
            _artifact(root, "tflite/dense/model_int8.tflite", "tflite", "int8")]
    report = ParityReport(environment={"cpu": "planted"}, references=[
        ReferenceInfo("dense", "golden", "CPU", ["a.jpg"], [1, 224, 224, 3], "0" * 64, [1], 2, [0, 1], 0)],
        results=[_parity_row(arts[0], p["fp32_max_abs"]), _parity_row(arts[1], p["int8_max_abs"]),
                 ArtifactResult(arts[1].key, "dense", "tflite", "int8", arts[1].path, "litert", "GPU:0", "", "int8",
                                Status.SKIPPED, reason="skipped: no GPU")],
        accuracy=[_accuracy_section(arts)])
    doc = report.to_dict()
    if end_to_end:
        doc["end_to_end"] = [{"path": "REST predict_image_bytes", "top1_agreement": 0.9876, "passed": True},
                             {"path": "Beam score", "top1_agreement": 0.9543, "passed": True}]
    (root / "parity.json").write_text(json.dumps(doc, indent=2))
    if bench:
        (root / "bench").mkdir()
        rows = [{"key": a.key, "label": a.key, "variant": "dense", "format": a.format, "precision": a.precision,
                 "bytes": a.bytes, "error": None, "skipped": None, "top1": {"agreement": 1.0},
                 "latency_ms": {"1": {"p50": ms, "p99": ms * 1.5, "images_per_s": 1000 / ms}},
                 "speedup_vs_fp32": None if a.precision == "fp32" else {"sibling": arts[0].key, "by_batch": {"1": p["speedup"]}}}
                for a, ms in ((arts[0], p["p50_fp32"]), (arts[1], p["p50_int8"]))]
        (root / "bench" / "bench.json").write_text(json.dumps({
            "format_version": 1, "bundle": "planted-7", "created_at": "2026-12-01T00:00:00+00:00",
            "environment": {"cpu_model": "Planted CPU 9000"}, "settings": {"threads": 2}, "artifacts": rows,
            "recommended": [{"variant": "dense", "batch": 1, "label": "dense/tflite_int8", "p50_ms": p["p50_int8"],
                             "speedup_vs_savedmodel": 4.567, "accuracy_drop_points": p["int8_drop"],
                             "serve_command": "resnet-deploy serve planted-7 --backend tflite:int8",
                             "excluded": {"dense/onnx_int8": "failed parity"},
                             "note": "fastest within the accuracy gate"}]}))
    history = [{"epoch": float(e), "loss": 1.0 / (e + 1), "accuracy": 0.5 + e / 20, "val_loss": 1.2 / (e + 1),
                "val_accuracy": 0.5 + e / 25} for e in range(6)]
    training = {"data": "demo:lfw_subset", "data_sha256": p["data_sha256"], "images_per_class": p["images"],
                "val_images_per_class": {"zebra": 18, "yak": 14}, "val_images": p["val_images"],
                "val_accuracy": p["val_accuracy"], "val_loss": 0.4, "train_accuracy": p["train_accuracy"],
                "per_class": {"zebra": {"precision": 0.85, "recall": 0.9444, "images": 18},
                              "yak": {"precision": 0.9, "recall": p["yak_recall"], "images": 14}},
                "epochs_run": {"phase1": 4, "phase2": 2}, "seconds": 3.0, "weights": "random:0", "input_size": 224,
                "settings": {"val_split": 0.2, "seed": 0}, "history": history, "confusion_matrix": [[17, 1], [8, 6]],
                **({"probe": {"model": "planted StandardScaler + LogisticRegression", "train_accuracy": 0.9876,
                               "val_accuracy": p["probe"], "seconds": 0.123}} if probe else {})}
    manifest = Manifest(
        name="planted", version=7, created_at="2026-12-01T00:00:00+00:00", tool_versions={}, config="planted.toml",
        variants={"dense": VariantRecord(spec={"name": "dense", "head": [{"kind": "global_average_pooling"}],
                                               "input_size": 224},
                                         num_classes=2, labels=LABELS, params={"total": 23591810, "trainable": 4098},
                                         inputs={}, outputs={}, weights={"source": "random:0", "kind": "random"},
                                         training=training)},
        artifacts=arts, parity=ParitySummary(passed=True, counts=report.counts()),
        git={"commit": "c0ffee" * 6}, accuracy={"passed": True, "dropped": [], "variants": {}},
        extra={"card": {"author": "planted author", "license": p["licence"], "intended_use": None,
                        "out_of_scope": None, "limitations": ["Planted limitation: never on Tuesdays."]}})
    from export.bundle import selfdoc
    selfdoc.write_all(root, manifest.to_dict())
    bundle.write_manifest(root, manifest)
    return p

