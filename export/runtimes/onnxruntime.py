"""An `.onnx` file on ONNX Runtime: the CUDA execution provider when available, else the CPU.

`device="auto"` uses CUDA when onnxruntime-gpu offers it (and the session really gets it);
`device="GPU:0"` without CUDA raises DeviceUnavailable, reported as "skipped: no GPU".
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from export.core.errors import RunnerError, first_line
from export.runtimes.base import DeviceUnavailable, Runner, TensorSpec, gpu_index, wants_gpu

_ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32",
               "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(string)": "object"}


class OnnxRuntimeRunner(Runner):
    """An onnxruntime.InferenceSession over one .onnx file."""

    backend = "onnxruntime"
    #: Session config entries for every session this process opens (ORT's add_session_config_entry).
    #: The paired bench sets `session.intra_op.allow_spinning = 0`: with several sessions in one
    #: process, one session's worker threads spinning after its run steal the next one's cores.
    session_config: ClassVar[dict[str, str]] = {}

    def __init__(self, path: str | Path, name: str | None = None, device: str = "auto",
                 num_threads: int | None = None) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.requested_device = device
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.providers: list[str] = []
        self._session: Any = None

    @classmethod
    def preload(cls, num_threads: int | None = None) -> None:
        import onnxruntime  # noqa: F401

    def _load(self) -> None:
        import onnxruntime as ort
        if not self.path.is_file():
            raise RunnerError(f"{self.name}: no such .onnx file: {self.path}")
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        gpu = wants_gpu(self.requested_device)
        if gpu and not has_cuda:
            raise DeviceUnavailable(f"{self.name}: no GPU: onnxruntime offers no CUDAExecutionProvider "
                                    f"(it has {ort.get_available_providers()})")
        use_gpu = has_cuda if gpu is None else gpu
        providers: list = ["CPUExecutionProvider"]
        if use_gpu:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": gpu_index(self.requested_device)}))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.num_threads
        opts.log_severity_level = 3
        for key, value in self.session_config.items():
            opts.add_session_config_entry(key, value)
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # noqa: BLE001 -- the converter/runtime raises many types; each becomes one user-facing line
            raise RunnerError(f"{self.name}: ONNX Runtime cannot load {self.path}: "
                              f"{first_line(e)}") from None
        self.providers = self._session.get_providers()
        if use_gpu and "CUDAExecutionProvider" not in self.providers:
            # onnxruntime falls back to the CPU silently when CUDA libraries are missing.
            if gpu:
                raise DeviceUnavailable(f"{self.name}: no GPU: the CUDA provider failed to start "
                                        "(CUDA/cuDNN libraries missing?)")
            use_gpu = False
        self.device = f"GPU:{gpu_index(self.requested_device)}" if use_gpu else "CPU"
        self.inputs = {i.name: TensorSpec(i.name, _ONNX_TYPES.get(i.type, i.type),
                                          tuple(d if isinstance(d, int) else None for d in i.shape))
                       for i in self._session.get_inputs()}
        self.outputs = [o.name for o in self._session.get_outputs()]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self.outputs, feed)
        return dict(zip(self.outputs, values, strict=False))

    def _close(self) -> None:
        self._session = None
