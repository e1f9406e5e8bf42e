"""TFLite for devices, in four precisions, with TFLite builtin ops only.

- `fp32`: plain conversion;
- `fp16`: float16 weights (dequantized at load, or run natively by the GPU delegate);
- `dynamic`: dynamic-range quantization (int8 weights, float activations);
- `int8`: full-integer quantization calibrated on the sample photos, uint8 `image` input and
  uint8 outputs; the (scale, zero_point) of each is recorded in the Artifact, so
  real = scale * (q - zero_point). The input is raw pixels (scale 1, zero point 0), as a
  camera frame or MediaPipe's ImageClassifier gives them (see `raw_pixel_input`).
Converted from the SavedModel's `serving_default` when one is given (the same graph TF Serving
runs), else from the Keras model. Every file carries TFLite Model Metadata (export.deploy.
tflite_metadata: input normalization, labels, output meanings) so MediaPipe Tasks and the
LiteRT support libraries run it without code; the recorded sha256 is the final file's.
`labels.txt` is also written beside the models.
"""
from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

from export.core.atomic import write_bytes, write_text
from export.core.errors import ExportError, first_line
from export.core.registry import FORMATS
from export.formats import Artifact, sha256_path, tool_versions


def _converter(built, saved_model_dir: str | Path | None):
    import tensorflow as tf
    if saved_model_dir is not None:
        with _saved_model_loaded_once():
            return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=["serving_default"])
    return tf.lite.TFLiteConverter.from_keras_model(built.model)


#: SavedModels the TFLite converter loaded in this process, by (path, tags, saved_model.pb's size and
#: mtime): see _saved_model_loaded_once.
_LOADED: dict[tuple, object] = {}


@contextlib.contextmanager
def _saved_model_loaded_once():
    """While open, the TFLite converter's Python-side loads of a SavedModel (`from_saved_model` loads it
    for its signatures, and `convert()` loads it again only for the graph's debug info) reuse one load
    per SavedModel in this process. Each load is ~2.9 s for this project's SavedModel (56 functions), 8
    of them for the four precisions: ~20 of a variant's ~55 s of conversion. The conversion itself reads
    the SavedModel from disk (MLIR's importer), so the .tflite bytes are the same (checked in
    tests/export/test_tflite_metadata.py). The objects are only read, never changed (one signature key)."""
    from unittest import mock

    from tensorflow.lite.python import lite
    load = lite._load

    def loaded_once(path, tags=None, options=None):
        try:
            stat = (Path(path) / "saved_model.pb").stat()
        except OSError:
            stat = None
        if options is not None or stat is None:
            return load(path, tags, options)
        key = (str(Path(path).resolve()), frozenset(tags or ()), stat.st_size, stat.st_mtime_ns)
        if key not in _LOADED:
            _LOADED.clear()  # one SavedModel at a time: a task converts one variant
            _LOADED[key] = load(path, tags)
        return _LOADED[key]

    with mock.patch.object(lite, "_load", loaded_once):
        yield


def convert(built, precision: str, saved_model_dir: str | Path | None = None,
            calibration=None, keep_float: tuple[str, ...] = (), calibrated: bytes | None = None) -> bytes:
    """The .tflite flatbuffer of `built` at `precision` (builtin ops only); int8 is calibrated on
    `calibration` (images [N, H, W, 3]; default the sample photos). `keep_float`: int8 layers (tensor
    names, export.quality.repair_tflite) left in float, quantized from `calibrated` (else calibrated here)."""
    import tensorflow as tf
    FORMATS["tflite"].check_precision(precision)
    conv = _converter(built, saved_model_dir)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        images = _int8_setup(conv, built, calibration)
        if keep_float:
            try:
                return quantize_int8(calibrated or calibrate(conv, images), keep_float)
            except ExportError:
                raise
            except Exception as e:  # noqa: BLE001 -- as below
                raise ExportError(f"TFLite int8 with {len(keep_float)} layer(s) in float failed: {first_line(e)}") from None
    try:
        with _saved_model_loaded_once():
            model = conv.convert()
    except Exception as e:  # noqa: BLE001 -- the converter/runtime raises many types; each becomes one user-facing line
        raise ExportError(f"TFLite conversion ({precision}) failed: {first_line(e)}") from None
    return raw_pixel_input(model) if precision == "int8" else model


def _int8_setup(conv, built, calibration):
    """Set `conv` up for full-integer quantization with uint8 I/O; returns the calibration images."""
    import numpy as np
    import tensorflow as tf

    from export.model import samples
    images = samples.photos(built.input_size) if calibration is None else np.asarray(calibration, np.float32)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([images[i:i + 1]] for i in range(len(images)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    return images


def calibrated_int8(built, saved_model_dir: str | Path | None = None, calibration=None) -> bytes:
    """The float model with int8 calibration statistics (export.quality.repair_tflite measures per-layer
    errors on it and quantizes it with layers kept in float)."""
    conv = _converter(built, saved_model_dir)
    images = _int8_setup(conv, built, calibration)
    try:
        return calibrate(conv, images)
    except Exception as e:  # noqa: BLE001 -- as in convert
        raise ExportError(f"TFLite int8 calibration failed: {first_line(e)}") from None


def calibrate(converter, images) -> bytes:
    """The float model with calibration statistics recorded on `images` ([N, H, W, 3]), from a
    tf.lite.TFLiteConverter set up for full-integer quantization (once: export.quality.repair_tflite
    measures per-layer errors on it and quantizes it again with layers kept in float)."""
    import numpy as np
    images = np.asarray(images, np.float32)
    converter.representative_dataset = lambda: ([images[i:i + 1]] for i in range(len(images)))
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # the debugger's own way to calibrate once
    with _saved_model_loaded_once():
        return bytes(converter.convert())


def quantize_int8(calibrated: bytes, keep_float: tuple[str, ...] = ()) -> bytes:
    """The full-integer model (uint8 raw-pixel `image`, uint8 outputs) with the ops that produce
    `keep_float` (tensor names from `layer_errors`) left in float."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    model = convert.mlir_quantize(calibrated, input_data_type=tf.uint8, output_data_type=tf.uint8,
                                  denylisted_nodes=list(keep_float) or None)
    return raw_pixel_input(bytes(model))


def raw_pixel_input(model: bytes) -> bytes:
    """A full-integer model whose uint8 `image` takes raw pixels: input scale 1, zero point 0.

    The converter gives the uint8 input the quantization of the first int8 tensor; with
    preprocessing made of channel slices + concat, then minus the means (this project's until the
    1x1 conv of export.model.build, which comes out at (1, 0) already) that range is the union of the
    pixels and the mean-subtracted values: e.g. scale 1.485, zero point 83, so an app (or
    MediaPipe, which feeds raw pixels to a uint8 input) would have to quantize every pixel first.
    The input only feeds QUANTIZE ops, which requantize from any input scale, so relabelling it
    (1, 0) moves that step inside the model (or DEQUANTIZE ops, where a first layer is kept in float
    by export.quality.repair_tflite: with (1, 0) they give the pixels exactly); the outputs are bit-identical for integer pixels
    (checked on ResNet50 dense, and on the tiny model in tests/export/test_tflite_metadata.py).
    TFLite's own flatbuffer_utils reads and writes the model.
    """
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    sub = m.subgraphs[0]
    if len(sub.inputs) != 1:
        raise ExportError(f"int8 TFLite model has {len(sub.inputs)} inputs; expected one 'image'")
    tensor = sub.tensors[sub.inputs[0]]
    q = tensor.quantization
    if tensor.type != schema.TensorType.UINT8 or q is None or q.scale is None or len(q.scale) != 1:
        raise ExportError("int8 TFLite model's input is not a per-tensor quantized uint8 tensor")
    if float(q.scale[0]) == 1.0 and int(q.zeroPoint[0]) == 0:
        return model
    codes = [m.operatorCodes[op.opcodeIndex].builtinCode for op in sub.operators if sub.inputs[0] in op.inputs]
    if not codes or any(c not in (schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.DEQUANTIZE) for c in codes):
        raise ExportError(f"int8 TFLite model's input feeds ops {codes}, not only QUANTIZE: cannot make it take "
                          f"raw pixels (its quantization is scale {q.scale[0]}, zero point {q.zeroPoint[0]})")
    q.scale = np.array([1.0], np.float32)
    q.zeroPoint = np.array([0], np.int64)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def op_names(model: bytes) -> list[str]:
    """Every operator code the flatbuffer uses: builtin names, or `CUSTOM:<name>` (e.g. Flex ops)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.schema_util import get_builtin_code_from_operator_code
    names_by_code = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    m = schema.Model.GetRootAsModel(model, 0)
    names = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = get_builtin_code_from_operator_code(oc)
        if code == schema.BuiltinOperator.CUSTOM:
            names.append(f"CUSTOM:{oc.CustomCode().decode()}")
        else:
            names.append(names_by_code.get(code, str(code)))
    return sorted(set(names))


def assert_builtin_only(model: bytes) -> list[str]:
    """The op list; ExportError if any op is custom or a Select TF (Flex) op."""
    ops = op_names(model)
    bad = [op for op in ops if op.startswith("CUSTOM:") or "Flex" in op]
    if bad:
        raise ExportError(f"TFLite model needs non-builtin ops {bad}; only TFLite builtins are allowed")
    return ops


def gpu_delegate_verdict(model: bytes) -> dict[str, object]:
    """tf.lite.experimental.Analyzer's GPU-delegate compatibility check, summarised."""
    import tensorflow as tf
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        tf.lite.experimental.Analyzer.analyze(model_content=model, gpu_compatibility=True)
    text = buf.getvalue()
    incompatible = [line.strip() for line in text.splitlines() if "GPU COMPATIBILITY WARNING" in line
                    or "not supported by TFLite GPU Delegate" in line]
    compatible = "Your model looks compatible with GPU delegate" in text
    return {"compatible": compatible and not incompatible, "warnings": incompatible[:20]}


def io_details(model: bytes) -> tuple[list[dict], list[dict]]:
    """Signature inputs/outputs with dtype, shape signature and quantization (scale, zero_point)."""
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_content=model)
    sig = interp.get_signature_runner("serving_default")

    def describe(details: dict) -> list[dict]:
        out = []
        for name, d in sorted(details.items()):
            scale, zero = d["quantization"]
            rec = {"name": name, "dtype": d["dtype"].__name__,
                   "shape": [None if s < 0 else int(s) for s in d["shape_signature"]]}
            if scale:
                rec["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
            out.append(rec)
        return out

    return describe(sig.get_input_details()), describe(sig.get_output_details())


def _metadata_summary(md) -> dict[str, object]:
    """The artifact record's view of the metadata written into the file."""
    return {"name": md.name, "version": md.version, "author": md.author, "license": md.license,
            "min_parser_version": md.min_parser_version, "input": {"name": md.input_name, "color_space": md.color_space,
                                                                   "norm_mean": md.norm_mean, "norm_std": md.norm_std},
            "outputs": [{"name": o.name, "labels_file": o.labels_file, "labels": len(o.labels)} for o in md.outputs],
            "associated_files": md.associated_files}


def target_path(out_dir: str | Path, variant: str, precision: str, version: int = 1) -> Path:
    """Where `export` writes: `<out_dir>/tflite/<variant>/model_<precision>.tflite`."""
    return Path(out_dir) / "tflite" / variant / f"model_{precision}.tflite"


def export(built, out_dir: str | Path, precision: str = "fp32", *, saved_model_dir: str | Path | None = None,
           overwrite: bool = False, calibration=None, card: dict | None = None,
           calibration_record: dict | None = None, keep_float: tuple[str, ...] = (),
           calibrated: bytes | None = None) -> Artifact:
    """Write `<out_dir>/tflite/<variant>/model_<precision>.tflite` (with its metadata) and labels.txt
    beside it. `card`: name/version/author/license/description overrides for ModelCard.for_model;
    `keep_float`/`calibrated`: int8 layers left in float (see convert)."""
    from export.deploy.tflite_metadata import ModelCard, read_metadata, write_metadata
    start = time.perf_counter()
    path = target_path(out_dir, built.spec.name, precision)
    folder = path.parent
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; pass --overwrite to replace it")
    model = convert(built, precision, saved_model_dir, calibration, keep_float, calibrated)
    ops = assert_builtin_only(model)
    model_card = ModelCard.for_model(built, precision, **(card or {}))
    model = write_metadata(model, model_card, built.labels)
    inputs, outputs = io_details(model)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(path, model)
    write_text(folder / "labels.txt", "\n".join(built.labels) + "\n")
    digest, size = sha256_path(path)
    details = {"ops": ops, "builtin_only": True, "gpu_delegate": gpu_delegate_verdict(model),
               "source": "savedmodel:serving_default" if saved_model_dir else "keras",
               "metadata": _metadata_summary(read_metadata(model))}
    if precision == "int8":
        details["quantization"] = {t["name"]: t["quantization"] for t in inputs + outputs if "quantization" in t}
        details["quantization_note"] = "uint8 tensors: real = scale * (q - zero_point)"
        from export.training.labeled_sets import photos_record
        details["calibration_data"] = calibration_record or photos_record(built.input_size)
        if keep_float:
            details["keep_float"] = list(keep_float)
    return Artifact(path=str(path), format="tflite", precision=precision, variant=built.spec.name,
                    sha256=digest, bytes=size, inputs=inputs, outputs=outputs,
                    tool_versions=tool_versions(), seconds=round(time.perf_counter() - start, 3),
                    details=details)
