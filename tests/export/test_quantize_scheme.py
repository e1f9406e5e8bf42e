"""The ONNX int8 scheme: chosen from the CPU's features, recorded by name, validated."""
from __future__ import annotations

import pytest

from export.core.errors import UsageError
from export.formats.quantize import QuantScheme, cpu_record, scheme_for

pytestmark = pytest.mark.unit

ZEN4 = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}
AVX2 = {"avx2", "fma"}


def test_scheme_follows_the_cpu():
    fast = scheme_for(ZEN4, "x86_64")
    assert (fast.format, fast.activations, fast.weights, fast.per_channel, fast.reduce_range) == \
        ("QDQ", "uint8", "int8", True, False)
    assert fast.name == "U8S8 QDQ per-channel" and "AVX512-VNNI yes" in fast.reason
    plain = scheme_for(AVX2, "x86_64")
    assert plain.reduce_range and plain.name == "U8S8 QDQ per-channel reduce_range"
    assert "without VNNI" in plain.reason
    assert not scheme_for(AVX2, "aarch64").reduce_range, "reduce_range is an x86 matter"
    assert QuantScheme(activations="int8", per_channel=False).name == "S8S8 QDQ per-tensor"
    assert QuantScheme().to_dict()["name"] == "U8S8 QDQ per-channel"
    assert cpu_record(ZEN4)["int8_dot"] is True and cpu_record(AVX2)["int8_dot"] is False


def test_bad_scheme_is_refused_by_name():
    with pytest.raises(UsageError, match="quantization format 'QOp': choose one of QDQ, QOperator"):
        QuantScheme(format="QOp")
