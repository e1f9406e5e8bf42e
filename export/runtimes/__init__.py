"""One Runner per backend behind one interface (see base.py), and `runner_for` to pick one.

A runner loads a file, whatever wrote it: nothing here imports export.formats' exporters
(only the Artifact record, to read where an artifact lives and what format it is).
"""
from __future__ import annotations

import os
from pathlib import Path

from export.errors import RunnerError
from export.runtimes.base import DeviceUnavailable, Runner, TensorSpec

__all__ = ["DeviceUnavailable", "Runner", "TensorSpec", "detect_format", "runner_for"]

#: Which runner runs each artifact format.
BACKEND_FOR_FORMAT = {"savedmodel": "tensorflow", "tflite": "litert", "onnx": "onnxruntime"}


def detect_format(path: str | os.PathLike) -> str:
    """"savedmodel" for a directory with saved_model.pb, "tflite" or "onnx" by file extension."""
    p = Path(path)
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return "savedmodel"
        raise RunnerError(f"{p} is a directory without saved_model.pb: not a SavedModel")
    if p.suffix == ".tflite":
        return "tflite"
    if p.suffix == ".onnx":
        return "onnx"
    if not p.exists():
        raise RunnerError(f"no such artifact: {p}")
    raise RunnerError(f"cannot tell the format of {p}: expected a SavedModel directory, a .tflite or an .onnx file")


def runner_for(artifact_or_path, root: str | os.PathLike | None = None, *, device: str = "auto",
               num_threads: int | None = None, name: str | None = None) -> Runner:
    """The runner for an Artifact (its path taken relative to `root`) or a path; not loaded yet.

    `device` is "auto" (GPU when the backend sees one), "CPU" or "GPU:n"; LiteRT is CPU only.
    """
    from export.formats import Artifact
    if isinstance(artifact_or_path, Artifact):
        art = artifact_or_path
        path = Path(art.path)
        if root is not None and not path.is_absolute():
            path = Path(root) / path
        fmt = art.format
        name = name or art.key
    else:
        path = Path(artifact_or_path)
        if root is not None and not path.is_absolute():
            path = Path(root) / path
        fmt = detect_format(path)
    if fmt == "savedmodel":
        from export.runtimes.tensorflow import TensorFlowRunner
        return TensorFlowRunner(path, name=name, device=device)
    if fmt == "tflite":
        from export.runtimes.litert import LiteRTRunner
        return LiteRTRunner(path, name=name, num_threads=num_threads, device="CPU" if device == "auto" else device)
    if fmt == "onnx":
        from export.runtimes.onnxruntime import OnnxRuntimeRunner
        return OnnxRuntimeRunner(path, name=name, device=device, num_threads=num_threads)
    raise RunnerError(f"no runner for format {fmt!r}; known formats: {', '.join(BACKEND_FOR_FORMAT)}")
