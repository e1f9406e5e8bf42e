"""The Runner interface every backend implements (after Polygraphy's BaseRunner).

The base class owns the contract: `load()` / `close()` / context manager, `device`, input
validation (names, dtypes, shapes) before the backend is called, and inference timing.
Subclasses implement only `_load`, `_infer` and (optionally) `_close`.
"""
from __future__ import annotations

import abc
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from export.core.errors import RunnerError


class DeviceUnavailable(RunnerError):
    """A runner was asked for a device (e.g. "GPU:0") this machine does not have.

    Parity records such a runner as "skipped: no GPU", never as a pass.
    """

    #: What the machine lacks; the parity row reads "skipped: no <missing>".
    missing = "GPU"

    @property
    def skip_reason(self) -> str:
        return f"skipped: no {self.missing}"


class PrecisionUnavailable(DeviceUnavailable):
    """A runner was asked for a precision (e.g. bf16) this CPU has no hardware for.

    Parity records it as "skipped: no bf16 hardware", never as a pass (nor as a slow emulation).
    """

    missing = "bf16 hardware"


def wants_gpu(device: str) -> bool | None:
    """True for "GPU"/"GPU:n"/"CUDA", False for "CPU", None for "auto" (use a GPU if present)."""
    d = (device or "auto").strip().upper()
    if d == "AUTO":
        return None
    if d == "CPU" or d.startswith("CPU:"):
        return False
    if d in ("GPU", "CUDA") or d.startswith(("GPU:", "CUDA:")):
        return True
    raise RunnerError(f"unknown device {device!r}: use auto, CPU or GPU[:n]")


def gpu_index(device: str) -> int:
    """The n of "GPU:n" (0 for "GPU" or "auto")."""
    _, _, n = (device or "").partition(":")
    try:
        return int(n) if n else 0
    except ValueError:
        raise RunnerError(f"bad device {device!r}: use GPU:<integer>") from None


@dataclass(frozen=True)
class TensorSpec:
    """An input or output: name, NumPy dtype name, shape with None for a free dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


class Runner(abc.ABC):
    """Load an artifact, run `infer(feed) -> outputs`, close. One instance per artifact."""

    #: Short backend name used in reports ("keras", "tensorflow", "litert", "onnxruntime").
    backend = "base"
    #: How many inference times a runner remembers.
    MAX_RECORDED_TIMES = 1024

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.backend
        self.device = "CPU"
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: list[str] = []
        self.is_loaded = False
        self.last_inference_seconds: float | None = None
        #: The most recent inference times (bounded: a server keeps its runners for its whole life).
        self.inference_times: deque[float] = deque(maxlen=self.MAX_RECORDED_TIMES)
        self.inference_count = 0

    # -- lifecycle -------------------------------------------------------------------------
    def load(self) -> Self:
        if not self.is_loaded:
            self._load()
            self.is_loaded = True
        return self

    def close(self) -> None:
        if self.is_loaded:
            self._close()
            self.is_loaded = False

    def __enter__(self) -> Self:
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inference -------------------------------------------------------------------------
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate `feed` against `self.inputs`, run the backend, record the time taken."""
        if not self.is_loaded:
            raise RunnerError(f"{self.name}: call load() (or use `with`) before infer()")
        self.check_feed(feed)
        start = time.perf_counter()
        outputs = self._infer(feed)
        self.last_inference_seconds = time.perf_counter() - start
        self.inference_times.append(self.last_inference_seconds)
        self.inference_count += 1
        return outputs

    def times_since(self, count: int) -> list[float]:
        """The inference times recorded after the `count`-th call (those still remembered)."""
        new = self.inference_count - count
        return list(self.inference_times)[-new:] if new > 0 else []

    @classmethod
    def preload(cls, num_threads: int | None = None) -> None:
        """Import the backend (and set process-wide thread settings) before anything is timed."""
        return None

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        """Raise RunnerError naming the expected and the given input on any mismatch."""
        if set(feed) != set(self.inputs):
            raise RunnerError(f"{self.name}: expected inputs {sorted(self.inputs)}, got {sorted(feed)}")
        for name, spec in self.inputs.items():
            value = feed[name]
            if not isinstance(value, np.ndarray):
                raise RunnerError(f"{self.name}: input {name!r} must be a numpy array, got {type(value).__name__}")
            if value.dtype != np.dtype(spec.dtype):
                raise RunnerError(f"{self.name}: input {name!r} expects dtype {spec.dtype}, got {value.dtype}")
            if value.ndim != len(spec.shape) or any(
                    want is not None and want != got for want, got in zip(spec.shape, value.shape, strict=False)):
                want = tuple("N" if d is None else d for d in spec.shape)
                raise RunnerError(f"{self.name}: input {name!r} expects shape {want}, got {tuple(value.shape)}")

    # -- for subclasses ----------------------------------------------------------------------
    @abc.abstractmethod
    def _load(self) -> None:
        """Open the artifact; set self.inputs, self.outputs and self.device."""

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the backend on a validated feed; return every output by name as numpy."""

    def _close(self) -> None:  # noqa: B027 -- optional hook: most backends free nothing explicitly
        pass
