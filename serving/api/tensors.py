"""Request and response tensors for TF Serving's APIs: JSON (row and columnar forms, `{"b64"}`
strings) and TensorProto, checked against a signature before anything runs.

Follows tensorflow_serving/util/json_tensor.cc: `instances` is a list with one entry per row
(a value when the signature has one input, else an object keyed by input name); `inputs` is
the whole batch (a value, or an object of named values). Row answers are `predictions` (a
list of objects when the signature has several outputs), columnar answers are `outputs`.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from serving.api.status import ServingStatus
from serving.backends.servables import Signature, TensorInfo, check_image_blobs

ROW, COLUMNAR = "row", "columnar"


def _json_text(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_json_body(body: bytes) -> dict:
    """The request object, or INVALID_ARGUMENT with TF Serving's parse-error wording."""
    if not body.strip():
        raise ServingStatus.invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as e:
        raise ServingStatus.invalid(f"JSON Parse error: Invalid encoding in string. at offset: {e.start}") from None
    except json.JSONDecodeError as e:
        raise ServingStatus.invalid(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    except RecursionError:
        raise ServingStatus.invalid("JSON Parse error: the document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ServingStatus.invalid(f"JSON Value: {_json_text(doc)} Is not object")
    return doc


def signature_name_of(doc: dict) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise ServingStatus.invalid(f"JSON Value: {_json_text(doc)} not formatted correctly. "
                                    "'signature_name' key must be a string value.")
    return name or "serving_default"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _strings(value: Any, name: str) -> np.ndarray:
    """Nested lists of {"b64": ...} / plain strings -> object array of bytes."""
    def walk(v):
        if isinstance(v, list):
            return [walk(x) for x in v]
        if _is_b64(v):
            try:
                return base64.b64decode(v["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise ServingStatus.invalid(f"input '{name}': Unable to base64 decode") from None
        if isinstance(v, str):
            return v.encode("utf-8")
        raise ServingStatus.invalid(f"JSON Value: {_json_text(v)} Type: {_json_type(v)} "
                                    f"is not of expected type: string (input '{name}')")
    items = walk(value)
    return np.asarray(items, dtype=object) if items != [] else np.empty((0,), dtype=object)


def _json_type(v: Any) -> str:
    return {dict: "Object", list: "Array", str: "String", bool: "True" if v else "False",
            type(None): "Null"}.get(type(v), "Number")


def _numbers(value: Any, info: TensorInfo) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ServingStatus.invalid(
            f"input '{info.name}': lists of unequal length (not a dense tensor of shape {info.shape_text()})") from None
    if arr.dtype.kind not in "iuf":
        bad = _first_non_number(value)
        if bad is _NUMBER:
            raise ServingStatus.invalid(f"input '{info.name}': a number is out of range for {info.tf_dtype_name}")
        raise ServingStatus.invalid(f"JSON Value: {_json_text(bad)} Type: {_json_type(bad)} "
                                    f"is not of expected type: {info.tf_dtype_name[3:].lower()} (input '{info.name}')")
    with np.errstate(over="ignore"):
        return arr.astype(info.dtype)


def _first_non_number(value: Any) -> Any:
    if isinstance(value, list):
        for v in value:
            bad = _first_non_number(v)
            if bad is not _NUMBER:
                return bad
        return _NUMBER
    return _NUMBER if isinstance(value, (int, float)) and not isinstance(value, bool) else value


_NUMBER = object()


#: NumPy's (and TensorFlow's) most dimensions of a tensor.
MAX_DIMS = 32


def _nesting(value: Any) -> int:
    """How deep the first elements of `value` nest (iterative: any depth, no recursion)."""
    depth = 0
    while isinstance(value, list) and value:
        depth += 1
        value = value[0]
    return depth + isinstance(value, list)


def json_to_array(value: Any, info: TensorInfo) -> np.ndarray:
    """The array for one input from its JSON value; INVALID_ARGUMENT for what is no dense tensor of
    the input's type (deeply nested lists included: numpy takes at most 32 dimensions)."""
    depth = _nesting(value)
    if depth > MAX_DIMS:
        raise ServingStatus.invalid(f"input '{info.name}' is nested {depth} lists deep; a tensor has at most "
                                    f"{MAX_DIMS} dimensions and this one expects shape {info.shape_text()}")
    try:
        if info.dtype == np.dtype(object):
            return _strings(value, info.name)
        return _numbers(value, info)
    except (RecursionError, ValueError):  # ragged or too deep below the first elements
        raise ServingStatus.invalid(f"input '{info.name}': not a dense tensor of shape {info.shape_text()} "
                                    "(lists of unequal length or nested too deeply)") from None


def json_to_inputs(doc: dict, signature: Signature) -> tuple[dict[str, np.ndarray], str]:
    """The named input arrays of a predict request and its form (ROW or COLUMNAR)."""
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows and has_cols:
        raise ServingStatus.invalid("JSON Value: {...} Not formatted correctly expecting only one of "
                                    "'inputs' or 'instances' keys to exist ")
    names = sorted(signature.inputs)
    if has_rows:
        rows = doc["instances"]
        if not isinstance(rows, list):
            raise ServingStatus.invalid("JSON Value: {...} Excepting 'instances' to be an list/array")
        if not rows:
            raise ServingStatus.invalid("JSON Value: {...} No values in 'instances' array")
        named = isinstance(rows[0], dict) and not _is_b64(rows[0])
        if not named and len(names) > 1:
            raise ServingStatus.invalid("instances is a plain list, but expecting list of objects as multiple "
                                        "input tensors required as per tensorinfo_map")
        if named:
            for i, row in enumerate(rows):
                if not isinstance(row, dict) or _is_b64(row):
                    raise ServingStatus.invalid(f"Expecting object but got list at item {i} of input list")
                if sorted(row) != names:
                    raise ServingStatus.invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                                                f"{_json_text(row)} keys must be equal to: {','.join(names)}")
            values = {n: [row[n] for row in rows] for n in names}
        else:
            for i, row in enumerate(rows):
                if isinstance(row, dict) and not _is_b64(row):
                    raise ServingStatus.invalid(f"Expecting value/list but got object at item {i} of input list")
            values = {names[0]: rows}
        form = ROW
    elif has_cols:
        cols = doc["inputs"]
        if isinstance(cols, dict) and not _is_b64(cols):
            missing = [n for n in names if n not in cols]
            if missing:
                raise ServingStatus.invalid(f"Missing named input: {missing[0]} in 'inputs' object.")
            values = {n: cols[n] for n in names}
        else:
            if len(names) > 1:
                raise ServingStatus.invalid("inputs is a plain value/list, but expecting an object as multiple "
                                            "input tensors required as per tensorinfo_map")
            values = {names[0]: cols}
        form = COLUMNAR
    else:
        raise ServingStatus.invalid("Missing 'inputs' or 'instances' key")
    return {n: json_to_array(v, signature.inputs[n]) for n, v in values.items()}, form


def check_inputs(signature: Signature, inputs: dict[str, np.ndarray]) -> None:
    """Names, dtypes, shapes, finite floats and decodable-looking images, before batching."""
    if set(inputs) != set(signature.inputs):
        raise ServingStatus.invalid(f"signature '{signature.name}' expects inputs {sorted(signature.inputs)}, "
                                    f"got {sorted(inputs)}")
    for name, info in signature.inputs.items():
        a = inputs[name]
        if a.dtype != info.dtype:
            got = "DT_STRING" if a.dtype == np.dtype(object) else TensorInfo(name, a.dtype, ()).tf_dtype_name
            raise ServingStatus.invalid(f"input '{name}' expects dtype {info.tf_dtype_name}, got {got}")
        if a.ndim != len(info.shape) or any(w is not None and w != g for w, g in zip(info.shape, a.shape, strict=False)):
            got = "[" + ",".join(str(d) for d in a.shape) + "]"
            raise ServingStatus.invalid(f"input '{name}' expects shape {info.shape_text()}, got {got}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ServingStatus.invalid(f"input '{name}' has NaN or Inf values; pixels must be finite numbers in [0, 255]")
        if a.dtype == np.dtype(object):
            check_image_blobs(a)


def _jsonable(a: np.ndarray, name: str) -> Any:
    if a.dtype == np.dtype(object):
        if name.endswith("_bytes"):
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])(a).tolist()
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(a).tolist()
    return a.tolist()


def outputs_to_json(outputs: dict[str, np.ndarray], form: str) -> dict:
    """The response body: `predictions` (row form) or `outputs` (columnar form)."""
    names = sorted(outputs)
    if form == COLUMNAR:
        if len(names) == 1:
            return {"outputs": _jsonable(outputs[names[0]], names[0])}
        return {"outputs": {n: _jsonable(outputs[n], n) for n in names}}
    cols = {n: _jsonable(outputs[n], n) for n in names}
    if len(names) == 1:
        return {"predictions": cols[names[0]]}
    rows = len(cols[names[0]])
    return {"predictions": [{n: cols[n][i] for n in names} for i in range(rows)]}


# -- gRPC TensorProto -------------------------------------------------------------------------

def proto_to_array(name: str, proto, max_bytes: int | None = None) -> np.ndarray:
    """The array of a TensorProto; INVALID_ARGUMENT for a malformed one, and, before anything is
    allocated, for negative dimensions or a shape over `max_bytes` once decoded (TensorFlow fills
    a short value list by repeating its last value, so one float could ask for terabytes)."""
    import math

    from serving.api import tf_protos
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise ServingStatus.invalid(f"input '{name}': tensor_shape has unknown_rank; give its dimensions")
    dims = [d.size for d in shape.dim]
    negative = [d for d in dims if d < 0]
    if negative:
        raise ServingStatus.invalid(f"input '{name}': negative dimension {negative[0]} in tensor_shape")
    if max_bytes is not None:
        try:
            itemsize = max(tf_protos.itemsize(proto.dtype), 1)
        except TypeError:
            itemsize = 1  # an unknown dtype: make_ndarray says so below
        count = math.prod(dims)
        if count * itemsize > max_bytes:
            raise ServingStatus.invalid(
                f"input '{name}': a tensor of shape [{','.join(map(str, dims))}] holds {count} values "
                f"({count * itemsize} bytes), more than the request limit of {max_bytes} bytes")
    try:
        return tf_protos.to_ndarray(proto)
    except Exception as e:  # noqa: BLE001 - malformed TensorProto: wrong content size, unknown dtype ...
        raise ServingStatus.invalid(f"input '{name}': cannot read the TensorProto ({e})") from None


def array_to_proto(a: np.ndarray):
    from serving.api import tf_protos
    return tf_protos.from_ndarray(a)
