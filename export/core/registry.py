"""The one registry of artifact formats: for each, its precisions, where it lives in an export or
bundle, which module exports it and which Runner runs it, and whether that runner can use a GPU.

Every other module asks here instead of dispatching on format strings. Exporters and runners are
named by dotted path and imported on first use, so this module imports neither (exporters and
runners stay in their own rooms: see tests/export/test_layering.py).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from export.core.errors import RunnerError, UsageError

if TYPE_CHECKING:
    from export.runtimes.base import Runner


#: The SavedModel's two serving signatures (export.formats.savedmodel writes them; the server and
#: the clients name them): pixels in, and encoded images in.
DEFAULT_SIGNATURE = "serving_default"
IMAGE_BYTES_SIGNATURE = "predict_image_bytes"


class Precision(StrEnum):
    """Numeric precisions an artifact can be exported in."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"  # dynamic-range: int8 weights, float activations
    INT8 = "int8"        # full integer: int8 weights and activations


@dataclass(frozen=True)
class FormatSpec:
    """Everything the project knows about one artifact format."""

    name: str
    precisions: tuple[str, ...]   # the first is the default
    exporter: str                 # module with export(built, out_dir, precision, ...) and target_path(...)
    runner: str                   # "module:Class" of the Runner that loads this format's files
    gpu: bool                     # the runner can run on a GPU (parity adds a GPU row)
    suffix: str | None            # file suffix; None for a directory format
    marker: str                   # matplotlib marker in bench charts
    description: str
    #: Thread counts `bench` also times each artifact with at batch 1, beside its main run: for an
    #: on-device runtime, what one and two of a phone's cores give.
    bench_threads: tuple[int, ...] = ()
    #: The runner's precision hints, a setting of the runner and not of the file (OpenVINO: f32,
    #: bf16): parity and bench run one row per hint instead of one per device. Empty: none.
    precision_hints: tuple[str, ...] = ()
    #: Precisions left out of `--format all` (and so of `make export`'s default bundle) unless asked
    #: for by name (`--precision`, a variant's `precisions`, or `--format` of this format alone).
    opt_in: tuple[str, ...] = ()

    def exporter_module(self) -> ModuleType:
        return importlib.import_module(self.exporter)

    def runner_class(self) -> type[Runner]:
        module, _, cls = self.runner.partition(":")
        return getattr(importlib.import_module(module), cls)

    def target_path(self, out_dir: str | os.PathLike, variant: str, precision: str, version: int = 1) -> Path:
        """Where this format's artifact of `variant` at `precision` lives under `out_dir` (an export
        directory or a bundle): the exporter owns the layout."""
        return self.exporter_module().target_path(out_dir, variant, precision, version)

    def check_precision(self, precision: str) -> str:
        if precision not in self.precisions:
            raise UsageError(f"unknown {self.name} precision {precision!r}; choose from {', '.join(self.precisions)}")
        return precision


FORMATS: dict[str, FormatSpec] = {
    spec.name: spec for spec in (
        FormatSpec("savedmodel", ("fp32",), "export.formats.savedmodel",
                   "export.runtimes.tensorflow:TensorFlowRunner", gpu=True, suffix=None, marker="o",
                   description="TensorFlow SavedModel in TF Serving's layout"),
        FormatSpec("tflite", ("fp32", "fp16", "dynamic", "int8"), "export.formats.tflite",
                   "export.runtimes.litert:LiteRTRunner", gpu=False, suffix=".tflite", marker="s",
                   description="TFLite flatbuffer for LiteRT on devices", bench_threads=(1, 2)),
        FormatSpec("onnx", ("fp32", "int8"), "export.formats.onnx",
                   "export.runtimes.onnxruntime:OnnxRuntimeRunner", gpu=True, suffix=".onnx", marker="^",
                   description="ONNX for ONNX Runtime"),
        FormatSpec("openvino", ("fp16", "int8"), "export.formats.openvino",
                   "export.runtimes.openvino:OpenVINORunner", gpu=False, suffix=".xml", marker="D",
                   description="OpenVINO IR (model.xml + model.bin: fp16 weights, or int8 by NNCF) for OpenVINO's "
                               "CPU plugin",
                   precision_hints=("f32", "bf16")),
    )
}


def get_format(name: str) -> FormatSpec:
    """The FormatSpec called `name`; UsageError listing the known formats otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown format {name!r}; choose one of: {', '.join(FORMATS)}") from None


def detect_format(path: str | os.PathLike) -> str:
    """The format of a file or directory: a SavedModel directory, or a registered file suffix."""
    p = Path(path)
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return "savedmodel"
        raise RunnerError(f"{p} is a directory without saved_model.pb: not a SavedModel")
    for spec in FORMATS.values():
        if spec.suffix and p.suffix == spec.suffix:
            return spec.name
    if not p.exists():
        raise RunnerError(f"no such artifact: {p}")
    suffixes = ", ".join(s.suffix for s in FORMATS.values() if s.suffix)
    raise RunnerError(f"cannot tell the format of {p}: expected a SavedModel directory or a file ending in {suffixes}")
