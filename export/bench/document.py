"""bench.json: what `make bench` measured, as a versioned dataclass with a JSON round-trip
(like ParityReport and Manifest). The renderers (bench_report.py) read its `to_dict()` form.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from export.core.errors import BundleError

#: 2: paired timings of every artifact at every batch size, per-precision ceilings, `recommended`.
BENCH_FORMAT_VERSION = 2
#: `<out>/<name>-<version>.bench/`: where `resnet-deploy bench` writes a bundle's results.
BENCH_SUFFIX = ".bench"


def counted(n: int, noun: str) -> str:
    """`1 thread`, `2 threads`: a count and its noun, for bench.md's sentences."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def bench_dir(bundle: str | os.PathLike) -> Path:
    """The directory beside the bundle directory `bundle` that holds its bench.{json,md,png}."""
    root = Path(bundle).resolve()
    return root.with_name(root.name + BENCH_SUFFIX)


class RowStatus(StrEnum):
    MEASURED = "measured"
    FAILED = "failed"  # the artifact could not be loaded or run; `error` says why
    SKIPPED = "skipped"  # e.g. a bf16 row on a CPU without bf16 units; `skipped` says why (never a pass)


@dataclass
class BenchRow:
    """One artifact measured in a fresh process: latency per batch size, memory, top-1 agreement."""

    key: str
    variant: str
    format: str
    precision: str
    path: str
    bytes: int
    gflop_per_image: float
    error: str | None = None
    device: str | None = None
    load_s: float | None = None
    first_inference_s: float | None = None
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # batch -> p50, p90, ...
    peak_rss_mb: float | None = None
    rss_load_mb: float | None = None
    top1: dict[str, Any] | None = None
    load_1m: float | None = None
    wall_s: float | None = None
    #: from this row's own process: GFLOP/s at its best batch, and (rows held to the fp32 ceiling only)
    #: its % of the run's fp32 matmul; bench.md and the targets use the paired `pct_of_own_ceiling`
    achieved_gflops: float | None = None
    pct_of_ceiling: float | None = None
    achieved_at_batch: int | None = None
    speedup_vs_fp32: dict[str, Any] | None = None
    #: formats with registry bench_threads (.tflite): batch-1 latency per thread count ("1", "2")
    thread_sweep: dict[str, dict[str, Any]] | None = None
    #: The runner's precision hint (OpenVINO: f32, bf16; "" = none) and the row's unique name,
    #: `<key>@<hint>` (the key alone without a hint).
    precision_hint: str = ""
    label: str = ""
    skipped: str | None = None  # "skipped: no bf16 hardware"
    #: hint rows: per batch size, the fastest fp32 artifact of the variant in another format and
    #: this row's speed-up over it: {"baseline": {batch: key}, "by_batch": {batch: ratio}}
    speedup_vs_fastest_fp32: dict[str, Any] | None = None
    #: paired rounds (export.bench.paired): per batch size the p50, p25 and p75 of this row's times
    paired_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    #: per batch size, the SavedModel's paired time / this row's (median over the rounds)
    speedup_vs_savedmodel: dict[str, Any] | None = None
    #: the ceiling this row is held to (fp32, int8, bf16) and its achieved rate as a % of it
    ceiling_precision: str = ""
    pct_of_own_ceiling: float | None = None
    #: rows of run.LAYER_PROFILE: OpenVINO's per-layer counters at batch 1, grouped by kernel and output
    #: size (export.runtimes.openvino.OpenVINORunner.layer_profile)
    layer_profile: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.label = self.label or (f"{self.key}@{self.precision_hint}" if self.precision_hint else self.key)

    @property
    def status(self) -> RowStatus:
        if self.error:
            return RowStatus.FAILED
        return RowStatus.SKIPPED if self.skipped else RowStatus.MEASURED


@dataclass
class Recommendation:
    """Which file to deploy for one variant at one batch size (export.bench.recommend): the fastest
    row that passed parity and the accuracy gate, by the paired timings of this run."""

    variant: str
    batch: int
    label: str | None                      # the bench row (`<variant>/<format>_<precision>[@hint]`); None: none passed
    key: str = ""                          # its artifact
    format: str = ""
    precision: str = ""
    precision_hint: str = ""
    p50_ms: float | None = None            # paired p50 at this batch size
    speedup_vs_savedmodel: float | None = None  # median over the rounds of SavedModel time / this one's
    accuracy_drop_points: float | None = None   # the accuracy gate's charged drop; None: not judged
    serve_backend: str = ""                # `serve --backend` value
    serve_command: str = ""
    within_noise: list[str] = field(default_factory=list)  # faster-or-equal rows within noise of it
    excluded: dict[str, str] = field(default_factory=dict)  # rows left out, and why (parity, gate)
    note: str = ""


@dataclass
class BenchReport:
    bundle: str
    created_at: str
    environment: dict[str, Any]
    settings: dict[str, Any]
    ceiling: dict[str, Any]
    flops: dict[str, dict[str, float]]
    artifacts: list[BenchRow]
    export_timings: list[dict[str, Any]] = field(default_factory=list)
    export_total_s: float = 0.0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    paired: dict[str, Any] = field(default_factory=dict)          # variant -> batch-1 timings in turn
    serving: dict[str, Any] | None = None                          # the local server's load run
    export_run: dict[str, Any] | None = None                       # <bundle>.export.json
    targets: list[dict[str, Any]] = field(default_factory=list)    # export.bench.targets, judged on the above
    recommended: list[Recommendation] = field(default_factory=list)  # export.bench.recommend: the deploy choice
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = BENCH_FORMAT_VERSION

    def __bool__(self) -> bool:
        """True when no artifact failed (each was measured, or skipped for want of hardware) and the
        ceiling was measured too."""
        return all(r.status is not RowStatus.FAILED for r in self.artifacts) and not self.ceiling.get("error")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "artifacts")}
        d["artifacts"] = [_row_dict(r) for r in self.artifacts]
        d["recommended"] = [dataclasses.asdict(r) for r in self.recommended]
        d.update(self.extra)
        return {"format_version": d.pop("format_version"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "bench.json") -> BenchReport:
        if d.get("format_version") != BENCH_FORMAT_VERSION:
            raise BundleError(f"{source} has bench format {d.get('format_version')!r}, expected {BENCH_FORMAT_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        try:
            return cls(**{k: v for k, v in d.items() if k in known and k not in ("artifacts", "recommended")},
                       artifacts=[_row(r) for r in d.get("artifacts", [])],
                       recommended=[Recommendation(**r) for r in d.get("recommended", [])],
                       extra={k: v for k, v in d.items() if k not in known})
        except TypeError as e:
            raise BundleError(f"{source} is not a valid bench document ({e})") from None


def _row(d: dict[str, Any]) -> BenchRow:
    names = {f.name for f in dataclasses.fields(BenchRow)} - {"extra"}
    return BenchRow(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})


def _row_dict(r: BenchRow) -> dict[str, Any]:
    d = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "extra"}
    return {**d, **r.extra}
