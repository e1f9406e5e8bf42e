"""An OpenVINO IR (`model.xml` + `model.bin`) on OpenVINO's CPU plugin, at a chosen precision hint.

The precision hint is a runner setting, not a property of the file: `f32` runs every layer in
float32; `bf16` runs them on the CPU's bf16 units (AMX-BF16 tiles or AVX512-BF16). OpenVINO
picks bf16 by itself on such CPUs, so the hint is always set explicitly. Asked for bf16 on a
CPU without bf16 units, `load()` raises PrecisionUnavailable ("skipped: no bf16 hardware")
rather than let the plugin fall back to f32 and report that as bf16.

The bundle's IRs take any batch (`[?, H, W, 3]`). A batch of a size in STATIC_BATCH_SIZES runs on a
second compiled model reshaped to that static shape, compiled at its first use: the CPU plugin picks
its kernels once for a static shape, where a dynamic one pays for shape inference and more general
kernels on every call.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from export.core import cpu_features
from export.core.errors import RunnerError, first_line
from export.runtimes.base import DeviceUnavailable, PrecisionUnavailable, Runner, TensorSpec, wants_gpu

#: The precision hints this runner accepts, and the OpenVINO element type each asks for.
PRECISION_HINTS = {"f32": "f32", "bf16": "bf16"}
#: Batch sizes that get a static-shape compiled model of their own (see the module docstring).
#: Batch 1 only: measured on the default bundle's IRs (Intel Xeon, 2 threads, interleaved rounds),
#: the static batch-1 model was 3.6-4.7 % faster for the int8 IRs and 1-3 % for the f32 ones, with the
#: same outputs bit for bit; at batch 8 it gained 1-2 %, not worth a second copy of the weights (a
#: compiled model holds its own: +63 MB for an int8 ResNet50, +154 MB for the f32 one; ~0.25 s to compile).
STATIC_BATCH_SIZES = (1,)


#: Timed runs of `OpenVINORunner.layer_profile` (each after one untimed run).
LAYER_PROFILE_RUNS = 30


def _conv_ops(op) -> tuple[float, str]:
    """(operations per run: 2 x multiply-accumulates, its group: "<kh>x<kw> conv @<H>x<W>") of an IR
    Convolution or GroupConvolution node: its output elements x the weights' (input channels per
    group x kernel) elements."""
    weights = [int(d) for d in op.input(1).get_partial_shape().to_shape()]
    out = [int(d) for d in op.output(0).get_partial_shape().to_shape()]  # N, C, H, W
    kh, kw = weights[-2:]
    return 2.0 * float(np.prod(out)) * float(np.prod(weights[-3:])), f"{kh}x{kw} conv @{out[2]}x{out[3]}"


def bf16_available(flags: Iterable[str] | None) -> str | None:
    """The bf16 unit this CPU would use ("AMX-BF16", "AVX512-BF16"), or None (no bf16 hardware).

    `flags` are the CPU's flags (cpu_features.cpu_flags()); where those are unknown (no
    /proc/cpuinfo), the OpenVINO CPU plugin's own OPTIMIZATION_CAPABILITIES decide.
    """
    if flags is not None:
        return cpu_features.bf16_unit(flags)
    from export.core.telemetry import import_openvino
    ov = import_openvino()
    return "BF16 (OpenVINO capability)" if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") \
        else None


class OpenVINORunner(Runner):
    """compile_model(model.xml, "CPU") with a precision hint, a thread count and the latency hint."""

    backend = "openvino"

    def __init__(self, path: str | Path, name: str | None = None, device: str = "CPU",
                 num_threads: int | None = None, precision_hint: str = "f32",
                 cpu_flags: Iterable[str] | str | None = "detect") -> None:
        """`cpu_flags`: the CPU flags that decide whether bf16 hardware exists ("detect" reads
        /proc/cpuinfo; tests pass a list to see a CPU without bf16 units)."""
        super().__init__(name)
        if precision_hint not in PRECISION_HINTS:
            raise RunnerError(f"{self.name}: unknown OpenVINO precision hint {precision_hint!r}; "
                              f"choose from {', '.join(PRECISION_HINTS)}")
        self.path = Path(path)
        self.requested_device = device
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.precision_hint = precision_hint
        self.cpu_flags = cpu_features.cpu_flags() if cpu_flags == "detect" else cpu_flags
        self.bf16_unit: str | None = None
        self.execution_precision: str | None = None
        self._compiled: Any = None  # openvino.CompiledModel
        self._request: Any = None   # openvino.InferRequest
        self._core: Any = None      # openvino.Core
        self._config: dict[str, Any] = {}
        #: Input shapes (name -> shape) at a STATIC_BATCH_SIZES batch -> its static request, or None
        #: where that shape could not be compiled (the dynamic model runs it then).
        self._static: dict[tuple, Any] = {}
        self._static_batch = False  # set by _load: whether the batch is the inputs' only dynamic dimension

    @classmethod
    def preload(cls, num_threads: int | None = None) -> None:
        from export.core.telemetry import import_openvino
        import_openvino()

    def _load(self) -> None:
        if wants_gpu(self.requested_device):
            raise DeviceUnavailable(f"{self.name}: no GPU: this runner uses OpenVINO's CPU plugin only")
        if self.precision_hint == "bf16":
            self.bf16_unit = bf16_available(self.cpu_flags)
            if self.bf16_unit is None:
                raise PrecisionUnavailable(f"{self.name}: no bf16 hardware: this CPU has neither AMX-BF16 nor "
                                           "AVX512-BF16, so the bf16 hint would be emulated or fall back to f32")
        if self.path.suffix != ".xml" or not self.path.is_file():
            raise RunnerError(f"{self.name}: no such OpenVINO IR: {self.path} (expected model.xml with model.bin)")
        if not self.path.with_suffix(".bin").is_file():
            raise RunnerError(f"{self.name}: {self.path.with_suffix('.bin')} is missing (an IR is .xml + .bin)")
        from export.core.telemetry import import_openvino
        ov = import_openvino()
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision_hint],
                  "INFERENCE_NUM_THREADS": self.num_threads, "PERFORMANCE_HINT": "LATENCY"}
        try:
            self._compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        except Exception as e:  # noqa: BLE001 -- OpenVINO raises RuntimeError with a multi-line trace
            raise RunnerError(f"{self.name}: OpenVINO cannot load {self.path}: {first_line(e)}") from None
        self.execution_precision = str(self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string())
        if self.execution_precision != PRECISION_HINTS[self.precision_hint]:
            self._compiled = None
            raise PrecisionUnavailable(f"{self.name}: no bf16 hardware: OpenVINO compiled the model in "
                                       f"{self.execution_precision}, not {self.precision_hint}")
        self.device = "CPU"
        self.inputs = {}
        for port in self._compiled.inputs:
            shape = port.get_partial_shape()
            dims = tuple(d.get_length() if d.is_static else None for d in shape)
            name = port.get_any_name()
            self.inputs[name] = TensorSpec(name, port.get_element_type().to_dtype().name, dims)
        self.outputs = [port.get_any_name() for port in self._compiled.outputs]
        self._request = self._compiled.create_infer_request()
        self._core, self._config, self._static = core, config, {}
        # a static shape only where the batch alone is dynamic (our IRs: [?, H, W, 3])
        self._static_batch = bool(self.inputs) and all(
            len(s.shape) >= 2 and s.shape[0] is None and None not in s.shape[1:] for s in self.inputs.values())

    def _request_for(self, feed: dict[str, np.ndarray]) -> Any:
        """The infer request for `feed`: a static-shape one where its batch is in STATIC_BATCH_SIZES, the
        model's batch is dynamic and its other dimensions are static (compiled at first use), else the
        dynamic model's."""
        if not self._static_batch:
            return self._request
        shapes = tuple(sorted((name, tuple(value.shape)) for name, value in feed.items()))
        if {shape[0] for _, shape in shapes} - set(STATIC_BATCH_SIZES):
            return self._request
        if shapes not in self._static:
            try:
                model = self._core.read_model(str(self.path))
                model.reshape(dict(shapes))
                self._static[shapes] = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            except Exception:  # noqa: BLE001 -- the dynamic model runs this shape as before
                self._static[shapes] = None
        return self._static[shapes] or self._request

    def layer_profile(self, feed: dict[str, np.ndarray], runs: int = LAYER_PROFILE_RUNS) -> dict[str, Any]:
        """Where the time of one inference on `feed` goes, by OpenVINO's own per-layer counters
        (`PERF_COUNT`), on a copy of the model compiled for `feed`'s static shape with this runner's
        settings: each convolution's median time over `runs` runs and its kernel (`exec_type`, e.g.
        `brgconv_avx512_1x1_I8`), grouped by kernel size and output size, with the group's
        operations (2 x multiply-accumulates, from the IR's weight and output shapes) and rate;
        the other nodes' time together; and the convolutions whose kernel is not an integer one
        (`float_convolutions`: an "int8" IR that computes a convolution in float shows up here).
        The counters cost a little: `wall_ms` (median run with them on) is above the node sum."""
        import time
        if self._core is None:
            raise RunnerError(f"{self.name}: layer_profile needs a loaded runner (load() first)")
        model = self._core.read_model(str(self.path))
        model.reshape({name: value.shape for name, value in feed.items()})
        convs = {op.get_friendly_name(): _conv_ops(op) for op in model.get_ordered_ops()
                 if op.get_type_name() in ("Convolution", "GroupConvolution")}
        compiled = self._core.compile_model(model, "CPU", {**self._config, "PERF_COUNT": True})
        original: dict[str, str] = {}  # runtime node -> the IR convolution it runs
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "originalLayersNames" in info:
                hit = [n for n in info["originalLayersNames"].astype(str).split(",") if n in convs]
                if hit:
                    original[op.get_friendly_name()] = hit[0]
        request = compiled.create_infer_request()
        request.infer(feed)
        walls: list[float] = []
        times: dict[str, list[float]] = {}
        kernels: dict[str, str] = {}
        for _ in range(runs):
            start = time.perf_counter()
            request.infer(feed)
            walls.append(time.perf_counter() - start)
            for p in request.profiling_info:
                if str(p.status).endswith("EXECUTED"):
                    times.setdefault(p.node_name, []).append(p.real_time.total_seconds())
                    kernels[p.node_name] = p.exec_type
        groups: dict[str, dict[str, Any]] = {}
        other_ms = 0.0
        floats = []
        for node, values in times.items():
            ms = float(np.median(values)) * 1e3
            conv = original.get(node)
            if conv is None:
                other_ms += ms
                continue
            ops, kind = convs[conv]
            g = groups.setdefault(kind, {"group": kind, "layers": 0, "ms": 0.0, "gop": 0.0, "kernels": set()})
            g["layers"] += 1
            g["ms"] += ms
            g["gop"] += ops / 1e9
            g["kernels"].add(kernels[node])
            if not kernels[node].upper().endswith(("_I8", "_U8")):
                floats.append(f"{conv} ({kernels[node]})")
        rows = sorted(groups.values(), key=lambda g: -g["ms"])
        for g in rows:
            g.update(ms=round(g["ms"], 4), gop=round(g["gop"], 9), kernels=sorted(g["kernels"]),
                     gops=round(g["gop"] / (g["ms"] / 1e3), 1) if g["ms"] > 0 else None)
        return {"batch": int(next(iter(feed.values())).shape[0]), "runs": runs,
                "wall_ms": round(float(np.median(walls)) * 1e3, 3),
                "nodes_ms": round(sum(g["ms"] for g in rows) + other_ms, 3), "other_ms": round(other_ms, 3),
                "groups": rows, "float_convolutions": sorted(floats), "precision_hint": self.precision_hint,
                "threads": self.num_threads}

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            result = self._request_for(feed).infer(feed)  # copies the outputs (share_outputs=False)
        except Exception as e:  # noqa: BLE001 -- as above
            raise RunnerError(f"{self.name}: OpenVINO inference failed: {first_line(e)}") from None
        return {port.get_any_name(): np.asarray(value) for port, value in result.items()}

    def _close(self) -> None:
        self._request = None
        self._compiled = None
        self._static = {}
        self._core = None

