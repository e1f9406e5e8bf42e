"""The CPU's matrix and dot-product units, read from the flags the kernel reports.

bf16 inference is fast only on CPUs with bf16 hardware (AMX-BF16 tiles or AVX512-BF16
dot products); int8 uses VNNI (AVX512-VNNI or AVX-VNNI) or AMX-INT8. The bench header and
the OpenVINO runner's bf16 setting both read these, so a machine without the units gets a
"skipped: no bf16 hardware" row instead of a slow emulated one or a silent f32 fallback.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

#: Reported feature -> the /proc/cpuinfo flags that provide it (any of them).
FEATURES: dict[str, tuple[str, ...]] = {
    "AMX-BF16": ("amx_bf16",),
    "AMX-INT8": ("amx_int8",),
    "AVX512-BF16": ("avx512_bf16",),
    "AVX512-VNNI": ("avx512_vnni",),
    "AVX-VNNI": ("avx_vnni",),
}
#: The features that make bf16 inference fast, best first.
BF16_UNITS = ("AMX-BF16", "AVX512-BF16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU flags of the first processor in `cpuinfo`, or None where there is no such file
    (not Linux): callers then fall back to what the runtime itself reports."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def detect(flags: Iterable[str] | None) -> dict[str, bool | None]:
    """{feature: present} for every entry of FEATURES; None values when flags are unknown."""
    if flags is None:
        return {name: None for name in FEATURES}
    have = set(flags)
    return {name: any(f in have for f in wanted) for name, wanted in FEATURES.items()}


def bf16_unit(flags: Iterable[str] | None) -> str | None:
    """The best bf16 unit among `flags` ("AMX-BF16", "AVX512-BF16"), or None without one."""
    found = detect(flags)
    return next((u for u in BF16_UNITS if found[u]), None)


def describe(features: dict[str, bool | None]) -> str:
    """"AMX-BF16 no, AVX512-BF16 yes, ..." for reports ("unknown" where not detected)."""
    word = {True: "yes", False: "no", None: "unknown"}
    return ", ".join(f"{name} {word[value]}" for name, value in features.items())
