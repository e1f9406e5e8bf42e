"""ONNX int8 on the tiny model: the default scheme writes U8S8 QDQ (uint8 activations, int8
per-channel weights) that ONNX Runtime loads and that keeps the float model's answers."""
from __future__ import annotations

import numpy as np
import pytest

from export.formats.quantize import QuantScheme, quantize_int8
from tests.helpers import TINY_SIZE

pytestmark = pytest.mark.integration


def _zero_point_types(path) -> set[str]:
    import onnx
    from onnx import helper
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    return {helper.tensor_dtype_to_np_dtype(inits[n.input[2]].data_type).name
            for n in m.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits}


def test_default_scheme_is_u8s8_qdq(tiny, tmp_path):
    import onnxruntime as ort

    from export.model import samples
    photos = samples.photos(TINY_SIZE)
    out = tmp_path / "int8.onnx"
    scheme = quantize_int8(tiny["onnx"], out, photos)
    assert scheme.activations == "uint8" and scheme.format == "QDQ"
    assert _zero_point_types(out) == {"uint8"}, "activations quantized to uint8 (U8S8)"
    s8 = tmp_path / "s8.onnx"
    quantize_int8(tiny["onnx"], s8, photos, QuantScheme(activations="int8"))
    assert _zero_point_types(s8) == {"int8"}

    def run(path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(["logits"], {"image": photos})[0]
    ref, got = run(tiny["onnx"]), run(out)
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= 0.75
