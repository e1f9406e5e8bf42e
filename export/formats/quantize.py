"""ONNX int8: one quantize function whose scheme is a parameter, and the scheme chosen for this CPU.

ONNX Runtime's x86 int8 kernels multiply unsigned activations by signed weights (U8S8); signed
activations (S8S8) take a slower path. Measured on `dense` at batch 1 against ONNX fp32, the
artifacts run in turn in one process (median of the per-round ratios; AMD EPYC, Zen 4: AVX-512
VNNI and BF16, no AMX; ONNX Runtime 1.32; a shared machine, load average 2-4):

| scheme                      | 1 thread | 2 threads | top-1 vs fp32 on the 12 photos |
|-----------------------------|---------:|----------:|-------------------------------:|
| S8S8 QDQ per-channel (old)  |    1.30x |     1.38x | 10/12 |
| U8S8 QDQ per-channel        |    2.99x |     2.71x | 10/12 |
| U8S8 QDQ per-tensor         |        - |     2.39x |  9/12 |
| U8S8 QOperator per-channel  |    3.01x |     2.30x | 10/12 |
| U8S8 QOperator per-tensor   |        - |     2.32x |  9/12 |

So the default is U8S8 QDQ per-channel, the QDQ form OpenVINO and TensorRT read too. On an x86
CPU without an int8 dot-product instruction (VNNI / AMX), U8S8 pairs products in 16 bits and can
saturate, so weights keep 7 bits there (`reduce_range`, as ONNX Runtime's guide advises).
"""
from __future__ import annotations

import platform
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.core.cpu_features import cpu_flags, describe, detect
from export.core.errors import UsageError

FORMATS = ("QDQ", "QOperator")
TYPES = ("uint8", "int8")
CALIBRATIONS = ("MinMax", "Entropy", "Percentile")


@dataclass(frozen=True)
class QuantScheme:
    """How to quantize: ONNX Runtime's quantize_static options, named as they are in its docs."""

    format: str = "QDQ"             # QDQ (QuantizeLinear/DequantizeLinear pairs) or QOperator (QLinearConv...)
    activations: str = "uint8"      # uint8 = U8S8 with int8 weights
    weights: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False      # 7-bit weights, for x86 without VNNI
    calibration: str = "MinMax"
    reason: str = ""
    nodes_to_exclude: tuple[str, ...] = ()  # kept in float (export.quality.repair_onnx picks them by per-layer error)

    def __post_init__(self) -> None:
        for name, value, allowed in (("format", self.format, FORMATS), ("activations", self.activations, TYPES),
                                     ("weights", self.weights, TYPES), ("calibration", self.calibration, CALIBRATIONS)):
            if value not in allowed:
                raise UsageError(f"quantization {name} {value!r}: choose one of {', '.join(allowed)}")

    @property
    def name(self) -> str:
        """A short label such as `U8S8 QDQ per-channel`."""
        a, w = ("U8" if self.activations == "uint8" else "S8"), ("U8" if self.weights == "uint8" else "S8")
        return (f"{a}{w} {self.format} {'per-channel' if self.per_channel else 'per-tensor'}"
                + (" reduce_range" if self.reduce_range else "")
                + (f" {self.calibration}" if self.calibration != "MinMax" else "")
                + (f", {len(self.nodes_to_exclude)} nodes in float" if self.nodes_to_exclude else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{**asdict(self), "nodes_to_exclude": list(self.nodes_to_exclude)}}


def int8_dot(features: dict[str, bool | None]) -> bool | None:
    """An int8 dot-product unit (AVX512-VNNI, AVX-VNNI or AMX-INT8): u8 x s8 products summed in 32
    bits; without one, x86 kernels pair them in 16 bits (vpmaddubsw), which can saturate unless
    weights keep 7 bits (reduce_range). None when the flags are unknown."""
    units = [features.get(u) for u in ("AVX512-VNNI", "AVX-VNNI", "AMX-INT8")]
    return None if all(u is None for u in units) else any(bool(u) for u in units)


def scheme_for(flags: Iterable[str] | None = None, machine: str | None = None) -> QuantScheme:
    """The scheme for a CPU (default: this one, from /proc/cpuinfo): U8S8 QDQ per-channel, with
    reduce_range on x86 without an int8 dot-product unit (see the module's table)."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    features = detect(flags)
    has_dot = int8_dot(features)
    if machine in ("x86_64", "amd64", "i686", "i386") and has_dot is False:
        return QuantScheme(reduce_range=True,
                           reason="x86 without VNNI/AMX-INT8: U8S8 with 7-bit weights avoids 16-bit "
                                  f"saturation in vpmaddubsw ({describe(features)})")
    return QuantScheme(reason=f"U8S8 is ONNX Runtime's fast int8 path ({machine}; {describe(features)})")


def cpu_record(flags: Iterable[str] | None = None) -> dict[str, Any]:
    """What the artifact record says of the CPU the scheme was chosen on."""
    features = detect(cpu_flags() if flags is None else flags)
    return {"machine": platform.machine(), "features": features, "int8_dot": int8_dot(features)}


class PhotoReader:
    """onnxruntime.quantization CalibrationDataReader over calibration images, one at a time.

    Supports ORT's strided calibration (`__len__`, `set_range`), so MinMax statistics are
    reduced one image at a time instead of keeping every intermediate tensor of every image.
    """

    def __init__(self, images: np.ndarray, input_name: str = "image") -> None:
        self._feeds = [{input_name: images[i:i + 1]} for i in range(len(images))]
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._feeds[start_index:end_index])

    def get_next(self):
        return next(self._it, None)


def quantize_int8(fp32_path: str | Path, path: str | Path, images: np.ndarray,
                  scheme: QuantScheme | None = None) -> QuantScheme:
    """Statically quantize the ONNX model at `fp32_path` into `path`, calibrated on `images`
    (float32 NHWC), with `scheme` (default: scheme_for this CPU). Returns the scheme used."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    scheme = scheme or scheme_for()
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=".onnx-int8.", suffix=".partial", dir=path.parent) as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(path), PhotoReader(images),
                        quant_format=QuantFormat.QDQ if scheme.format == "QDQ" else QuantFormat.QOperator,
                        per_channel=scheme.per_channel, reduce_range=scheme.reduce_range,
                        activation_type=qtype[scheme.activations], weight_type=qtype[scheme.weights],
                        calibrate_method=getattr(CalibrationMethod, scheme.calibration),
                        nodes_to_exclude=list(scheme.nodes_to_exclude) or None,
                        # One image at a time for every method: ORT's loop over the reader's ranges
                        # feeds any calibrator incrementally (histograms merge), so Percentile and
                        # Entropy do not hold every intermediate tensor of every image at once.
                        extra_options={"CalibStridedMinMax": 1})
    return scheme

