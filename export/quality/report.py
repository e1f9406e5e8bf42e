"""The parity report: what a run measured, as dataclasses that round-trip through JSON
(`parity.json`, versioned like Model Navigator's status files), rendered as `parity.md`.

Rows are artifacts (one per runtime, device and precision hint), columns the metrics; a GPU row
on a machine without a GPU reads "skipped: no GPU", a bf16 row on a CPU without bf16 units
"skipped: no bf16 hardware", and neither is ever counted as a pass.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from export.core.errors import RunnerError
from export.quality.accuracy import AccuracySection, render_accuracy

FORMAT_VERSION = 1


class Status(StrEnum):
    """The verdict of one row. A StrEnum: it is its string in JSON and compares equal to it."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"  # e.g. a GPU row without a GPU: never counted as a pass
#: A softmax max above this on a photo counts as saturated (see parity.check_reference).
PHOTO_SATURATION = 0.99


@dataclass
class OutputMetrics:
    """One output of one artifact at one batch size, against the reference."""

    output: str
    batch_size: int
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    cosine: float        # worst (lowest) per-input cosine similarity
    mean_cosine: float   # mean over inputs of the per-input cosine similarity
    top1: float          # fraction of inputs with the reference's top-1 class
    decisive: int        # inputs whose reference top-1 leads by more than the tolerance's margin
    topk: float | None   # fraction whose top-k class set matches (None: n/a for few classes)
    k: int | None
    nonfinite: int       # NaN or Inf values in the artifact's output
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class ArtifactResult:
    """One artifact on one runtime and device: passed, failed or skipped (with the reason)."""

    key: str
    variant: str
    format: str
    precision: str
    path: str
    backend: str
    device_requested: str
    device: str
    tolerance: str
    status: Status
    reason: str = ""
    failures: list[str] = field(default_factory=list)
    metrics: list[OutputMetrics] = field(default_factory=list)
    mean_ms: dict[str, float] = field(default_factory=dict)  # per batch size, per call
    precision_hint: str = ""  # the runner's precision hint (OpenVINO: f32 or bf16); "" = none

    @property
    def label(self) -> str:
        """The key, plus `@ GPU:0` on a GPU row and `@ bf16` on a precision-hint row."""
        where = [self.device_requested] if self.device_requested != "CPU" else []
        return " @ ".join([self.key, *where, *([self.precision_hint] if self.precision_hint else [])])

    def worst(self, output: str, attr: str, lowest: bool = False) -> float | None:
        values = [getattr(m, attr) for m in self.metrics if m.output == output and getattr(m, attr) is not None]
        if not values:
            return None
        return min(values) if lowest else max(values)


@dataclass
class ReferenceInfo:
    """Where a variant's reference outputs came from, the inputs, and the reference's own check."""

    variant: str
    source: str
    device: str
    inputs: list[str]
    input_shape: list[int]
    inputs_sha256: str
    batch_sizes: list[int]
    num_classes: int
    photo_top1_classes: list[int]
    saturated_photos: int
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class ParityReport:
    """Everything a parity run measured; `bool(report)` is the verdict (skips are not passes)."""

    environment: dict[str, Any]
    references: list[ReferenceInfo]
    results: list[ArtifactResult]
    tolerances: dict[str, dict[str, Any]] = field(default_factory=dict)  # the table used, by name
    accuracy: list[AccuracySection] = field(default_factory=list)  # the accuracy gate, per variant with an eval set
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    format_version: int = FORMAT_VERSION

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "skipped": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def failures(self) -> list[str]:
        """Every failure, each prefixed with what failed."""
        out = [f"{ref.variant}/reference: {f}" for ref in self.references for f in ref.failures]
        out += [f"{r.label}: {f}" for r in self.results for f in r.failures]
        return out + [f for section in self.accuracy for f in section.failures()]

    def __bool__(self) -> bool:
        c = self.counts()
        return (c["passed"] > 0 and c["failed"] == 0 and all(ref.ok for ref in self.references)
                and not any(section.failures() for section in self.accuracy))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = bool(self)
        d["summary"] = self.counts()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParityReport:
        if d.get("format_version") != FORMAT_VERSION:
            raise RunnerError(f"parity report format_version {d.get('format_version')} is not {FORMAT_VERSION}")
        results = [ArtifactResult(**{**r, "status": Status(r["status"]),
                                     "metrics": [OutputMetrics(**m) for m in r["metrics"]]})
                   for r in d["results"]]
        return cls(environment=d["environment"], references=[ReferenceInfo(**r) for r in d["references"]],
                   results=results, tolerances=d["tolerances"], created=d["created"],
                   accuracy=[AccuracySection.from_dict(a) for a in d.get("accuracy", [])],
                   format_version=d["format_version"])

    def save(self, out_dir) -> tuple[Any, Any]:
        """Write `parity.json` and `parity.md` into `out_dir` (atomically); return both paths."""
        import json
        from pathlib import Path

        from export.core.atomic import ensure_writable_dir, write_text
        out = ensure_writable_dir(out_dir)
        write_text(out / "parity.json", json.dumps(self.to_dict(), indent=2))
        write_text(out / "parity.md", self.to_markdown())
        return Path(out / "parity.json"), Path(out / "parity.md")

    def to_markdown(self) -> str:
        return render_markdown(self)



# -- Markdown --------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}e}" if x and (abs(x) < 1e-2 or abs(x) >= 1e3) else f"{x:.{digits + 2}g}"


def _cos(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6f}" if x > 0.999 else f"{x:.4f}"


HEADER = ["Artifact", "Runtime", "Device", "Tolerance", "logits max abs", "logits mean abs", "logits p99 abs",
          "logits max rel", "logits cosine mean (min)", "top-1 agree (decisive)", "top-k agree", "probs max abs",
          "NaN/Inf", "ms/call", "Result"]


def _row(r: ArtifactResult) -> list[str]:
    if r.status == "skipped":
        return [r.label, r.backend, r.device_requested, r.tolerance] + ["-"] * 10 + [f"**{r.reason}**"]
    result = "pass" if r.status == "passed" else "**FAIL**"
    if not r.metrics:
        return [r.label, r.backend, r.device, r.tolerance] + ["-"] * 10 + [result]
    k = next((m.k for m in r.metrics if m.k), None)
    decisive = min((m.decisive for m in r.metrics if m.output == "logits"), default=0)
    nonfinite = sum(m.nonfinite for m in r.metrics)
    ms = " / ".join(f"{v:.1f} (b{b})" for b, v in r.mean_ms.items()) or "-"
    return [r.label, r.backend, r.device, r.tolerance,
            _num(r.worst("logits", "max_abs")), _num(r.worst("logits", "mean_abs")),
            _num(r.worst("logits", "p99_abs")), _num(r.worst("logits", "max_rel")),
            f"{_cos(r.worst('logits', 'mean_cosine', lowest=True))} ({_cos(r.worst('logits', 'cosine', lowest=True))})",
            f"{_num(r.worst('logits', 'top1', lowest=True))} ({decisive} decisive)",
            f"{_num(r.worst('logits', 'topk', lowest=True))} (k={k})" if k else "n/a",
            _num(r.worst("probabilities", "max_abs")), "none" if not nonfinite else f"**{nonfinite}**", ms, result]


def render_markdown(report: ParityReport, full: bool = True) -> str:
    """The report as Markdown: verdict, one table per variant (rows = artifacts), failures, and
    (when `full`) the tolerance table and the environment."""
    c = report.counts()
    lines = ["# Parity report", "",
             f"**Verdict: {'PASS' if report else 'FAIL'}** - {c['passed']} passed, {c['failed']} failed, "
             f"{c['skipped']} skipped (a skipped row is not a pass). Each metric is the worst over every input "
             "and batch size, against the Keras reference; cosine, top-1 and top-k are on the logits.", ""]
    for ref in report.references:
        n_photos = len(ref.photo_top1_classes)
        lines += [f"## {ref.variant}", "",
                  f"Reference: Keras on {ref.device}, from {ref.source}. {len(ref.inputs)} inputs "
                  f"({', '.join(ref.inputs)}), each {ref.input_shape}, sha256 {ref.inputs_sha256[:12]}; "
                  f"batch sizes {', '.join(map(str, ref.batch_sizes))}; {ref.num_classes} classes.", "",
                  f"Reference check: **{'ok' if ref.ok else 'FAIL'}** - {len(set(ref.photo_top1_classes))} "
                  f"distinct top-1 classes over {n_photos} photos; softmax > {PHOTO_SATURATION} on "
                  f"{ref.saturated_photos} of {n_photos}.", "",
                  "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(_row(r)) + " |" for r in report.results if r.variant == ref.variant]
        lines.append("")
    if report.accuracy:
        lines += render_accuracy(report.accuracy)
    failures = report.failures()
    lines += ["## Failures", ""] + ([f"- {f}" for f in failures] or ["None."]) + [""]
    if not full:
        return "\n".join(lines)
    lines += ["## Tolerances", "",
              "Every logit within atol + rtol*|ref|; every probability within its atol; mean cosine at least "
              "the minimum; every decisive input (reference top-1 ahead by more than the margin) keeps its "
              "class, and top-1 agreement over all inputs at least the minimum.", "",
              "| Name | logits atol | logits rtol | probs atol | min mean cosine | top-1 margin | min top-1 | "
              "Where the values come from |", "|---|---|---|---|---|---|---|---|"]
    for name, t in report.tolerances.items():
        lines.append(f"| {name} | {_num(t['logits_atol'])} | {_num(t['logits_rtol'])} | "
                     f"{_num(t['probabilities_atol'])} | {t['min_mean_cosine']} | {t['top1_margin']} | "
                     f"{t['min_top1']} | {t['source']} |")
    env = report.environment
    lines += ["", "## Environment", "", "| | |", "|---|---|"]
    for key in ("python", "platform", "cpu", "cpu_count", "cpu_features", "tensorflow_gpus", "onnxruntime_providers"):
        lines.append(f"| {key} | {env.get(key, '')} |")
    for pkg, v in env.get("packages", {}).items():
        lines.append(f"| {pkg} | {v} |")
    devices = sorted({f"{r.backend}: {r.device}" for r in report.results})
    lines += [f"| runner devices | {'; '.join(devices)} |", f"| created | {report.created} |", ""]
    return "\n".join(lines)
