"""bench.json as a typed, versioned document: JSON round-trip, statuses, refusal of other versions."""
from __future__ import annotations

import json

import pytest

from export.bench.document import BenchReport, BenchRow, Recommendation, RowStatus
from export.core.errors import BundleError

pytestmark = pytest.mark.unit


def _report() -> BenchReport:
    ok = BenchRow(key="dense/onnx_fp32", variant="dense", format="onnx", precision="fp32", path="onnx/dense/model.onnx",
                  bytes=94_000_000, gflop_per_image=7.73, device="CPU", load_s=0.4, first_inference_s=0.05,
                  latency_ms={"1": {"p50": 20.0, "images_per_s": 50.0}}, top1={"agree": 12, "total": 12},
                  achieved_gflops=386.5, extra={"threads_1_p50_ms": 38.0})
    bad = BenchRow(key="dense/tflite_int8", variant="dense", format="tflite", precision="int8",
                   path="tflite/dense/model_int8.tflite", bytes=24_000_000, gflop_per_image=7.73, error="cannot load")
    return BenchReport(bundle="heads-1", created_at="2026-11-30T00:00:00+00:00", environment={"cpu_model": "x"},
                       settings={"threads": 2}, ceiling={"gflops": 400.0}, flops={"dense": {"total": 7.73}},
                       artifacts=[ok, bad], files=["bench/bench.json"], extra={"notes": [{"name": "t", "met": True}]})


def test_round_trip_and_statuses():
    r = _report()
    d = json.loads(json.dumps(r.to_dict()))
    assert d["format_version"] == 2 and d["notes"] == [{"name": "t", "met": True}]
    assert d["artifacts"][0]["threads_1_p50_ms"] == 38.0
    back = BenchReport.from_dict(d)
    assert back == r
    assert [row.status for row in back.artifacts] == [RowStatus.MEASURED, RowStatus.FAILED]
    assert not back  # one artifact failed
    back.artifacts.pop()
    assert back


def test_other_version_is_refused():
    with pytest.raises(BundleError, match="has bench format 7, expected 2"):
        BenchReport.from_dict({**_report().to_dict(), "format_version": 7})


def test_a_skipped_hint_row_is_neither_measured_nor_failed():
    r = _report()
    r.artifacts = [r.artifacts[0], BenchRow(key="dense/openvino_fp16", variant="dense", format="openvino",
                                            precision="fp16", path="openvino/dense/1/model.xml", bytes=47_000_000,
                                            gflop_per_image=7.73, precision_hint="bf16",
                                            skipped="skipped: no bf16 hardware")]
    back = BenchReport.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and back.artifacts[1].label == "dense/openvino_fp16@bf16"
    assert [row.status for row in back.artifacts] == [RowStatus.MEASURED, RowStatus.SKIPPED]
    assert back  # a skip is not a failure of the bench run (nor, in parity, ever a pass)


def test_the_recommendation_round_trips_as_plain_json():
    r = _report()
    r.recommended = [Recommendation(variant="dense", batch=1, label="dense/onnx_int8", key="dense/onnx_int8",
                                    format="onnx", precision="int8", p50_ms=7.5, speedup_vs_savedmodel=3.1,
                                    accuracy_drop_points=0.0, serve_backend="onnx:int8",
                                    serve_command="resnet-deploy serve heads-1 --local --model dense --backend onnx:int8",
                                    within_noise=["dense/openvino_int8@f32"], excluded={"dense/tflite_int8": "parity failed"}),
                     Recommendation(variant="conv", batch=8, label=None, note="no artifact passed")]
    d = json.loads(json.dumps(r.to_dict()))
    assert d["recommended"][0]["serve_backend"] == "onnx:int8" and d["recommended"][1]["label"] is None
    assert BenchReport.from_dict(d) == r
