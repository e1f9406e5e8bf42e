"""TF Serving's JSON forms to and from arrays, and the checks run before a request is batched."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from serving.api import tensors
from serving.api.status import ServingStatus
from serving.backends.servables import Signature, TensorInfo
from serving.client.clients import make_ndarray, make_tensor_proto

pytestmark = pytest.mark.integration

IMAGE = Signature("serving_default", {"image": TensorInfo("image", np.dtype(np.float32), (None, 2, 2, 3))},
                  {"logits": TensorInfo("logits", np.dtype(np.float32), (None, 3)),
                   "probabilities": TensorInfo("probabilities", np.dtype(np.float32), (None, 3))})
BYTES = Signature("predict_image_bytes", {"image_bytes": TensorInfo("image_bytes", np.dtype(object), (None,))},
                  IMAGE.outputs)
PNG = b"\x89PNG\r\n\x1a\n" + b"rest"


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def test_row_and_columnar_forms_give_the_same_arrays():
    pixels = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    rows, form_r = tensors.json_to_inputs({"instances": pixels.tolist()}, IMAGE)
    named, _ = tensors.json_to_inputs({"instances": [{"image": p.tolist()} for p in pixels]}, IMAGE)
    cols, form_c = tensors.json_to_inputs({"inputs": pixels.tolist()}, IMAGE)
    cols_named, _ = tensors.json_to_inputs({"inputs": {"image": pixels.tolist()}}, IMAGE)
    assert (form_r, form_c) == (tensors.ROW, tensors.COLUMNAR)
    for got in (rows, named, cols, cols_named):
        assert got["image"].dtype == np.float32
        np.testing.assert_array_equal(got["image"], pixels)


def test_b64_strings_decode_to_bytes():
    got, _ = tensors.json_to_inputs({"instances": [b64(PNG), b64(PNG + b"x")]}, BYTES)
    assert got["image_bytes"].dtype == object and got["image_bytes"].tolist() == [PNG, PNG + b"x"]
    tensors.check_inputs(BYTES, got)


def test_responses_in_tf_serving_shapes():
    out = {"logits": np.array([[1.0, 2.0, 3.0]], np.float32), "probabilities": np.array([[0.5, 0.25, 0.25]], np.float32)}
    assert tensors.outputs_to_json(out, tensors.ROW) == {
        "predictions": [{"logits": [1.0, 2.0, 3.0], "probabilities": [0.5, 0.25, 0.25]}]}
    assert tensors.outputs_to_json(out, tensors.COLUMNAR) == {
        "outputs": {"logits": [[1.0, 2.0, 3.0]], "probabilities": [[0.5, 0.25, 0.25]]}}
    assert tensors.outputs_to_json({"y": out["logits"]}, tensors.ROW) == {"predictions": [[1.0, 2.0, 3.0]]}
    assert tensors.outputs_to_json({"y": out["logits"]}, tensors.COLUMNAR) == {"outputs": [[1.0, 2.0, 3.0]]}


@pytest.mark.parametrize("doc, sig, message", [
    ({"instances": [[1, 2]], "inputs": []}, IMAGE, "expecting only one of 'inputs' or 'instances'"),
    ({"instances": {"image": 1}}, IMAGE, "Excepting 'instances' to be an list/array"),
    ({"instances": [{"image": [1]}, [1]]}, IMAGE, "Expecting object but got list at item 1"),
    ({"instances": [[1], {"image": [1]}]}, IMAGE, "Expecting value/list but got object at item 1"),
    ({"instances": [{"pixels": [1]}]}, IMAGE, "keys must be equal to: image"),
    ({"inputs": {"pixels": [1]}}, IMAGE, "Missing named input: image in 'inputs' object."),
    ({"inputs": [[True]]}, IMAGE, "JSON Value: true Type: True is not of expected type: float"),
    ({"inputs": [None]}, IMAGE, "JSON Value: null Type: Null is not of expected type: float"),
    ({"inputs": [10 ** 400]}, IMAGE, "a number is out of range for DT_FLOAT"),
    ({"instances": [{"b64": "not base64!"}]}, BYTES, "Unable to base64 decode"),
])
def test_malformed_requests(doc, sig, message):
    with pytest.raises(ServingStatus) as info:
        tensors.json_to_inputs(doc, sig)
    assert info.value.code == "INVALID_ARGUMENT" and message in info.value.message


@pytest.mark.parametrize("inputs, message", [
    ({"image": np.zeros((1, 2, 2, 3), np.float64)}, "input 'image' expects dtype DT_FLOAT, got DT_DOUBLE"),
    ({"image": np.zeros((1, 2, 2), np.float32)}, "input 'image' expects shape [-1,2,2,3], got [1,2,2]"),
    ({"image": np.full((1, 2, 2, 3), -np.inf, np.float32)}, "input 'image' has NaN or Inf values"),
    ({"x": np.zeros((1, 2, 2, 3), np.float32)}, "expects inputs ['image'], got ['x']"),
])
def test_checks_before_batching(inputs, message):
    with pytest.raises(ServingStatus, match=None) as info:
        tensors.check_inputs(IMAGE, inputs)
    assert message in info.value.message


def test_image_bytes_must_look_like_an_image():
    with pytest.raises(ServingStatus) as info:
        tensors.check_inputs(BYTES, {"image_bytes": np.array([PNG, b"RIFF....WEBX"], dtype=object)})
    assert info.value.message == "image 1: not a JPEG, PNG, GIF, BMP or WebP file"


def test_parse_errors_name_the_offset():
    with pytest.raises(ServingStatus) as info:
        tensors.parse_json_body(b'{"a": }')
    assert info.value.message == "JSON Parse error: Expecting value at offset: 6"


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.array([[1, 2]], dtype=np.int64),
    np.array([b"\x00abc", b""], dtype=object),
])
def test_tensor_proto_round_trip_through_the_server_codec(array):
    """The client and the server use TensorFlow's one codec: what one encodes the other decodes."""
    from serving.api.tensors import array_to_proto, proto_to_array
    proto = make_tensor_proto(array)
    decoded = proto_to_array("image", proto, max_bytes=1 << 20)
    assert decoded.shape == array.shape and decoded.tolist() == array.tolist()
    back = make_ndarray(array_to_proto(array))
    assert back.shape == array.shape and back.tolist() == array.tolist()


def test_a_tensor_tensorflow_cannot_encode_is_one_serving_error():
    from export.core.errors import ServingError
    with pytest.raises(ServingError, match=r"^cannot send a object tensor: Expected binary or unicode string"):
        make_tensor_proto(np.array([{"not": "bytes"}], dtype=object))
