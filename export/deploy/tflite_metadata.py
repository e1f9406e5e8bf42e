"""TFLite Model Metadata: what MediaPipe Tasks and the LiteRT support libraries read from a model.

Written into every `.tflite` at export time with MediaPipe's metadata tools (`metadata_info`
blocks + `MetadataPopulator`): name, description, version, author, license; the `image`
input as an RGB image (float: NormalizationOptions mean 0, std 1, which keeps the 0..255
range the in-graph preprocessing expects; uint8: raw pixels, scale 1, zero point 0); each
classification output (`logits`, `probabilities`) with its meaning and `labels.txt`
attached as TENSOR_AXIS_LABELS. `read_metadata` reads it back (for `classify` and tests).
"""
from __future__ import annotations

import struct
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export.core.errors import ExportError

LABELS_FILE = "labels.txt"
#: What each output means, written as its TensorMetadata description.
OUTPUT_MEANINGS = {
    "logits": "Logits: unnormalised class scores (probabilities = softmax(logits)); one per label.",
    "probabilities": "Probabilities: softmax of the logits, one per label, summing to 1.",
}
#: The order MediaPipe ImageClassifier reports the heads in is the model's output order;
#: these are the heads a classifier app should read first.
PRIMARY_OUTPUT = "probabilities"


@dataclass(frozen=True)
class ModelCard:
    """The model-level metadata fields (TFLite ModelMetadata name/description/version/author/license)."""

    name: str
    description: str
    version: str
    author: str
    license: str
    #: The image contract in one line (export.images), written into the input's description.
    image_contract: str = ""

    @classmethod
    def for_model(cls, built, precision: str, *, name: str | None = None, version: str | int = 1,
                  author: str = "resnet-deploy", license: str = "unspecified",
                  description: str | None = None) -> ModelCard:
        """The card of one TFLite artifact of `built`; the bundle config overrides the defaults."""
        what = description or built.spec.description or f"ResNet50 with a {built.spec.name} head"
        return cls(name=name or f"resnet50-{built.spec.name}",
                   description=f"{what}; {built.num_classes} classes; TFLite {precision}. "
                               "Input: RGB pixels 0..255 (ResNet50 preprocessing is inside the model).",
                   version=str(version), author=author, license=license,
                   image_contract=contract_line(built.spec.image_contract(built.input_size)))


def contract_line(contract) -> str:
    """An ImageContract as the one line the input tensor's description carries; `aspect_of` reads it back."""
    d = contract.to_dict()
    return (f"Image contract v{d['version']} (aspect={contract.aspect}, size={contract.size}): EXIF orientation "
            "applied; JPEG decoded with the accurate IDCT and downscaled by 1/2, 1/4 or 1/8 while both sides stay "
            ">= size; grey and palette to RGB, alpha dropped; bilinear resize with antialiasing (half-pixel "
            "centres, float), rounded to whole grey levels (halves to even). A phone app matches it by "
            "pre-resizing to exactly size x size this way.")


def aspect_of(description: str | None) -> str:
    """The aspect policy in an input description written by contract_line ("stretch" if none)."""
    import re
    found = re.search(r"\(aspect=(\w+)", description or "")
    return found[1] if found else "stretch"


class _NoTensorFlow:
    """A meta path finder that says TensorFlow is not installed to the thread that created it (see
    tensorflow_hidden); another thread importing TensorFlow meanwhile gets it as usual."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if (name == "tensorflow" or name.startswith("tensorflow.")) and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


@contextmanager
def tensorflow_hidden() -> Iterator[None]:
    """While MediaPipe is imported, TensorFlow looks absent, unless this process has imported it.

    WORKAROUND. Two MediaPipe modules import TensorFlow when it is installed (here, always) and
    fall back when it is not: `mediapipe/tasks/python/core/optional_dependencies.py` (imported by
    `import mediapipe` itself) for `tensorflow.tools.docs` ("only required in the API docgen
    pipeline"), and `mediapipe/tasks/python/metadata/metadata.py` for `tf.io.gfile` (files on
    other file systems than the local one; it falls back to `open`). Each import brings in all of
    TensorFlow: 4.5 s and ~600 MB, and its start-up banner on stderr, for `classify` (LiteRT only)
    and every MediaPipe check. Inside this block they take their fallbacks; a later
    `import tensorflow` works as usual, and a process that has TensorFlow already is left as it is."""
    if "tensorflow" in sys.modules:
        yield
        return
    finder = _NoTensorFlow()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def mediapipe_tasks() -> tuple[Any, Any, Any]:
    """`mediapipe`, its `tasks.python.vision` and `BaseOptions`, imported without TensorFlow
    (tensorflow_hidden): what the MediaPipe ImageClassifier checks need."""
    with tensorflow_hidden():
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
    return mp, vision, BaseOptions


def _mediapipe_metadata() -> tuple[Any, Any, Any]:
    """MediaPipe's `metadata` (populator, displayer), `metadata_info` and the schema module.

    WORKAROUND, kept to this one function. The mediapipe 1.2.2 and 1.2.3 wheels ship
    `mediapipe/tasks/python/metadata/metadata.py`, which imports the pybind module
    `mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`, but not that module (the
    wheels moved to the ctypes C API in libmediapipe.so, which does not export it): every
    `metadata_writers` import fails with "No module named 'mediapipe.tasks.cc'". Not fixed in
    any release up to 1.2.3, nor on upstream master (85c0cdc, 2026-08-21, still imports it).
    Until a release ships it, register a pure-Python module with the one function metadata.py
    calls, GetMinimumMetadataParserVersion, ported from
    mediapipe/tasks/cc/metadata/metadata_version.cc. Delete this function's shim part when
    `import mediapipe.tasks.python.metadata` works on its own.
    """
    with tensorflow_hidden():
        return _import_mediapipe_metadata()


#: The pybind module the mediapipe wheels' metadata.py imports but do not ship (_mediapipe_metadata).
_MISSING_PYWRAP = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"


def _import_mediapipe_metadata() -> tuple[Any, Any, Any]:
    missing = _MISSING_PYWRAP
    try:
        from mediapipe.tasks.python.metadata import metadata
    except ModuleNotFoundError as e:
        if not missing.startswith(str(e.name)):
            raise
        from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

        def minimum_parser_version(buffer: bytes) -> str:
            # The members added to the schema after 1.0.0, and the version that added each.
            md = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
            units = fb.ProcessUnitOptions
            unit_versions = {units.BertTokenizerOptions: (1, 1, 0), units.SentencePieceTokenizerOptions: (1, 1, 0),
                             units.RegexTokenizerOptions: (1, 2, 1)}
            found = [(1, 0, 0)]

            def files(items):
                for f in items or []:
                    found.append((1, 0, 1) if f.type == fb.AssociatedFileType.VOCABULARY else (1, 0, 0))
                    found.append((1, 4, 0) if f.type == fb.AssociatedFileType.SCANN_INDEX_FILE else (1, 0, 0))
                    found.append((1, 4, 1) if f.version is not None else (1, 0, 0))

            def process_units(items):
                found.extend(unit_versions.get(u.optionsType, (1, 0, 0)) for u in items or [])

            for sub in md.subgraphMetadata or []:
                for t in (sub.inputTensorMetadata or []) + (sub.outputTensorMetadata or []):
                    files(t.associatedFiles)
                    process_units(t.processUnits)
                    audio = fb.ContentProperties.AudioProperties
                    if t.content is not None and t.content.contentPropertiesType == audio:
                        found.append((1, 3, 0))
                files(sub.associatedFiles)
                for units_field in (sub.inputProcessUnits, sub.outputProcessUnits):
                    if units_field is not None:
                        found.append((1, 1, 0))
                        process_units(units_field)
                found += [(1, 2, 0)] * ((sub.inputTensorGroups is not None) + (sub.outputTensorGroups is not None))
                found += [(1, 5, 0)] * (sub.customMetadata is not None)
            files(md.associatedFiles)
            return ".".join(map(str, max(found)))

        parent = None
        for depth in range(3, missing.count(".") + 2):  # mediapipe.tasks.cc, ... , the module itself
            name = ".".join(missing.split(".")[:depth])
            module = sys.modules.get(name) or types.ModuleType(name)
            if name != missing:
                module.__path__ = getattr(module, "__path__", [])  # a package with no files
            sys.modules[name] = module
            if parent is not None:
                setattr(parent, name.rpartition(".")[2], module)
            parent = module
        parent.GetMinimumMetadataParserVersion = minimum_parser_version  # type: ignore[union-attr]
        from mediapipe.tasks.python.metadata import metadata
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info
    return metadata, metadata_info, schema


def _tensors(model: bytes) -> tuple[dict, list[tuple[str, dict]]]:
    """The `serving_default` input details and the outputs as (signature name, details) in the
    subgraph's output order, which is the order TensorMetadata must follow."""
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_content=model)
    runner = interp.get_signature_runner("serving_default")
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    if set(inputs) != {"image"} or set(outputs) != set(OUTPUT_MEANINGS):
        raise ExportError(f"TFLite metadata expects input 'image' and outputs {sorted(OUTPUT_MEANINGS)}; "
                          f"the model has {sorted(inputs)} -> {sorted(outputs)}")
    by_index = {d["index"]: (name, d) for name, d in outputs.items()}
    return inputs["image"], [by_index[d["index"]] for d in interp.get_output_details()]


def write_metadata(model: bytes, card: ModelCard, labels: list[str]) -> bytes:
    """`model` with its metadata and `labels.txt` packed in; ExportError if it cannot be described
    (wrong I/O names, a label count that does not match, a uint8 input that is not raw pixels)."""
    import flatbuffers
    import numpy as np
    metadata, info, schema = _mediapipe_metadata()
    image, outputs = _tensors(model)
    for name, d in outputs:
        if int(d["shape"][-1]) != len(labels):
            raise ExportError(f"output {name!r} has {int(d['shape'][-1])} classes but {len(labels)} labels were given")
    from mediapipe.tasks.metadata import schema_py_generated as tflite_schema
    types_ = tflite_schema.TensorType
    if image["dtype"] == np.uint8:
        scale, zero = image["quantization"]
        if abs(scale - 1.0) > 1e-6 or zero != 0:
            raise ExportError(f"uint8 input 'image' has scale {scale} and zero point {zero}; MediaPipe feeds raw "
                              "pixels, so only scale 1, zero point 0 means pixels 0..255 (recalibrate on photos "
                              "that span 0..255)")
        input_md = info.InputImageTensorMd(
            name="image", description="RGB image, uint8 pixels 0..255 (quantization scale 1, zero point 0: "
            f"real = 1 x (q - 0)); ResNet50 preprocessing is inside the model. {card.image_contract}".strip(),
            color_space_type=schema.ColorSpaceType.RGB, tensor_type=types_.UINT8)
    else:
        input_md = info.InputImageTensorMd(
            name="image", description="RGB image, float32 pixels 0..255 (NormalizationOptions mean 0, std 1 keep "
            f"that range); ResNet50 preprocessing is inside the model. {card.image_contract}".strip(),
            norm_mean=[0.0], norm_std=[1.0], color_space_type=schema.ColorSpaceType.RGB, tensor_type=types_.FLOAT32)
    output_mds = []
    for name, d in outputs:
        quantized = d["dtype"] == np.uint8
        meaning = OUTPUT_MEANINGS[name]
        if quantized:
            scale, zero = d["quantization"]
            meaning += f" uint8: real = {scale:.9g} x (q - {zero})."
        md = info.ClassificationTensorMd(
            name=name, description=meaning, label_files=[info.LabelFileMd(LABELS_FILE)],
            tensor_type=types_.UINT8 if quantized else types_.FLOAT32, tensor_name=d["name"])
        if name == "logits" and not quantized:  # the writer's float default [0, 1] is the probabilities' range
            md.min_values = md.max_values = None
        output_mds.append(md)
    model_md = info.GeneralMd(name=card.name, version=card.version, description=card.description,
                              author=card.author, licenses=card.license).create_metadata()
    subgraph = schema.SubGraphMetadataT()
    image_tensor_md = input_md.create_metadata()
    props = image_tensor_md.content.contentProperties  # ImageProperties: the schema's default_size
    props.defaultSize = schema.ImageSizeT()
    props.defaultSize.width = props.defaultSize.height = int(image["shape"][1])
    subgraph.inputTensorMetadata = [image_tensor_md]
    subgraph.outputTensorMetadata = [md.create_metadata() for md in output_mds]
    model_md.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(model_md.Pack(builder), metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER)
    # A file of our own rather than with_model_buffer, whose temp file is removed in __del__.
    with tempfile.TemporaryDirectory(prefix="tflite-metadata.") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(model)
        try:
            populator = metadata.MetadataPopulator.with_model_file(str(path))
            populator.load_metadata_buffer(builder.Output())
            populator.load_associated_file_buffers({LABELS_FILE: ("\n".join(labels) + "\n").encode()})
            populator.populate()
        except ValueError as e:
            raise ExportError(f"cannot write TFLite metadata: {e}") from None
        return _fixed_zip_times(path.read_bytes())


#: DOS time 00:00:00 and date 1980-01-01, the earliest a zip entry can carry (little-endian).
_ZIP_EPOCH = b"\x00\x00\x21\x00"


def _fixed_zip_times(model: bytes) -> bytes:
    """`model` with its packed files' zip entries stamped 1980-01-01 instead of the export's time
    (the populator's ZipFile.writestr stamps the local time), so the same model gives the same
    bytes; only those 4-byte fields change (no offset, size or CRC does)."""
    import io
    import struct
    import zipfile
    out = bytearray(model)
    with zipfile.ZipFile(io.BytesIO(model)) as zf:
        central = zf.start_dir  # both offsets are absolute: zipfile accounts for the model before the zip
        for info in zf.infolist():
            local = info.header_offset
            if out[local:local + 4] != b"PK\x03\x04" or out[central:central + 4] != b"PK\x01\x02":
                raise ExportError("the TFLite metadata's packed files are not a well-formed zip; re-export")
            out[local + 10:local + 14] = _ZIP_EPOCH
            out[central + 12:central + 16] = _ZIP_EPOCH
            name_len, extra_len, comment_len = struct.unpack("<HHH", out[central + 28:central + 34])
            central += 46 + name_len + extra_len + comment_len
    return bytes(out)


# -- reading -----------------------------------------------------------------------------------

@dataclass
class OutputInfo:
    """One output tensor's metadata: name, meaning and its axis labels (empty without a labels file)."""

    name: str
    description: str
    labels_file: str | None
    labels: list[str] = field(default_factory=list)


@dataclass
class ModelMetadata:
    """What a .tflite file's metadata says (see the module docstring)."""

    name: str | None
    description: str | None
    version: str | None
    author: str | None
    license: str | None
    min_parser_version: str | None
    input_name: str | None
    color_space: str | None
    norm_mean: list[float] | None
    norm_std: list[float] | None
    outputs: list[OutputInfo]
    associated_files: list[str]
    input_description: str | None = None
    default_size: list[int] | None = None  # ImageProperties.default_size [width, height]

    def output(self, name: str) -> OutputInfo | None:
        return next((o for o in self.outputs if o.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_metadata(model: bytes | str | Path) -> ModelMetadata | None:
    """The metadata of a .tflite model (bytes or path), or None if it has none."""
    metadata, _, schema = _mediapipe_metadata()
    buf = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
    # MediaPipe's reader takes the immutable bytes as they are (flatbuffers and zipfile read any
    # buffer; io.BytesIO shares bytes but copies a bytearray): a bytearray here cost a copy of the
    # whole model per use, five per read: 0.27-0.36 s for an fp32 ResNet50, ~1 ms without them
    try:
        raw = metadata.get_metadata_buffer(buf)
        if not raw:
            return None
        displayer = metadata.MetadataDisplayer.with_model_buffer(buf)
    except (ValueError, struct.error, IndexError) as e:  # not a TFLite flatbuffer, or a truncated one
        raise ExportError(f"cannot read the TFLite metadata: corrupt or not a TFLite model ({e})") from None
    md = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAsModelMetadata(raw, 0))
    text = lambda b: b.decode() if isinstance(b, bytes) else b  # noqa: E731
    sub = (md.subgraphMetadata or [schema.SubGraphMetadataT()])[0]
    inp = (sub.inputTensorMetadata or [None])[0]
    mean = std = color = size = None
    if inp is not None:
        for unit in inp.processUnits or []:
            if unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions:
                mean, std = [float(x) for x in unit.options.mean], [float(x) for x in unit.options.std]
        props = inp.content.contentProperties if inp.content is not None else None
        if isinstance(props, schema.ImagePropertiesT):
            spaces = {v: k for k, v in vars(schema.ColorSpaceType).items() if not k.startswith("_")}
            color = spaces.get(props.colorSpace)
            if props.defaultSize is not None:
                size = [int(props.defaultSize.width), int(props.defaultSize.height)]
    outputs = []
    for t in sub.outputTensorMetadata or []:
        axis = [f for f in t.associatedFiles or [] if f.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS]
        fname = text(axis[0].name) if axis else None
        labels = displayer.get_associated_file_buffer(fname).decode().splitlines() if fname else []
        outputs.append(OutputInfo(text(t.name) or "", text(t.description) or "", fname,
                                  [x.strip() for x in labels if x.strip()]))
    return ModelMetadata(text(md.name), text(md.description), text(md.version), text(md.author), text(md.license),
                         text(md.minParserVersion), text(inp.name) if inp is not None else None, color, mean, std,
                         outputs, sorted(displayer.get_packed_associated_file_list()),
                         text(inp.description) if inp is not None else None, size)
