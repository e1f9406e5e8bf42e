"""ONNX via tf2onnx, from the same graph as the SavedModel's `serving_default`.

- `fp32`: opset 17 by default, dynamic batch (`N`), input `image`, outputs `logits` and
  `probabilities`, checked with onnx.checker (full check, with shape inference).
- `int8`: ONNX Runtime static quantization of the fp32 model: QDQ format, per-channel int8
  weights, int8 activations calibrated (MinMax) on the sample photos. I/O stays float32.
"""
from __future__ import annotations

import contextlib
import re
import tempfile
import time
from pathlib import Path

from export.atomic import replacing
from export.errors import ExportError, UsageError, first_line
from export.formats import Artifact, sha256_path, tool_versions
from export.registry import FORMATS

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


def convert_fp32(built, path: Path, opset: int, saved_model_dir=None) -> None:
    import onnx
    import tf2onnx
    fn, spec = _serving_function(built, saved_model_dir)
    try:
        model, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset)
    except Exception as e:  # noqa: BLE001 -- the converter/runtime raises many types; each becomes one user-facing line
        raise ExportError(f"tf2onnx conversion failed (opset {opset}): {first_line(e)}") from None
    _name_batch_dim(model)
    _canonical_const_names(model)
    onnx.save(model, str(path))


class _PhotoReader:
    """onnxruntime.quantization CalibrationDataReader over the sample photos, one at a time.

    Supports ORT's strided calibration (`__len__`, `set_range`), so MinMax statistics are
    reduced one photo at a time instead of keeping every intermediate tensor of every photo.
    """

    def __init__(self, images):
        self._feeds = [{"image": images[i:i + 1]} for i in range(len(images))]
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._feeds[start_index:end_index])

    def get_next(self):
        return next(self._it, None)


def quantize_int8(fp32_path: Path, path: Path, images) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with tempfile.TemporaryDirectory(prefix=".onnx-int8.", suffix=".partial", dir=path.parent) as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(path), _PhotoReader(images), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, extra_options={"CalibStridedMinMax": 1})


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
           calibration=None) -> Artifact:
    """Write `<out_dir>/onnx/<variant>/model.onnx` (fp32) or `model_int8.onnx` (int8).

    int8 quantizes `fp32_path` when given (the fp32 artifact), else converts a fresh fp32 first.
    """
    from export import samples
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
            images = calibration if calibration is not None else samples.photos(built.input_size)
            with contextlib.ExitStack() as stack:
                source = Path(fp32_path) if fp32_path else None
                if source is None:
                    scratch = tempfile.TemporaryDirectory(prefix=".onnx-fp32.", suffix=".partial", dir=folder)
                    source = Path(stack.enter_context(scratch)) / "fp32.onnx"
                    convert_fp32(built, source, opset, saved_model_dir)
                quantize_int8(source, tmp, images)
        check(tmp)
    inputs, outputs = io_details(path)
    digest, size = sha256_path(path)
    details = {"opset": opset, "checker": "full_check passed",
               "source": "savedmodel:serving_default" if saved_model_dir else "keras"}
    if precision == "int8":
        details["quantization"] = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                                   "per_channel": True, "weights": "int8", "activations": "int8",
                                   "calibration": "MinMax on the scikit-image sample photos"}
    return Artifact(path=str(path), format="onnx", precision=precision, variant=built.spec.name,
                    sha256=digest, bytes=size, inputs=inputs, outputs=outputs,
                    tool_versions=tool_versions(), seconds=round(time.perf_counter() - start, 3),
                    details=details)
