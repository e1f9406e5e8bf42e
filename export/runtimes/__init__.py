"""One Runner per backend behind one interface (see base.py), and `runner_for` to pick one.

A runner loads a file, whatever wrote it: nothing here imports export.formats' exporters. Which
runner runs which format is said once, in export.core.registry.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from export.core.errors import RunnerError, UsageError
from export.core.registry import FORMATS, detect_format, get_format
from export.runtimes.base import DeviceUnavailable, PrecisionUnavailable, Runner, TensorSpec

__all__ = ["DeviceUnavailable", "PrecisionUnavailable", "Runner", "TensorSpec", "detect_format", "runner_for"]


def runner_for(artifact_or_path, root: str | os.PathLike | None = None, *, device: str = "auto",
               num_threads: int | None = None, name: str | None = None,
               precision_hint: str | None = None) -> Runner:
    """The runner for an Artifact (its path taken relative to `root`) or a path; not loaded yet.

    `device` is "auto" (GPU when the backend sees one), "CPU" or "GPU:n"; LiteRT and OpenVINO are
    CPU only. `precision_hint` is for formats that have them (the registry's precision_hints:
    OpenVINO's f32, the default, and bf16).
    """
    from export.formats import Artifact
    if isinstance(artifact_or_path, Artifact):
        path, fmt, name = Path(artifact_or_path.path), artifact_or_path.format, name or artifact_or_path.key
    else:
        path = Path(artifact_or_path)
        fmt = None
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    runner_cls: Any  # file runners share one constructor: (path, name=, device=, num_threads=)
    try:
        spec = get_format(fmt or detect_format(path))
        runner_cls = spec.runner_class()
    except UsageError as e:
        raise RunnerError(f"no runner for {path}: {e}") from None
    if precision_hint is None:
        return runner_cls(path, name=name, device=device, num_threads=num_threads)
    if not spec.precision_hints:
        hinted = ", ".join(f.name for f in FORMATS.values() if f.precision_hints)
        raise RunnerError(f"precision hint {precision_hint!r}: {spec.name} runners take none (only {hinted} runners do)")
    if precision_hint not in spec.precision_hints:
        raise RunnerError(f"unknown {spec.name} precision hint {precision_hint!r}; "
                          f"choose from {', '.join(spec.precision_hints)}")
    return runner_cls(path, name=name, device=device, num_threads=num_threads, precision_hint=precision_hint)
