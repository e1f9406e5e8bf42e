"""ONNX via tf2onnx, from the same graph as the SavedModel's `serving_default`.

- `fp32`: opset 17 by default, dynamic batch (`N`), input `image`, outputs `logits` and
  `probabilities`, checked with onnx.checker (full check, with shape inference).
- `int8`: ONNX Runtime static quantization of the fp32 model, calibrated (MinMax) on the sample
  photos, in the scheme export.formats.quantize chooses for this CPU (U8S8 QDQ per-channel: uint8
  activations, int8 weights); the scheme and the CPU features are in the Artifact's details.
  I/O stays float32.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from export.core.atomic import replacing
from export.core.errors import ExportError, UsageError, first_line
from export.core.registry import FORMATS
from export.formats import Artifact, sha256_path, tool_versions
from export.formats.quantize import QuantScheme, cpu_record, quantize_int8
from export.training.labeled_sets import photos_record

DEFAULT_OPSET = 17
BATCH_DIM = "N"


def _serving_function(built, saved_model_dir: str | Path | None):
    """A tf.function for tf2onnx: the SavedModel's serving_default if given, else the model."""
    import tensorflow as tf
    size = built.input_size
    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="image")
    if saved_model_dir is not None:
        loaded = tf.saved_model.load(str(saved_model_dir))
        signature = loaded.signatures["serving_default"]

        @tf.function(input_signature=[spec])
        def from_signature(image):
            return signature(image=image)
        from_signature._loaded = loaded  # keep the variables alive while converting
        return from_signature, spec

    @tf.function(input_signature=[spec])
    def fn(image):
        return built.model(image, training=False)
    return fn, spec


def _name_batch_dim(model) -> None:
    """Give the dynamic batch dimension one readable name on the input and outputs."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM


_GENERATED_CONST = re.compile(r"^const_[A-Za-z0-9_]*__\d+$")


def _canonical_const_names(model) -> None:
    """Name tf2onnx's generated constants by their first use, and sort the initializers.

    tf2onnx merges duplicate constants and keeps one of their generated names (`const_starts__12`
    in one run, `const_ends__13` in the next): the same graph and weights then give different
    bytes. Renamed in node order (deterministic), two conversions write identical files.
    """
    graph = model.graph
    generated = {i.name for i in graph.initializer if _GENERATED_CONST.match(i.name)}
    if not generated:
        return
    order: list[str] = []
    for node in graph.node:
        order += [n for n in node.input if n in generated and n not in order]
    order += sorted(generated - set(order))
    taken = ({n.name for n in graph.node} | {o for n in graph.node for o in n.output}
             | {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
             | {i.name for i in graph.initializer}) - generated
    mapping = {}
    for k, old in enumerate(order):
        new = f"const__{k}"
        while new in taken:
            new += "_"
        mapping[old] = new
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
    for v in graph.value_info:
        v.name = mapping.get(v.name, v.name)
    inits = sorted(graph.initializer, key=lambda i: i.name)
    graph.ClearField("initializer")
    graph.initializer.extend(inits)


@contextlib.contextmanager
def _lean_tf2onnx():
    """tf2onnx 1.17 without its memory growth on large models (measured on ResNet50: 7.7 GB peak).

    - Its optimizer loop deep-copies the whole graph (every weight) before each of its ~12
      optimizers, to roll back one that fails; TF2ONNX_CATCH_ERRORS (any value: it reads the
      variable's presence) turns that off, and a failing optimizer then fails the conversion.
    - Each optimizer pass ends with Node.update_proto(), which copies every constant into the
      same NodeProto again; protobuf's upb arenas free nothing until the message dies, so each
      pass kept another copy of the weights. Giving the node a fresh NodeProto first lets the
      old one (and its copies) go. Same graph out; peak 2.9 GB (TensorFlow's grappler) instead.
    """
    import onnx
    from tf2onnx import graph as tf2onnx_graph
    original = tf2onnx_graph.Node.update_proto

    def update_proto(node, external_tensor_storage=None):
        old = node._op
        node._op = onnx.NodeProto(name=old.name, op_type=old.op_type, domain=old.domain,
                                  doc_string=old.doc_string)
        return original(node, external_tensor_storage)

    previous = os.environ.get("TF2ONNX_CATCH_ERRORS")
    os.environ["TF2ONNX_CATCH_ERRORS"] = "false"
    tf2onnx_graph.Node.update_proto = update_proto
    try:
        yield
    finally:
        tf2onnx_graph.Node.update_proto = original
        if previous is None:
            os.environ.pop("TF2ONNX_CATCH_ERRORS", None)
        else:
            os.environ["TF2ONNX_CATCH_ERRORS"] = previous


def convert_fp32(built, path: Path, opset: int, saved_model_dir=None) -> None:
    import onnx
    import tf2onnx
    fn, spec = _serving_function(built, saved_model_dir)
    try:
        with _lean_tf2onnx():
            model, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset)
    except Exception as e:  # noqa: BLE001 -- the converter/runtime raises many types; each becomes one user-facing line
        raise ExportError(f"tf2onnx conversion failed (opset {opset}): {first_line(e)}") from None
    del fn
    _name_batch_dim(model)
    _canonical_const_names(model)
    onnx.save(model, str(path))


def check(path: Path) -> None:
    """onnx.checker full check; ExportError with the checker's first line otherwise."""
    import onnx
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 -- the converter/runtime raises many types; each becomes one user-facing line
        raise ExportError(f"onnx.checker rejected {path.name}: {first_line(e)}") from None


def io_details(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx
    from onnx import helper
    m = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[dict]:
        return [{"name": v.name,
                 "dtype": helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                 "shape": [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]}
                for v in values]
    return describe(m.graph.input), describe(m.graph.output)


def target_path(out_dir: str | Path, variant: str, precision: str, version: int = 1) -> Path:
    """Where `export` writes: `<out_dir>/onnx/<variant>/model.onnx` (fp32) or `model_<precision>.onnx`."""
    return Path(out_dir) / "onnx" / variant / ("model.onnx" if precision == "fp32" else f"model_{precision}.onnx")


def export(built, out_dir: str | Path, precision: str = "fp32", *, saved_model_dir: str | Path | None = None,
           opset: int = DEFAULT_OPSET, overwrite: bool = False, fp32_path: str | Path | None = None,
           calibration=None, scheme: QuantScheme | None = None,
           calibration_record: dict | None = None) -> Artifact:
    """Write `<out_dir>/onnx/<variant>/model.onnx` (fp32) or `model_int8.onnx` (int8).

    int8 quantizes `fp32_path` when given (the fp32 artifact), else converts a fresh fp32 first,
    with `scheme` (default: export.formats.quantize.scheme_for this CPU), calibrated on `calibration`
    (images [N, H, W, 3]; default the sample photos) that `calibration_record` describes.
    """
    from export.model import samples
    FORMATS["onnx"].check_precision(precision)
    if not 13 <= opset <= 21:
        raise UsageError(f"opset {opset} is outside what tf2onnx 1.17 supports here (13..21)")
    start = time.perf_counter()
    path = target_path(out_dir, built.spec.name, precision)
    folder = path.parent
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; pass --overwrite to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(path, suffix=".onnx.tmp") as tmp:
        if precision == "fp32":
            convert_fp32(built, tmp, opset, saved_model_dir)
        else:
            images = (samples.photos(built.input_size) if calibration is None
                      else np.asarray(calibration, dtype=np.float32))
            with contextlib.ExitStack() as stack:
                source = Path(fp32_path) if fp32_path else None
                if source is None:
                    scratch = tempfile.TemporaryDirectory(prefix=".onnx-fp32.", suffix=".partial", dir=folder)
                    source = Path(stack.enter_context(scratch)) / "fp32.onnx"
                    convert_fp32(built, source, opset, saved_model_dir)
                scheme = quantize_int8(source, tmp, images, scheme)
        check(tmp)
    inputs, outputs = io_details(path)
    digest, size = sha256_path(path)
    details = {"opset": opset, "checker": "full_check passed",
               "source": "savedmodel:serving_default" if saved_model_dir else "keras"}
    if precision == "int8":
        assert scheme is not None
        details["quantization"] = {"tool": "onnxruntime.quantization.quantize_static", **scheme.to_dict(),
                                   "cpu": cpu_record()}
        details["calibration_data"] = calibration_record or photos_record(built.input_size)
    return Artifact(path=str(path), format="onnx", precision=precision, variant=built.spec.name,
                    sha256=digest, bytes=size, inputs=inputs, outputs=outputs,
                    tool_versions=tool_versions(), seconds=round(time.perf_counter() - start, 3),
                    details=details)
