"""TF Serving's gRPC messages and TensorProto <-> NumPy, without importing TensorFlow.

tensorflow-serving-api's modules (`tensorflow_serving.apis.predict_pb2` and the rest) import the
TensorFlow protos they are built on (`tensorflow.core.framework.tensor_pb2`, ...), and importing any
module under `tensorflow` runs `tensorflow/__init__.py`: all of TensorFlow, ~5 s and ~650 MB on a
2-core machine, in every gRPC client command and in every local server, though only the SavedModel
backend runs TensorFlow. `load()` imports those protos from the installed tensorflow package without
its `__init__` (the .proto modules need only protobuf), so that the server's ONNX, TFLite and OpenVINO
backends and the gRPC client start without TensorFlow. A later `import tensorflow` in the same process
is the usual one and reuses the same proto modules (TensorFlow itself hides `tensorflow.core` from its
namespace, so nothing reads it as an attribute).

`to_ndarray` and `from_ndarray` are tf.make_ndarray and tf.make_tensor_proto for the NumPy arrays a
client sends and a server answers (tensorflow/python/framework/tensor_util.py, TF 2.21, rule for rule:
tensor_content, or the typed value lists padded with their last value; tensor_content for more than
one numeric element, the typed lists otherwise). tests/serving/test_tf_protos.py holds them to
TensorFlow's own on every dtype both know.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

import numpy as np

#: The modules of tensorflow-serving-api that the server and the client use.
SERVING_MODULES = ("predict_pb2", "prediction_service_pb2_grpc", "model_service_pb2_grpc",
                   "get_model_metadata_pb2", "get_model_status_pb2")
_LOCK = threading.Lock()
_LOADED = False


def load() -> None:
    """Import SERVING_MODULES (and so the TensorFlow protos they use) without running TensorFlow's
    `__init__` when TensorFlow is not imported yet; the usual import when it is. Idempotent.

    While the protos load, `tensorflow` in sys.modules is a bare package module pointing at the installed
    package's directory; it is removed before this returns (the proto modules stay). Call it before any
    thread of the process may import TensorFlow (the server and the clients do, at their start)."""
    global _LOADED
    if _LOADED:
        return
    with _LOCK:
        if _LOADED:
            return
        bare = None
        if "tensorflow" not in sys.modules:
            spec = importlib.util.find_spec("tensorflow")
            if spec is not None and spec.submodule_search_locations:
                bare = types.ModuleType("tensorflow", "TensorFlow's package directory, for its .proto modules only")
                bare.__path__ = list(spec.submodule_search_locations)
                bare.__package__ = "tensorflow"
                sys.modules["tensorflow"] = bare
        try:
            for name in SERVING_MODULES:
                importlib.import_module(f"tensorflow_serving.apis.{name}")
            importlib.import_module("tensorflow.core.framework.types_pb2")
        finally:
            if bare is not None and sys.modules.get("tensorflow") is bare:
                del sys.modules["tensorflow"]
        _LOADED = True


def _ml_dtype(name: str) -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:  # installed with TensorFlow; without it these dtypes are refused like unknown ones
        return None
    return np.dtype(getattr(ml_dtypes, name))


def _dtypes() -> dict[int, tuple[np.dtype | None, str, bool]]:
    """DataType enum -> (NumPy dtype, the TensorProto field its values are listed in, whether an array of
    more than one element goes in tensor_content), as TensorFlow's dtypes.as_dtype(...).as_numpy_dtype,
    MakeNdarray's branches and _TENSOR_CONTENT_TYPES have them."""
    load()
    from tensorflow.core.framework import types_pb2 as t
    f32, f64, i32, u8, i16, i8 = np.float32, np.float64, np.int32, np.uint8, np.int16, np.int8
    table: dict[int, tuple[Any, str, bool]] = {
        t.DT_FLOAT: (f32, "float_val", True), t.DT_DOUBLE: (f64, "double_val", True),
        t.DT_INT32: (i32, "int_val", True), t.DT_UINT8: (u8, "int_val", True), t.DT_INT16: (i16, "int_val", True),
        t.DT_INT8: (i8, "int_val", True), t.DT_UINT16: (np.uint16, "int_val", False),
        t.DT_STRING: (object, "string_val", False), t.DT_COMPLEX64: (np.complex64, "scomplex_val", False),
        t.DT_COMPLEX128: (np.complex128, "dcomplex_val", False), t.DT_INT64: (np.int64, "int64_val", True),
        t.DT_BOOL: (np.bool_, "bool_val", False), t.DT_UINT32: (np.uint32, "uint32_val", True),
        t.DT_UINT64: (np.uint64, "uint64_val", True), t.DT_HALF: (np.float16, "half_val", True),
        t.DT_QINT8: ([("qint8", i8)], "int_val", True), t.DT_QUINT8: ([("quint8", u8)], "int_val", True),
        t.DT_QINT16: ([("qint16", i16)], "int_val", True), t.DT_QUINT16: ([("quint16", np.uint16)], "int_val", True),
        t.DT_QINT32: ([("qint32", i32)], "int_val", True),
    }
    for name, field, content in (("bfloat16", "half_val", True), ("float8_e5m2", "float8_val", True),
                                 ("float8_e4m3fn", "float8_val", True), ("float4_e2m1fn", "float8_val", True),
                                 ("int4", "int_val", False), ("uint4", "int_val", False), ("int2", "int_val", False),
                                 ("uint2", "int_val", False), ("float8_e4m3fnuz", "", True),
                                 ("float8_e4m3b11fnuz", "", True), ("float8_e5m2fnuz", "", True)):
        table[getattr(t, f"DT_{name.upper()}")] = (_ml_dtype(name), field, content)
    out = {enum: (None if dtype is None else np.dtype(dtype), field, content)
           for enum, (dtype, field, content) in table.items()}
    # The reference types (DT_FLOAT_REF = DT_FLOAT + 100, ...): TensorFlow reads their tensor_content as
    # the base type and refuses their value lists.
    out.update({enum + 100: (dtype, "", content) for enum, (dtype, _, content) in out.items()})
    return out


_TABLE: dict[int, tuple[np.dtype | None, str, bool]] = {}


def _table() -> dict[int, tuple[np.dtype | None, str, bool]]:
    if not _TABLE:
        _TABLE.update(_dtypes())
    return _TABLE


def _entry(enum: int) -> tuple[np.dtype, str, bool]:
    dtype, field, content = _table().get(enum, (None, "", False))
    if dtype is None:
        raise TypeError(f"Cannot convert value {enum} to a TensorFlow DType.")
    return dtype, field, content


def itemsize(enum: int) -> int:
    """Bytes per element of a DataType (tf.as_dtype(enum).size; 0 for strings); TypeError if unknown."""
    dtype, _, _ = _entry(enum)
    return 0 if dtype == np.dtype(object) else dtype.itemsize


def to_ndarray(proto) -> np.ndarray:
    """tf.make_ndarray(proto): TypeError for a dtype it does not know, ValueError for content that does
    not fit the shape."""
    shape = [d.size for d in proto.tensor_shape.dim]
    count = int(np.prod(shape, dtype=np.int64))
    dtype, field, _ = _entry(proto.dtype)
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype).copy().reshape(shape)
    if not field:  # tensor_content only, as in TensorFlow
        raise TypeError(f"Unsupported tensor type: {proto.dtype}.")
    if field == "string_val":
        strings = list(proto.string_val)
        if count > len(strings):
            strings.extend([strings[-1] if strings else ""] * (count - len(strings)))
        return np.array(strings, dtype=dtype).reshape(shape)
    if field in ("half_val", "float8_val"):
        bits = np.fromiter(getattr(proto, field), dtype=np.uint16 if field == "half_val" else np.uint8)
        values = bits.view(dtype)  # the field holds the values' bit patterns
    elif field in ("scomplex_val", "dcomplex_val"):
        it = iter(getattr(proto, field))
        values = np.array([complex(a, b) for a, b in zip(it, it, strict=False)], dtype=dtype)  # (re, im) pairs
    else:
        values = np.fromiter(getattr(proto, field), dtype=dtype)
    if values.size == 0:
        return np.zeros(shape, dtype)
    if values.size != count:
        values = np.pad(values, (0, count - values.size), "edge")
    return values.reshape(shape)


def _enum_of(dtype: np.dtype) -> int:
    for enum, (known, _, _) in _table().items():  # the base types come before their reference types
        if known is not None and known == dtype:
            return enum
    raise TypeError(f"Unrecognized data type: {dtype}.")


def _as_bytes(x: Any) -> bytes:
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8")
    raise TypeError(f"Expected binary or unicode string, got {x!r}")


def from_ndarray(a: np.ndarray):
    """tf.make_tensor_proto(a) for a NumPy array (float64 stays float64, as TensorFlow keeps a given
    array's dtype); TypeError for an element it cannot encode, ValueError over 2 GB."""
    load()
    from tensorflow.core.framework import tensor_pb2
    a = np.asarray(a)
    if a.dtype.kind in "SU":  # TensorFlow's own conversion of a fixed-width bytes or str array: strings
        a = a.astype(object)
    proto = tensor_pb2.TensorProto(dtype=_enum_of(a.dtype))
    proto.tensor_shape.SetInParent()  # present even for a scalar, as TensorFlow writes it
    for d in a.shape:
        proto.tensor_shape.dim.add(size=d)
    _, field, content = _entry(proto.dtype)
    if content and a.size > 1:
        if a.size * a.itemsize >= 1 << 31:
            raise ValueError("Cannot create a tensor proto whose content is larger than 2GB.")
        proto.tensor_content = a.tobytes()
        return proto
    if not field:
        raise TypeError(f"Element type not supported in TensorProto: {a.dtype.name}.")
    flat = a.ravel()
    if a.dtype.names:  # a quantized dtype: its one field
        flat = flat[a.dtype.names[0]]
    if field == "string_val":
        proto.string_val.extend([_as_bytes(x) for x in flat])
    elif field == "half_val":
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif field == "float8_val":  # one bytes field, not a list
        proto.float8_val = flat.view(np.uint8).tobytes()
    elif field in ("scomplex_val", "dcomplex_val"):
        getattr(proto, field).extend([v for x in flat.tolist() for v in (x.real, x.imag)])
    else:
        getattr(proto, field).extend([x.item() for x in flat] if a.dtype.kind == "V" else flat.tolist())
    return proto
