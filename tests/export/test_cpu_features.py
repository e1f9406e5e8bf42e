"""CPU feature detection from flag lists (fake ones, so every machine checks every case)."""
from __future__ import annotations

import pytest

from export.core import cpu_features

pytestmark = pytest.mark.unit

SAPPHIRE_RAPIDS = "fpu avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8 avx_vnni".split()
ZEN4 = "fpu avx2 avx512f avx512_bf16 avx512_vnni".split()
CASCADE_LAKE = "fpu avx2 avx512f avx512_vnni".split()
HASWELL = "fpu avx2 fma".split()


@pytest.mark.parametrize("flags,unit", [(SAPPHIRE_RAPIDS, "AMX-BF16"), (ZEN4, "AVX512-BF16"),
                                        (CASCADE_LAKE, None), (HASWELL, None), ([], None)])
def test_bf16_unit(flags, unit):
    assert cpu_features.bf16_unit(flags) == unit


def test_detect_and_describe():
    found = cpu_features.detect(SAPPHIRE_RAPIDS)
    assert found == {"AMX-BF16": True, "AMX-INT8": True, "AVX512-BF16": True, "AVX512-VNNI": True, "AVX-VNNI": True}
    assert cpu_features.describe(cpu_features.detect(ZEN4)) == (
        "AMX-BF16 no, AMX-INT8 no, AVX512-BF16 yes, AVX512-VNNI yes, AVX-VNNI no")
    assert cpu_features.describe(cpu_features.detect(None)).endswith("AVX-VNNI unknown")
    assert cpu_features.bf16_unit(None) is None


def test_cpu_flags_reads_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_features.cpu_flags(info) == frozenset({"fpu", "avx512_bf16", "amx_bf16"})
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert cpu_features.cpu_flags(tmp_path / "arm") == frozenset({"fp", "asimd", "bf16"})
    assert cpu_features.cpu_flags(tmp_path / "absent") is None
