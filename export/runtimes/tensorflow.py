"""A SavedModel's signature (what TF Serving runs), on a GPU when TensorFlow sees one.

`device="auto"` picks GPU:0 when `tf.config.list_physical_devices("GPU")` is non-empty, else
the CPU; `device="GPU:0"` on a machine without a GPU raises DeviceUnavailable (parity reports
that as "skipped: no GPU"). GPU memory growth is enabled so ONNX Runtime can share the card.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.core.errors import RunnerError, first_line
from export.runtimes.base import DeviceUnavailable, Runner, TensorSpec, gpu_index, wants_gpu


def _enable_memory_growth(tf) -> None:
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the GPU is already initialised; growth can't change now
            pass


class TensorFlowRunner(Runner):
    """Load a SavedModel directory and call one of its signatures (default `serving_default`)."""

    backend = "tensorflow"

    def __init__(self, path: str | Path, name: str | None = None, device: str = "auto",
                 num_threads: int | None = None, signature: str = "serving_default") -> None:
        super().__init__(name)
        self.path = Path(path)
        self.requested_device = device
        self.signature = signature
        self._loaded: Any = None
        self._fn: Any = None

    @classmethod
    def preload(cls, num_threads: int | None = None) -> None:
        """Import TensorFlow; its thread pools are process-wide, so `num_threads` is set here, once,
        before the first op runs (TensorFlow refuses to change them afterwards)."""
        from export import import_tensorflow_quietly
        tf = import_tensorflow_quietly()
        if num_threads:
            tf.config.threading.set_intra_op_parallelism_threads(num_threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)

    def _load(self) -> None:
        from export import import_tensorflow_quietly
        tf = import_tensorflow_quietly()
        gpus = tf.config.list_physical_devices("GPU")
        gpu = wants_gpu(self.requested_device)
        if gpu and not gpus:
            raise DeviceUnavailable(f"{self.name}: no GPU: TensorFlow sees no GPU device")
        use_gpu = bool(gpus) if gpu is None else gpu
        if use_gpu:
            _enable_memory_growth(tf)
        self.device = f"GPU:{gpu_index(self.requested_device)}" if use_gpu else "CPU"
        if not (self.path / "saved_model.pb").is_file():
            raise RunnerError(f"{self.name}: {self.path} is not a SavedModel directory (no saved_model.pb)")
        with tf.device(self._tf_device):
            try:
                self._loaded = tf.saved_model.load(str(self.path))
            except Exception as e:  # noqa: BLE001 -- the converter/runtime raises many types; each becomes one user-facing line
                raise RunnerError(f"{self.name}: cannot load SavedModel {self.path}: "
                                  f"{first_line(e)}") from None
        sigs = self._loaded.signatures
        if self.signature not in sigs:
            raise RunnerError(f"{self.name}: SavedModel {self.path} has no signature {self.signature!r} "
                              f"(it has {sorted(sigs)})")
        self._fn = sigs[self.signature]
        _, kwargs = self._fn.structured_input_signature
        self.inputs = {k: TensorSpec(k, spec.dtype.as_numpy_dtype.__name__ if spec.dtype != tf.string else "object",
                                     tuple(spec.shape.as_list()))
                       for k, spec in kwargs.items()}
        self.outputs = sorted(self._fn.structured_outputs)

    @property
    def _tf_device(self) -> str:
        return "/CPU:0" if self.device == "CPU" else f"/{self.device}"

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf
        with tf.device(self._tf_device):
            out = self._fn(**{k: tf.constant(v) for k, v in feed.items()})
        return {k: v.numpy() for k, v in out.items()}

    def _close(self) -> None:
        self._fn = None
        self._loaded = None
