"""What the local server serves: a bundle's models, one backend per model, resolved as TF Serving does.

A `Servable` is one model version behind one backend: the SavedModel itself (its signatures,
through `tf.saved_model.load`), or an ONNX / TFLite / OpenVINO artifact of the same variant
through the parity suite's runners (OpenVINO at the precision hint `openvino:f32|bf16`), with
the image-bytes signature decoded in Python by the same TF ops the SavedModel graph uses.
The model registry that holds them is serving.backends.registry.
"""
from __future__ import annotations

import abc
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.core.errors import BundleError
from export.core.registry import DEFAULT_SIGNATURE as DEFAULT_SIGNATURE
from export.core.registry import FORMATS
from export.core.registry import IMAGE_BYTES_SIGNATURE as IMAGE_BYTES_SIGNATURE
from serving.api.status import ServingStatus

BACKENDS = tuple(FORMATS)
PREDICT_METHOD = "tensorflow/serving/predict"


@dataclass(frozen=True)
class TensorInfo:
    """An input or output of a signature: NumPy dtype (object = DT_STRING) and shape (None = any)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def tf_dtype_name(self) -> str:
        return "DT_STRING" if self.dtype == np.dtype(object) else f"DT_{_TF_NAMES.get(self.dtype.name, self.dtype.name).upper()}"

    def shape_text(self) -> str:
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"


_TF_NAMES = {"float32": "float", "float64": "double"}


@dataclass(frozen=True)
class Signature:
    name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


def tf_error_message(e: Exception) -> str:
    """The first line of a TensorFlow error without its function-node and op decorations."""
    text = getattr(e, "message", None) or str(e)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text).strip()
    if text.startswith("Graph execution error"):  # then a traceback; the op's own words are the last unindented line
        said = [ln for ln in text.splitlines()[1:] if ln.strip() and not ln[0].isspace()
                and not ln.startswith(("Detected at node", "Graph execution error"))]
        text = said[-1] if said else text
    text = text.splitlines()[0] if text else type(e).__name__
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", text)


def decode_images(blobs: np.ndarray, size: int, aspect: str = "stretch") -> np.ndarray:
    """Encoded images -> float32 [N, size, size, 3], whole grey levels in [0, 255], by the image contract's
    NumPy twin (export.images.pil: the SavedModel graph's pixels, bit for bit on the test corpus), for
    backends without that graph."""
    from export.images import ImageContract, ImageError, pil
    contract = ImageContract(size, aspect)
    out = []
    for i, blob in enumerate(blobs.reshape(-1)):
        try:
            out.append(pil.decode(blob if isinstance(blob, bytes) else b"", contract))
        except ImageError as e:
            raise ServingStatus.invalid(f"image {i}: {e}") from None
    return np.stack(out).astype(np.float32)


def check_image_blobs(blobs: np.ndarray) -> None:
    """INVALID_ARGUMENT for a blob that is no image the contract decodes, or that declares more than
    export.images' MAX_IMAGE_PIXELS (checked before batching, from the header, before anything is decoded)."""
    from export.images import ImageError, header
    for i, blob in enumerate(blobs.reshape(-1)):
        try:
            header.check(blob if isinstance(blob, bytes) else b"")
        except ImageError as e:
            raise ServingStatus.invalid(f"image {i}: {e}") from None


class Servable(abc.ABC):
    """One model version behind one backend."""

    backend = "base"

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name, self.version, self.path = name, version, Path(path)
        self.signatures: dict[str, Signature] = {}

    def signature_def_map(self):
        """A tensorflow.serving SignatureDefMap for GetModelMetadata."""
        from serving.api import tf_protos
        tf_protos.load()
        from tensorflow_serving.apis import get_model_metadata_pb2
        out = get_model_metadata_pb2.SignatureDefMap()
        for sig in self.signatures.values():
            sd = out.signature_def[sig.name]
            sd.method_name = PREDICT_METHOD
            for group, infos in ((sd.inputs, sig.inputs), (sd.outputs, sig.outputs)):
                for info in infos.values():
                    ti = group[info.name]
                    ti.name = f"{info.name}:0"
                    ti.dtype = _tf_enum(info.tf_dtype_name)
                    for d in info.shape:
                        ti.tensor_shape.dim.add(size=-1 if d is None else d)
        return out

    @abc.abstractmethod
    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `signature` on validated inputs; every output by name."""

    def close(self) -> None:  # noqa: B027 -- optional hook: a servable may hold nothing to free
        pass


def _tf_enum(name: str) -> int:
    from serving.api import tf_protos
    tf_protos.load()
    from tensorflow.core.framework import types_pb2
    return types_pb2.DataType.Value(name)


class SavedModelServable(Servable):
    """The SavedModel's own signatures, run with tf.saved_model.load (TF Serving's graph)."""

    backend = "savedmodel"

    def __init__(self, name: str, version: int, path: Path) -> None:
        super().__init__(name, version, path)
        import tensorflow as tf
        from tensorflow.core.framework import types_pb2
        from tensorflow.core.protobuf import saved_model_pb2
        proto = saved_model_pb2.SavedModel()
        try:
            proto.ParseFromString((self.path / "saved_model.pb").read_bytes())
            self._loaded = tf.saved_model.load(str(self.path))
        except (OSError, tf.errors.OpError, ValueError) as e:
            raise BundleError(f"cannot load the SavedModel of {name} version {version} at {path}: "
                              f"{tf_error_message(e)}") from None
        self._defs = proto.meta_graphs[0].signature_def
        self._fns = {}
        for sig_name, sd in self._defs.items():
            if sd.method_name != PREDICT_METHOD or sig_name not in self._loaded.signatures:
                continue
            self._fns[sig_name] = self._loaded.signatures[sig_name]

            def infos(group):
                return {k: TensorInfo(k, np.dtype(object) if v.dtype == types_pb2.DT_STRING
                                      else np.dtype(tf.as_dtype(v.dtype).as_numpy_dtype),
                                      tuple(None if d.size < 0 else d.size for d in v.tensor_shape.dim))
                        for k, v in group.items()}
            self.signatures[sig_name] = Signature(sig_name, infos(sd.inputs), infos(sd.outputs))

    def signature_def_map(self):
        from tensorflow_serving.apis import get_model_metadata_pb2
        out = get_model_metadata_pb2.SignatureDefMap()
        for k, sd in self._defs.items():
            out.signature_def[k].CopyFrom(sd)
        return out

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf
        try:
            result = self._fns[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, ValueError, TypeError) as e:
            raise ServingStatus.invalid(tf_error_message(e)) from None
        return {k: v.numpy() for k, v in result.items()}


class RunnerServable(Servable):
    """An ONNX, TFLite or OpenVINO artifact through a parity-suite Runner, with TF Serving's two
    signatures. `precision_hint` is OpenVINO's (f32, bf16)."""

    def __init__(self, name: str, version: int, path: Path, backend: str,
                 precision_hint: str | None = None, aspect: str = "stretch") -> None:
        super().__init__(name, version, path)
        self.backend = backend
        self.aspect = aspect  # the variant's image contract aspect policy, for the bytes signature
        self._runner = make_runner(backend, path, precision_hint)
        self._lock = threading.Lock()  # LiteRT interpreters are not thread-safe; keep it uniform
        (image,) = self._runner.inputs.values()
        self._input_name, self._input_dtype = image.name, np.dtype(image.dtype)
        self.size = int(image.shape[1])
        shape = (None, self.size, self.size, 3)
        outs = {n: TensorInfo(n, np.dtype(np.float32), (None, None)) for n in self._runner.outputs}
        self.signatures = {
            DEFAULT_SIGNATURE: Signature(DEFAULT_SIGNATURE, {"image": TensorInfo("image", np.dtype(np.float32), shape)}, outs),
            IMAGE_BYTES_SIGNATURE: Signature(IMAGE_BYTES_SIGNATURE,
                                             {"image_bytes": TensorInfo("image_bytes", np.dtype(object), (None,))}, outs),
        }

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = decode_images(inputs["image_bytes"], self.size, self.aspect) \
            if signature == IMAGE_BYTES_SIGNATURE else inputs["image"]
        if self._input_dtype == np.uint8:  # full-integer TFLite takes uint8 pixels
            pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)  # a client's `image` may not be whole levels
        from export.core.errors import RunnerError
        try:
            with self._lock:
                out = self._runner.infer({self._input_name: pixels.astype(self._input_dtype, copy=False)})
        except RunnerError as e:
            raise ServingStatus.invalid(str(e)) from None
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}

    def close(self) -> None:
        self._runner.close()


def make_runner(backend: str, path: Path, precision_hint: str | None = None):
    """A loaded CPU Runner for `path` from export.runtimes (the parity suite's runners)."""
    from export.runtimes import runner_for
    name = f"{backend}:{Path(path).name}" + (f"@{precision_hint}" if precision_hint else "")
    return runner_for(path, device="CPU", name=name, precision_hint=precision_hint).load()

