"""A `.tflite` file on LiteRT (`ai_edge_litert.interpreter`) with XNNPACK and N threads.

The feed is always float32 `image` in [0, 255] and the outputs are always float32: for a
full-integer model (uint8/int8 I/O) the runner quantizes the input with the input tensor's
(scale, zero_point) and dequantizes each output, real = scale * (q - zero_point), as an
application on a device would. Batch sizes other than the model's static one are resized.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from export.core.errors import RunnerError, first_line
from export.runtimes.base import Runner, TensorSpec, wants_gpu

_QUANTIZED = (np.uint8, np.int8, np.int16)


def _shape(details: dict) -> tuple[int | None, ...]:
    sig = details.get("shape_signature")
    dims = sig if sig is not None and len(sig) else details["shape"]
    return tuple(None if int(d) < 0 else int(d) for d in dims)


class LiteRTRunner(Runner):
    """Run a signature (default `serving_default`) of a .tflite model on the CPU (XNNPACK)."""

    backend = "litert"

    def __init__(self, path: str | Path, name: str | None = None, device: str = "CPU",
                 num_threads: int | None = None, signature: str = "serving_default") -> None:
        super().__init__(name)
        self.path = Path(path)
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.signature = signature
        self.requested_device = device
        self.quantization: dict[str, dict[str, Any]] = {}
        self._interpreter: Any = None
        self._runner: Any = None
        self._input_details: dict = {}
        self._output_details: dict = {}

    @classmethod
    def preload(cls, num_threads: int | None = None) -> None:
        import ai_edge_litert.interpreter  # noqa: F401

    def _load(self) -> None:
        if wants_gpu(self.requested_device):
            raise RunnerError(f"{self.name}: the LiteRT runner runs on the CPU (XNNPACK); "
                              f"device {self.requested_device!r} is not supported")
        if not self.path.is_file():
            raise RunnerError(f"{self.name}: no such .tflite file: {self.path}")
        from ai_edge_litert.interpreter import Interpreter
        try:
            # The default op resolver applies the XNNPACK delegate on the CPU.
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
        except (ValueError, RuntimeError) as e:
            raise RunnerError(f"{self.name}: LiteRT cannot load {self.path}: "
                              f"{first_line(e)}") from None
        signatures = self._interpreter.get_signature_list()
        if self.signature not in signatures:
            raise RunnerError(f"{self.name}: {self.path.name} has no signature {self.signature!r} "
                              f"(it has {sorted(signatures)})")
        self._runner = self._interpreter.get_signature_runner(self.signature)
        self._input_details = self._runner.get_input_details()
        self._output_details = self._runner.get_output_details()
        self.device = f"CPU (XNNPACK, {self.num_threads} thread{'' if self.num_threads == 1 else 's'})"
        self.inputs = {}
        for name, d in self._input_details.items():
            quantized = d["dtype"] in _QUANTIZED and d["quantization"][0]
            # Quantized inputs are fed as float32 and quantized here.
            self.inputs[name] = TensorSpec(name, "float32" if quantized else np.dtype(d["dtype"]).name, _shape(d))
        for name, d in {**self._input_details, **self._output_details}.items():
            scale, zero = d["quantization"]
            if d["dtype"] in _QUANTIZED and scale:
                self.quantization[name] = {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
                                           "zero_point": int(zero)}
        self.outputs = sorted(self._output_details)

    def _quantize(self, name: str, x: np.ndarray) -> np.ndarray:
        q = self.quantization.get(name)
        if not q:
            return x
        info = np.iinfo(q["dtype"])
        return np.clip(np.round(x / q["scale"] + q["zero_point"]), info.min, info.max).astype(q["dtype"])

    def _dequantize(self, name: str, y: np.ndarray) -> np.ndarray:
        q = self.quantization.get(name)
        if not q:
            return np.asarray(y)
        return (q["scale"] * (y.astype(np.float32) - q["zero_point"])).astype(np.float32)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # The signature runner resizes the inputs to the feed's shapes (resize_tensor_input)
        # and re-allocates tensors before invoking, so any batch size runs.
        out = self._runner(**{k: self._quantize(k, v) for k, v in feed.items()})
        return {k: self._dequantize(k, v).copy() for k, v in out.items()}

    def _close(self) -> None:
        self._runner = None
        self._interpreter = None
