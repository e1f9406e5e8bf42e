"""OpenVINO IR for Intel/AMD CPUs: `<out>/openvino/<variant>/<version>/model.xml` + `model.bin`
(fp16 weights) and `<out>/openvino/<variant>_int8/<version>/model.xml` + `model.bin` (int8).

The numbered version directory is what OpenVINO Model Server reads (`--model_path
<out>/openvino/<variant>`), as TF Serving reads `tfserving/<variant>/<version>/`. OVMS serves one
IR per version directory, so the int8 IR is its own model directory, `<variant>_int8`: OVMS
serves it as model `<variant>_int8` (`--model_path <out>/openvino/<variant>_int8`), beside the
fp16 one.

Converted with OpenVINO's own converter (`openvino.convert_model`) straight from the
SavedModel's `serving_default`, the graph TF Serving runs: one conversion, where going
through the ONNX file would chain two (tf2onnx, then OpenVINO's ONNX frontend). Both sources
convert cleanly here, to the same ops and the same speed, and both are exact (f32 logits
within 6e-5 of Keras, summation order only); the SavedModel is also always at hand in the
pipeline, while the ONNX file exists only when ONNX is exported too. Without a SavedModel
directory the Keras model is converted through a tf.function with the same signature.

- I/O: `image` float32 [N, H, W, 3] -> `logits`, `probabilities` (batch dimension dynamic).
- `fp16`: weights stored in float16 (OpenVINO's default compression); the CPU plugin
  decompresses them at compile time and computes in the runner's precision hint (f32 or bf16).
- `int8`: NNCF post-training quantization of the converted model (export.formats.nncf_int8),
  calibrated on the variant's calibration images (the sample photos without any); with a labeled
  validation set and the gate's int8 threshold, NNCF's accuracy control reverts the most sensitive
  layers to float until the drop is within it. The details record which layers compute in float.
  Float weights left in it are stored in float32 (what NNCF validated). I/O stays float32; the
  layers kept in float compute in the runner's precision hint.
The two files are written into a staged directory renamed into place when both are complete.
"""
from __future__ import annotations

import time
from pathlib import Path

from export.core.atomic import sha256_file, staged_dir
from export.core.errors import ExportError, UsageError, first_line
from export.core.registry import get_format
from export.formats import Artifact, sha256_path, tool_versions
from export.training.labeled_sets import photos_record

INPUT = "image"
OUTPUTS = ("logits", "probabilities")


def model_name(variant: str, precision: str = "fp16") -> str:
    """The OVMS model (directory) name of a variant's IR: `<variant>`, or `<variant>_int8`."""
    return variant if precision == "fp16" else f"{variant}_{precision}"


def target_path(out_dir: str | Path, variant: str, precision: str = "fp16", version: int = 1) -> Path:
    """Where `export` writes: `<out_dir>/openvino/<variant>/<version>/model.xml` (model.bin beside it);
    int8 in `<out_dir>/openvino/<variant>_int8/<version>/`."""
    return Path(out_dir) / "openvino" / model_name(variant, precision) / str(version) / "model.xml"


def convert(built, saved_model_dir: str | Path | None = None):
    """The ov.Model of `built`: from the SavedModel's serving_default if given, else the Keras model.

    Tensor names are reduced to the contract's (`image`, `logits`, `probabilities`); an IR
    whose I/O differs from the contract is refused with ExportError.
    """
    from export.core.telemetry import import_openvino
    ov = import_openvino()  # its converter sends usage events otherwise
    try:
        if saved_model_dir is not None:
            model = ov.convert_model(str(saved_model_dir))
        else:
            import tensorflow as tf
            size = built.input_size
            spec = tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT)
            fn = tf.function(lambda image: built.model(image, training=False), input_signature=[spec])
            model = ov.convert_model(fn.get_concrete_function())
    except Exception as e:  # noqa: BLE001 -- the converter raises many kinds; one line for the user
        raise ExportError(f"OpenVINO conversion failed: {first_line(e)}") from None
    _contract_names(model)
    return model


def _contract_names(model) -> None:
    """Keep only the contract's names on the I/O tensors (a tf.function adds internal ones,
    and OpenVINO's get_any_name() would pick those); refuse any other I/O."""
    got_in = [port.get_names() for port in model.inputs]
    got_out = [port.get_names() for port in model.outputs]
    if len(got_in) != 1 or INPUT not in got_in[0]:
        raise ExportError(f"OpenVINO IR input is {got_in}, expected one input {INPUT!r}")
    found = [next((n for n in OUTPUTS if n in names), None) for names in got_out]
    if sorted(n for n in found if n) != sorted(OUTPUTS) or len(found) != len(OUTPUTS):
        raise ExportError(f"OpenVINO IR outputs are {got_out}, expected {list(OUTPUTS)}")
    model.inputs[0].get_tensor().set_names({INPUT})
    for port, name in zip(model.outputs, found, strict=True):
        port.get_tensor().set_names({name})


def _quantize(built, model, calibration, accuracy_control: dict | None):
    """NNCF int8 of the converted model (export.formats.nncf_int8) and its record."""
    import numpy as np

    from export.formats.nncf_int8 import quantize
    from export.model import samples
    images = samples.photos(built.input_size) if calibration is None else np.asarray(calibration, dtype=np.float32)
    if not accuracy_control:
        return quantize(model, images)
    return quantize(model, images, validation=(accuracy_control["images"], accuracy_control["labels"]),
                    max_drop_points=float(accuracy_control["max_drop"]))


def io_details(model) -> tuple[list[dict], list[dict]]:
    """The IR's inputs and outputs as Artifact records (None for a dynamic dimension)."""
    def describe(ports) -> list[dict]:
        return [{"name": p.get_any_name(), "dtype": p.get_element_type().to_dtype().name,
                 "shape": [d.get_length() if d.is_static else None for d in p.get_partial_shape()]}
                for p in ports]
    return describe(model.inputs), describe(model.outputs)


def export(built, out_dir: str | Path, precision: str = "fp16", *, saved_model_dir: str | Path | None = None,
           version: int = 1, overwrite: bool = False, calibration=None, calibration_record: dict | None = None,
           accuracy_control: dict | None = None) -> Artifact:
    """Write `<out_dir>/openvino/<variant>/<version>/model.xml` and `model.bin` (fp16 weights), or the
    int8 IR in `<variant>_int8/<version>/`.

    int8 is calibrated on `calibration` (images [N, H, W, 3]; default the sample photos) that
    `calibration_record` describes; `accuracy_control` ({"images", "labels", "max_drop"}: the
    validation split and the gate's int8 threshold, points) turns on NNCF's accuracy control.
    The Artifact's path is model.xml; its sha256 and bytes cover both files (the directory).
    """
    from export.core.telemetry import import_openvino
    ov = import_openvino()
    get_format("openvino").check_precision(precision)
    if not isinstance(version, int) or version < 1:
        raise UsageError(f"version must be an integer >= 1, got {version!r}")
    start = time.perf_counter()
    path = target_path(out_dir, built.spec.name, precision, version)
    if path.parent.exists() and not overwrite:
        raise ExportError(f"{path.parent} already exists; pass --overwrite to replace it")
    model = convert(built, saved_model_dir)
    # convert_model records the source path in rt_info (conversion_parameters/input_model); here
    # that is a random scratch directory, which made two exports of one model differ. Record what
    # the source was instead, so equal models give equal files.
    if model.has_rt_info(["conversion_parameters", "input_model"]):
        model.set_rt_info("SavedModel serving_default" if saved_model_dir else "Keras model",
                          ["conversion_parameters", "input_model"])
    quantization = None
    if precision == "int8":
        model, quantization = _quantize(built, model, calibration, accuracy_control)
    with staged_dir(path.parent, overwrite=overwrite) as tmp:
        ov.save_model(model, str(tmp / path.name), compress_to_fp16=precision == "fp16")
        if not (tmp / path.name).with_suffix(".bin").is_file():
            raise ExportError(f"OpenVINO wrote no {path.with_suffix('.bin').name} beside {path.name}")
    inputs, outputs = io_details(model)
    digest, size = sha256_path(path.parent)
    ops = sorted({op.get_type_name() for op in model.get_ordered_ops()})
    details = {"source": "savedmodel:serving_default" if saved_model_dir else "keras (tf.function)",
               "converter": "openvino.convert_model", "weights": "float16 (compress_to_fp16)",
               "files": {f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
                         for f in (path, path.with_suffix(".bin"))},
               "sha256_of": f"the version directory {path.parent.name}/ (model.xml + model.bin)", "version": version,
               "precision_hints": ["f32", "bf16"], "op_types": ops, "model_name": model_name(built.spec.name, precision)}
    if quantization is not None:
        details["weights"] = "int8 (NNCF FakeQuantize; float layers in float32)"
        details["quantization"] = quantization
        details["keep_float"] = quantization["float_layers"]
        details["calibration_data"] = calibration_record or photos_record(built.input_size)
    return Artifact(path=str(path), format="openvino", precision=precision, variant=built.spec.name,
                    sha256=digest, bytes=size, inputs=inputs, outputs=outputs,
                    tool_versions=tool_versions(), seconds=round(time.perf_counter() - start, 3),
                    details=details)
