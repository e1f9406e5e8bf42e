"""The per-precision ceilings (export.bench.ceilings) measured for real on a small matmul: int8 with ONNX
Runtime's MatMulInteger and OpenVINO's FakeQuantize x int8 matmul, bf16 with OpenVINO where the CPU has
bf16 units (skipped, never faked, elsewhere); each row is held to its own precision's best."""
from __future__ import annotations

import pytest

from export.bench import ceilings
from tests.helpers import has_bf16

pytestmark = pytest.mark.integration


def test_int8_and_bf16_ceilings_are_measured_or_skipped():
    from export.core.cpu_features import bf16_unit, cpu_flags
    got = ceilings.measure(256, 2, 1, bf16_unit(cpu_flags()))
    by = {(m["precision"], m["library"]): m for m in got}
    assert set(by) == {("int8", "onnxruntime"), ("int8", "openvino"), ("bf16", "openvino")}
    for key in (("int8", "onnxruntime"), ("int8", "openvino")):
        assert by[key]["gflops"] > 0 and len(by[key]["seconds"]) == 2 and by[key]["kernel"], by[key]
    bf16 = by["bf16", "openvino"]
    if has_bf16():
        assert bf16["gflops"] > 0 and "bf16 hint" in bf16["kernel"]
    else:
        assert bf16 == {"precision": "bf16", "library": "openvino", "skipped": "skipped: no bf16 hardware"}
    best = ceilings.best_by_precision([{"library": "numpy", "gflops": 50.0}, *got])
    assert best["fp32"]["gflops"] == 50.0
    assert best["int8"]["gflops"] == max(by[k]["gflops"] for k in by if k[0] == "int8")
    assert ("bf16" in best) == has_bf16()


@pytest.mark.parametrize(("row", "ceiling"), [
    ({"precision": "fp32"}, "fp32"), ({"precision": "fp16", "precision_hint": "f32"}, "fp32"),
    ({"precision": "fp16", "precision_hint": "bf16"}, "bf16"), ({"precision": "int8", "precision_hint": "bf16"}, "int8"),
    ({"precision": "int8"}, "int8"), ({"precision": "dynamic"}, "int8")])
def test_each_row_is_held_to_its_own_precision(row, ceiling):
    assert ceilings.row_precision(row) == ceiling
