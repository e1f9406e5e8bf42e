"""Hypothesis strategies for hostile requests to the local server (tests/serving/test_hostile.py):
REST bodies (tensors of every wrong kind, b64 garbage, deep and raw JSON, truncated bodies), REST
paths, and gRPC PredictRequests (arbitrary TensorProtos, and valid requests with one thing changed).
"""
from __future__ import annotations

import base64
import json
import math

import numpy as np
from hypothesis import strategies as st

from serving.client.clients import encode_png
from tests.serving.conftest import TINY_VARIANT

SIZE = 32  # the tiny model's input size

# -- REST strategies ----------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                               max_size=4),
                           max_leaves=25)
FILLS = ("pixels", "nan", "inf", "huge", "negative", "ints", "strings", "bools", "nulls", "b64", "mixed")


@st.composite
def tensors(draw):
    """A nested JSON list: a valid image shape or a wrong one, filled with one kind of value."""
    if draw(st.booleans()):
        shape = [draw(st.integers(0, 3)), SIZE, SIZE, 3]
    else:
        shape = draw(st.lists(st.integers(0, 5), max_size=5))
    n = int(np.prod(shape)) if shape else 1
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    fill = draw(st.sampled_from(FILLS))
    flat = {"pixels": lambda: rng.uniform(0, 255, n).tolist(),
            "nan": lambda: np.where(rng.random(n) < 0.01, np.nan, 1.0).tolist(),
            "inf": lambda: [-np.inf] * n, "huge": lambda: [3.4e39] * n, "negative": lambda: (-rng.random(n)).tolist(),
            "ints": lambda: rng.integers(-(2**62), 2**62, n).tolist(), "strings": lambda: ["px"] * n,
            "bools": lambda: (rng.random(n) < 0.5).tolist(), "nulls": lambda: [None] * n,
            "b64": lambda: [{"b64": "AAAA"}] * n, "mixed": lambda: [[1.0, "a", None, True][i % 4] for i in range(n)],
            }[fill]()
    if not shape:
        return flat[0]
    nested_values = np.empty(n, dtype=object)
    nested_values[:] = flat
    return nested_values.reshape(shape).tolist()


PNG = encode_png(np.full((SIZE, SIZE, 3), 128, np.uint8))
b64_text = st.one_of(
    st.text(max_size=40),  # garbage, usually not base64 at all
    st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),  # base64 of random bytes
    st.binary(max_size=64).map(lambda b: base64.b64encode(b"\x89PNG\r\n\x1a\n" + b).decode()),  # PNG magic, junk
    st.binary(max_size=64).map(lambda b: base64.b64encode(b"\xff\xd8\xff" + b).decode()),  # JPEG magic, junk
    st.integers(1, 60).map(lambda k: base64.b64encode(PNG[:-k]).decode()),  # a truncated real PNG
    st.just(base64.b64encode(b"GIF89a" + b"\x00" * 20).decode()),
    st.just(base64.b64encode(PNG).decode()),  # valid
)
@st.composite
def predict_bodies(draw) -> bytes:
    signature = draw(st.sampled_from(["", "serving_default", "predict_image_bytes", None, 7, "nope"])
                     | st.text(max_size=10))
    image_sig = signature == "predict_image_bytes"
    value = draw(st.lists(st.builds(lambda s: {"b64": s}, b64_text) | st.text(max_size=5) | st.integers(),
                          max_size=10) if image_sig else tensors())
    form = draw(st.sampled_from(["instances", "inputs", "named-inputs", "named-instances", "both", "neither",
                                 "wrong-name"]))
    name = "image_bytes" if image_sig else "image"
    rows = value if isinstance(value, list) else [value]
    doc = {"instances": {"instances": value}, "inputs": {"inputs": value},
           "named-inputs": {"inputs": {name: value}}, "named-instances": {"instances": [{name: v} for v in rows]},
           "both": {"inputs": value, "instances": value}, "neither": {"values": value},
           "wrong-name": {"inputs": {draw(st.text(max_size=8)): value}}}[form]
    if signature is not None:
        doc["signature_name"] = signature
    if draw(st.booleans()):
        doc[draw(st.text(max_size=6))] = draw(json_values)  # an unknown extra key
    return json.dumps(doc).encode()


def nested(depth: int, open_: str, close: str) -> bytes:
    return (f'{{"inputs": {open_ * depth}1{close * depth}}}').encode()


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200_000).map(lambda d: nested(d, "[", "]")),  # past Python's recursion limit and below
    st.integers(1, 60).map(lambda d: nested(d, "[", "]")),  # deeper than numpy's 32 dimensions
    st.integers(1, 5_000).map(lambda d: nested(d, '{"a": ', "}")),
    st.sampled_from([b'{"inputs": NaN}', b'{"inputs": [Infinity]}', b'{"inputs": 1e999}', b'{"inputs": -0}',
                     b'{"inputs": "\\ud800"}', b'\xff\xfe{\x00}\x00', b'{"inputs": [1], "inputs": {"b64": "x"}}']),
)


@st.composite
def truncated(draw) -> bytes:
    body = draw(predict_bodies())
    return body[:draw(st.integers(0, max(0, len(body) - 1)))]


paths = st.one_of(
    st.just(f"{TINY_VARIANT}:predict"),
    st.sampled_from([f"{TINY_VARIANT}/versions/1:predict", f"{TINY_VARIANT}/labels/stable:predict",
                     f"{TINY_VARIANT}/versions/99999999999999999999:predict", f"{TINY_VARIANT}/versions/-1:predict",
                     f"{TINY_VARIANT}/labels/%00:predict", f"{TINY_VARIANT}:classify", f"{TINY_VARIANT}:explain",
                     f"{TINY_VARIANT}/metadata", "nope:predict", ":predict", f"{TINY_VARIANT}/versions/1/metadata"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.:/%", max_size=30),
)


# -- gRPC ---------------------------------------------------------------------------------------

DIMS = st.integers(-3, 40) | st.sampled_from([SIZE, 3, 2**31, 2**40, 2**62, -(2**40)])


@st.composite
def tensor_protos(draw):
    from tensorflow.core.framework import tensor_pb2, types_pb2
    t = tensor_pb2.TensorProto()
    t.dtype = draw(st.sampled_from([types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_DOUBLE, types_pb2.DT_INT32,
                                    types_pb2.DT_HALF, types_pb2.DT_BOOL, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT])
                   | st.integers(0, 200))
    if draw(st.booleans()):
        dims = [draw(st.integers(0, 3)), SIZE, SIZE, 3]
    else:
        dims = draw(st.lists(DIMS, max_size=6))
    for d in dims:
        t.tensor_shape.dim.add(size=d)
    t.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    kind = draw(st.sampled_from(["content-exact", "content", "float_val", "int_val", "string_val", "none", "half_val"]))
    n = math.prod(max(d, 0) for d in dims)  # Python ints: np.prod wraps past 2**63 into a negative count
    if kind == "content-exact" and n * 4 <= 200_000:
        rng = np.random.default_rng(draw(st.integers(0, 255)))
        values = rng.uniform(0, 255, n).astype(np.float32)
        if draw(st.booleans()):
            values[::97] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        t.tensor_content = values.tobytes()
    elif kind == "content":
        t.tensor_content = draw(st.binary(max_size=2000))
    elif kind == "float_val":
        t.float_val.extend(draw(st.lists(st.floats(width=32), max_size=20)))
    elif kind == "int_val":
        t.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=20)))
    elif kind == "half_val":
        t.half_val.extend(draw(st.lists(st.integers(0, 2**16 - 1), max_size=20)))
    elif kind == "string_val":
        t.string_val.extend(draw(st.lists(st.binary(max_size=30) | st.just(PNG) | st.just(PNG[:40]), max_size=8)))
    return t


MUTATIONS = ("none", "dtype", "dims", "nan", "name", "extra-input", "output-filter", "version", "signature",
             "content-short", "content-long")


@st.composite
def near_valid_requests(draw):
    """A valid request for 1-3 images with one thing changed (or none): the neighbourhood of what
    the server must accept, where a missed check would reach the model."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2
    req = predict_pb2.PredictRequest()
    req.model_spec.name = TINY_VARIANT
    n = draw(st.integers(1, 3))
    values = np.random.default_rng(draw(st.integers(0, 255))).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)
    t = req.inputs["image"]
    t.dtype = types_pb2.DT_FLOAT
    dims = [n, SIZE, SIZE, 3]
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "dtype":
        t.dtype = draw(st.sampled_from([types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_INT32, types_pb2.DT_UINT8,
                                        types_pb2.DT_STRING, types_pb2.DT_BFLOAT16]))
    elif mutation == "dims":
        dims[draw(st.integers(0, 3))] = draw(DIMS)
    elif mutation == "nan":
        values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif mutation == "output-filter":
        req.output_filter.extend(draw(st.lists(st.sampled_from(["logits", "probabilities", "nope", ""]), max_size=3)))
    elif mutation == "version":
        req.model_spec.version.value = draw(st.integers(-(2**63), 2**63 - 1))
    elif mutation == "signature":
        req.model_spec.signature_name = draw(st.sampled_from(["predict_image_bytes", "nope", "serving_default "]))
    for d in dims:
        t.tensor_shape.dim.add(size=d)
    content = values.tobytes()
    if mutation == "content-short":
        content = content[:draw(st.integers(0, len(content) - 1))]
    elif mutation == "content-long":
        content += draw(st.binary(min_size=1, max_size=16))
    t.tensor_content = content
    if mutation == "name":
        req.inputs[draw(st.text(min_size=1, max_size=8).filter(lambda x: x != "image"))].CopyFrom(t)
        del req.inputs["image"]
    elif mutation == "extra-input":
        req.inputs[draw(st.sampled_from(["image_bytes", "extra"]))].CopyFrom(t)
    return req


@st.composite
def predict_requests(draw):
    from tensorflow_serving.apis import predict_pb2
    if draw(st.booleans()):
        return draw(near_valid_requests())
    req = predict_pb2.PredictRequest()
    req.model_spec.name = draw(st.just(TINY_VARIANT) | st.text(max_size=8))
    which = draw(st.sampled_from(["latest", "version", "label"]))
    if which == "version":
        req.model_spec.version.value = draw(st.integers(-(2**63), 2**63 - 1) | st.just(1))
    elif which == "label":
        req.model_spec.version_label = draw(st.just("stable") | st.text(max_size=8))
    req.model_spec.signature_name = draw(st.sampled_from(["", "serving_default", "predict_image_bytes"])
                                         | st.text(max_size=8))
    for name in draw(st.lists(st.sampled_from(["image", "image_bytes"]) | st.text(max_size=6), max_size=3,
                              unique=True)):
        req.inputs[name].CopyFrom(draw(tensor_protos()))
    req.output_filter.extend(draw(st.lists(st.sampled_from(["logits", "probabilities"]) | st.text(max_size=5),
                                           max_size=3)))
    return req
