"""serving.api.tf_protos: TF Serving's protos and the TensorProto codec without TensorFlow, held to
TensorFlow's own (tf.make_tensor_proto, tf.make_ndarray) on every dtype both know and on hostile protos;
a local server on the ONNX, TFLite or OpenVINO backend and the gRPC client commands run without it."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from serving.api import tf_protos
from tests.helpers import ROOT
from tests.serving.hostile_requests import tensor_protos

pytestmark = pytest.mark.integration

SHAPES = [(), (1,), (3,), (2, 2)]


def _arrays():
    """One small array per dtype TensorFlow maps to NumPy and shape in SHAPES."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    for enum in sorted(v for v in types_pb2.DataType.values() if 0 < v < 100):
        try:
            dtype = np.dtype(tf.as_dtype(enum).as_numpy_dtype)
        except (TypeError, KeyError):  # DT_RESOURCE, DT_VARIANT: no NumPy dtype
            continue
        for shape in SHAPES:
            n = int(np.prod(shape))
            if dtype == np.dtype(object):
                a = np.array([b"\x00x%d" % i for i in range(n)], dtype=object).reshape(shape)
            elif dtype.fields:  # the quantized types: one named field
                a = np.zeros(shape, dtype)
                a[dtype.names[0]] = 1
            else:
                a = (np.arange(n) % 2 + 1).astype(dtype).reshape(shape)
            yield tf.as_dtype(enum).name, a


def _outcome(fn, *args):
    try:
        return fn(*args)
    except (TypeError, ValueError) as e:
        return type(e)


def test_encoding_is_tensorflows_byte_for_byte_on_every_dtype():
    import tensorflow as tf
    checked = 0
    for name, a in _arrays():
        ref, got = _outcome(tf.make_tensor_proto, a), _outcome(tf_protos.from_ndarray, a)
        if isinstance(ref, type):  # TensorFlow refuses it (the fnuz float8 types as a list): so must we
            assert got is ref, (name, a.shape)
            continue
        assert got.SerializeToString() == ref.SerializeToString(), (name, a.shape)
        checked += 1
    assert checked >= 100
    for text in (np.array([b"ab", b"c"]), np.array(["ab", "c"])):  # fixed-width bytes and str: strings
        assert tf_protos.from_ndarray(text).SerializeToString() == tf.make_tensor_proto(text).SerializeToString()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.tolist() == b.tolist() if a.dtype == np.dtype(object) else a.tobytes() == b.tobytes()


def test_decoding_is_tensorflows_on_every_dtype_and_both_encodings():
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2
    for name, a in _arrays():
        proto = _outcome(tf.make_tensor_proto, a)
        if isinstance(proto, type):
            continue
        assert _same(tf_protos.to_ndarray(proto), tf.make_ndarray(proto)), name
        short = tensor_pb2.TensorProto()  # a typed list shorter than the shape: padded with its last value
        short.CopyFrom(proto)
        del short.tensor_shape.dim[:]
        for d in (*a.shape, 2):
            short.tensor_shape.dim.add(size=d)
        ref = _outcome(tf.make_ndarray, short)
        got = _outcome(tf_protos.to_ndarray, short)
        assert got is ref if isinstance(ref, type) else _same(got, ref), name


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(tensor_protos())
def test_hostile_protos_decode_as_tensorflow_decodes_them(proto):
    """The hostile requests' TensorProtos (any dtype number, content of any length, short lists): the same
    array as tf.make_ndarray, or an error where it raises one (the server answers INVALID_ARGUMENT)."""
    import tensorflow as tf
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.int64)) > 1 << 20:
        return  # refused before decoding (serving.api.tensors.proto_to_array)
    try:
        ref = tf.make_ndarray(proto)
    except Exception:  # noqa: BLE001 -- TensorFlow raises TypeError, ValueError or its own errors
        with pytest.raises(Exception):  # noqa: B017
            tf_protos.to_ndarray(proto)
        return
    assert _same(tf_protos.to_ndarray(proto), ref)


def test_protos_load_without_tensorflow_and_tensorflow_still_imports_after_them():
    code = textwrap.dedent("""
        import sys
        from serving.api import tf_protos
        tf_protos.load()
        from tensorflow_serving.apis import predict_pb2
        without = "tensorflow" not in sys.modules and not any("pywrap_tensorflow" in m for m in sys.modules)
        import numpy as np
        request = predict_pb2.PredictRequest()
        request.inputs["image"].CopyFrom(tf_protos.from_ndarray(np.ones((1, 2), np.float32)))
        import tensorflow as tf  # the real one, after the protos: the same proto classes
        from tensorflow.core.framework import tensor_pb2
        request.inputs["other"].CopyFrom(tf.make_tensor_proto(np.zeros(3, np.int64)))
        assert type(request.inputs["image"]) is tensor_pb2.TensorProto
        print(without, tf.make_ndarray(request.inputs["image"]).tolist(), tf.reduce_sum(tf.ones(4)).numpy())
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["True", "[[1.0,", "1.0]]", "4.0"]


CLIENT = textwrap.dedent("""
    import json, sys
    from export.cli.app import main
    codes = [main(argv) for argv in json.loads(sys.argv[1])]
    print(json.dumps({"codes": codes, "tensorflow": "tensorflow" in sys.modules}))
""")


@pytest.mark.parametrize("backend", ["onnx", "tflite:int8", "openvino"])
def test_server_on_a_runner_backend_and_the_grpc_client_run_without_tensorflow(backend, tiny_scoring_bundle, tmp_path):
    """The server process never maps TensorFlow's library; a client process running status, metadata and
    predict over gRPC (bytes and --pixels) never imports it, and gets the runner's answers."""
    from serving.tools.file_parity_server import start_local_server
    from tests.serving.scoring_bundle import MODEL
    image = tmp_path / "photo.png"
    from PIL import Image
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    proc, _rest, grpc_port, lines = start_local_server(tiny_scoring_bundle, "--backend", backend, cwd=ROOT)
    try:
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        target = f"127.0.0.1:{grpc_port}"
        calls = [["status", "--grpc", target, "--model", MODEL],
                 ["metadata", "--grpc", target, "--model", MODEL],
                 ["predict", "--grpc", target, "--model", MODEL, "--json", str(image)],
                 ["predict", "--grpc", target, "--model", MODEL, "--pixels", "--json", str(image)]]
        r = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(calls)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "pywrap_tensorflow" not in maps and "ready:" in "".join(lines)
    assert r.returncode == 0, r.stderr[-3000:]
    docs, text, decoder = [], r.stdout, json.JSONDecoder()
    while text.strip():
        text = text[text.index("{"):]
        doc, end = decoder.raw_decode(text)
        docs.append(doc)
        text = text[end:]
    assert docs[-1] == {"codes": [0, 0, 0, 0], "tensorflow": False}
    from_bytes, from_pixels = (d["predictions"][0]["top_k"] for d in docs if "predictions" in d)
    assert [t["index"] for t in from_bytes] == [t["index"] for t in from_pixels]  # the image contract's one answer
    np.testing.assert_allclose([t["probability"] for t in from_bytes], [t["probability"] for t in from_pixels],
                               atol=1e-6)
