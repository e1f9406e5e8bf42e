"""The reference runner: the in-memory Keras model, on the CPU by default.

Parity compares every artifact against this runner's outputs. It runs on the CPU even on a
GPU machine, because GPUs compute "fp32" convolutions in TF32 and the reference must be exact.
"""
from __future__ import annotations

import numpy as np

from export.core.errors import RunnerError
from export.runtimes.base import Runner, TensorSpec, gpu_index, wants_gpu


class KerasRunner(Runner):
    """Run a keras.Model (dict or single output) with training=False."""

    backend = "keras"

    def __init__(self, model, name: str | None = None, device: str = "CPU") -> None:
        super().__init__(name)
        self.model = model
        self.requested_device = device

    def _load(self) -> None:
        import tensorflow as tf
        gpu = wants_gpu(self.requested_device)
        if gpu and not tf.config.list_physical_devices("GPU"):
            from export.runtimes.base import DeviceUnavailable
            raise DeviceUnavailable(f"{self.name}: no GPU: TensorFlow sees no GPU device")
        self.device = f"GPU:{gpu_index(self.requested_device)}" if gpu else "CPU"
        self.inputs = {}
        for t in self.model.inputs:
            name = t.name.split(":")[0]
            self.inputs[name] = TensorSpec(name, str(t.dtype), tuple(None if d is None else int(d) for d in t.shape))
        out = self.model.output
        self.outputs = list(out) if isinstance(out, dict) else list(self.model.output_names)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf
        x = feed if len(feed) > 1 else next(iter(feed.values()))
        with tf.device(f"/{self.device}:0" if self.device == "CPU" else f"/{self.device}"):
            out = self.model(x, training=False)
        if isinstance(out, dict):
            return {k: np.asarray(v) for k, v in out.items()}
        if isinstance(out, (list, tuple)):
            return {k: np.asarray(v) for k, v in zip(self.outputs, out, strict=False)}
        if len(self.outputs) != 1:
            raise RunnerError(f"{self.name}: model returned one tensor for outputs {self.outputs}")
        return {self.outputs[0]: np.asarray(out)}
