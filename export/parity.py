"""Parity: run every artifact on the reference's inputs and compare, output by output.

Per artifact and per output (`logits` and `probabilities`): max / mean / p99 absolute error,
max relative error, cosine similarity, top-1 and top-k agreement, NaN/Inf count. The
reference itself is checked first: a degenerate one (every photo the same class, or a
saturated softmax) fails the check instead of making parity pass trivially. Every failure is
collected (Optimum's validate_model_outputs style) and `bool(report)` is the verdict.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from export.errors import RunnerError

FORMAT_VERSION = 1
PHOTO_SATURATION = 0.99   # a softmax max above this on a photo counts as saturated ...
SATURATED_FRACTION = 0.5  # ... and the reference is saturated when more than half the photos are
REL_FLOOR = 1e-6          # relative error = |a - b| / max(|b|, REL_FLOOR) (reported, not judged)


@dataclass(frozen=True)
class Tolerance:
    """What an artifact must meet. None = not judged at this precision (still reported)."""

    logits_max_abs: float | None
    probabilities_max_abs: float | None
    min_cosine: float     # worst per-input cosine similarity of the logits
    min_top1: float       # fraction of inputs whose top-1 class matches the reference
    min_topk: float | None  # fraction whose top-k class set matches
    source: str = ""


# One table for every precision. The models' logits have std ~1 over the photos (weights.py
# CALIBRATED_LOGIT_STD), so absolute errors read as fractions of a logit's spread. Values were
# set from the errors measured on the three variants on 2 CPU cores (TF 2.21, ORT 1.32, LiteRT
# 2.3; see the comment on each), with a margin of ~10x, and the top-1 gates only let through
# a disagreement on inputs whose top-2 logits are closer than the measured error.
TOLERANCES: dict[str, Tolerance] = {
    # fp32 on a CPU: the same graph with another kernel library (Eigen, XNNPACK, MLAS); only
    # summation order differs. Measured max |logit diff| <= ~2e-5 (ResNet50, 53 convs), so
    # 1e-3 is tight; Polygraphy/Optimum defaults (1e-5) are for single layers, too tight here.
    "fp32": Tolerance(1e-3, 1e-4, 0.99999, 1.0, 1.0,
                      "fp32 CPU: summation-order noise measured <= ~2e-5 on logits; 1e-3 = margin"),
    # fp32 on a GPU: TF and ONNX Runtime run fp32 convolutions in TF32 by default on Ampere and
    # later (10-bit mantissa, ~1e-3 relative per op), as TF Serving would in production.
    "fp32-gpu": Tolerance(5e-2, 5e-3, 0.9995, 1.0, None,
                          "fp32 on GPU: TF32 matmul/conv (10-bit mantissa) by default in TF and ORT"),
    # fp16 weights (TFLite float16 quantization; XNNPACK dequantizes to fp32 at load): weight
    # rounding error 2^-11 relative; measured max |logit diff| ~1e-2.
    "fp16": Tolerance(1e-1, 2e-2, 0.999, 1.0, None,
                      "fp16 weights: 2^-11 relative rounding; measured logits error ~1e-2"),
    # Dynamic-range quantization (int8 weights, activations quantized per batch at run time):
    # judged by top-1 agreement and cosine, as TFLite's post-training quantization guide does.
    "dynamic": Tolerance(None, None, 0.98, 0.85, None,
                         "int8 weights + dynamic activations: judged by top-1 and cosine"),
    # Full-integer int8 (TFLite uint8 I/O, ONNX QDQ static): activations calibrated on the 12
    # photos with MinMax; noise and flat images fall outside that range, so looser still.
    "int8": Tolerance(None, None, 0.95, 0.75, None,
                      "int8 weights and activations (MinMax calibration on the photos): top-1 and cosine"),
}


def tolerance_key(precision: str, device: str) -> str:
    return "fp32-gpu" if precision == "fp32" and device.upper().startswith("GPU") else precision


# -- results ---------------------------------------------------------------------------------
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
    top1: float          # fraction of inputs with the reference's top-1 class
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
    status: str  # "passed" | "failed" | "skipped"
    reason: str = ""
    failures: list[str] = field(default_factory=list)
    metrics: list[OutputMetrics] = field(default_factory=list)
    mean_ms: dict[str, float] = field(default_factory=dict)  # per batch size, per call

    @property
    def label(self) -> str:
        return f"{self.key} @ {self.device_requested}" if self.device_requested != "CPU" else self.key

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
    tolerances: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {k: asdict(v) for k, v in TOLERANCES.items()})
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
        return out + [f"{r.label}: {f}" for r in self.results for f in r.failures]

    def __bool__(self) -> bool:
        c = self.counts()
        return c["passed"] > 0 and c["failed"] == 0 and all(ref.ok for ref in self.references)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = bool(self)
        d["summary"] = self.counts()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ParityReport":
        if d.get("format_version") != FORMAT_VERSION:
            raise RunnerError(f"parity report format_version {d.get('format_version')} is not {FORMAT_VERSION}")
        results = [ArtifactResult(**{**r, "metrics": [OutputMetrics(**m) for m in r["metrics"]]})
                   for r in d["results"]]
        return cls(environment=d["environment"], references=[ReferenceInfo(**r) for r in d["references"]],
                   results=results, tolerances=d["tolerances"], created=d["created"],
                   format_version=d["format_version"])

    def save(self, out_dir) -> tuple[Any, Any]:
        """Write `parity.json` and `parity.md` into `out_dir` (atomically); return both paths."""
        import json
        from pathlib import Path

        from export.atomic import ensure_writable_dir, write_text
        out = ensure_writable_dir(out_dir)
        write_text(out / "parity.json", json.dumps(self.to_dict(), indent=2))
        write_text(out / "parity.md", self.to_markdown())
        return Path(out / "parity.json"), Path(out / "parity.md")

    def to_markdown(self) -> str:
        return render_markdown(self)


# -- comparison ------------------------------------------------------------------------------
def top_k(num_classes: int) -> int | None:
    """k for the top-k agreement: 5, or classes - 1 for 3..5 classes, None (n/a) below that."""
    if num_classes > 5:
        return 5
    return num_classes - 1 if num_classes - 1 > 1 else None


def compare_output(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance, batch_size: int,
                   judge_ranking: bool) -> OutputMetrics:
    """Metrics for one output; `judge_ranking` applies the cosine/top-k gates (logits only)."""
    failures: list[str] = []
    got = np.asarray(got)
    if got.shape != ref.shape:
        return OutputMetrics(name, batch_size, float("inf"), float("inf"), float("inf"), float("inf"), 0.0,
                             0.0, None, None, 0, [f"{name}: shape {got.shape}, reference {ref.shape}"])
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    nonfinite = int((~np.isfinite(got64)).sum())
    if nonfinite:
        failures.append(f"{name}: {nonfinite} NaN/Inf values")
        got64 = np.nan_to_num(got64, nan=0.0, posinf=1e30, neginf=-1e30)
    diff = np.abs(got64 - ref64)
    rel = diff / np.maximum(np.abs(ref64), REL_FLOOR)
    norms = np.linalg.norm(ref64, axis=1) * np.linalg.norm(got64, axis=1)
    cos = np.where(norms > 0, (ref64 * got64).sum(axis=1) / np.where(norms > 0, norms, 1), 0.0)
    top1 = float(np.mean(ref64.argmax(1) == got64.argmax(1)))
    k = top_k(ref.shape[1])
    topk = None
    if k is not None:
        sets = lambda a: np.sort(np.argsort(-a, axis=1, kind="stable")[:, :k], axis=1)  # noqa: E731
        topk = float(np.mean(np.all(sets(ref64) == sets(got64), axis=1)))
    m = OutputMetrics(name, batch_size, float(diff.max()), float(diff.mean()), float(np.percentile(diff, 99)),
                      float(rel.max()), float(cos.min()), top1, topk, k, nonfinite, failures)
    limit = getattr(tol, f"{name}_max_abs", None)
    if limit is not None and m.max_abs > limit:
        failures.append(f"{name}: max abs error {m.max_abs:.3g} > {limit:g}")
    if judge_ranking:
        if m.cosine < tol.min_cosine:
            failures.append(f"{name}: cosine similarity {m.cosine:.6f} < {tol.min_cosine}")
        if m.top1 < tol.min_top1:
            failures.append(f"{name}: top-1 agreement {m.top1:.3f} < {tol.min_top1}")
        if tol.min_topk is not None and topk is not None and topk < tol.min_topk:
            failures.append(f"{name}: top-{k} agreement {topk:.3f} < {tol.min_topk}")
    return m


def check_reference(outputs: dict[str, np.ndarray], names: list[str], variant: str = "") -> tuple[list[str], list[int], int]:
    """Failures of a degenerate reference (non-finite, one class for every photo, saturated
    softmax), the photos' top-1 classes and how many photos are saturated."""
    from export.samples import PHOTO_NAMES
    failures = [f"{k}: reference has NaN/Inf" for k, v in outputs.items() if not np.all(np.isfinite(v))]
    rows = [i for i, n in enumerate(names) if n in PHOTO_NAMES] or list(range(len(names)))
    if "logits" not in outputs or "probabilities" not in outputs:
        return failures + [f"reference lacks logits/probabilities (has {sorted(outputs)})"], [], 0
    classes = [int(c) for c in outputs["logits"][rows].argmax(1)]
    saturated = int((outputs["probabilities"][rows].max(1) > PHOTO_SATURATION).sum())
    if len(rows) > 1 and len(set(classes)) == 1:
        failures.append(f"degenerate reference: all {len(rows)} photos get top-1 class {classes[0]}, "
                        "so top-1 agreement proves nothing (check the weights)")
    if saturated > SATURATED_FRACTION * len(rows):
        failures.append(f"saturated reference: softmax max > {PHOTO_SATURATION} on {saturated} of "
                        f"{len(rows)} photos, so probabilities agree trivially (check the weights)")
    return failures, classes, saturated


def run_batches(runner, inputs: np.ndarray, batch_size: int, input_name: str = "image") -> dict[str, np.ndarray]:
    """All of `inputs` through `runner`, `batch_size` rows per call, outputs concatenated."""
    chunks = [runner.infer({input_name: inputs[i:i + batch_size]}) for i in range(0, len(inputs), batch_size)]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def check_runner(runner, reference: dict[str, np.ndarray], inputs: np.ndarray, batch_sizes: Iterable[int], *,
                 key: str, variant: str, fmt: str, precision: str, path: str = "",
                 require_gpu: bool = False) -> ArtifactResult:
    """Load `runner`, run it at every batch size and compare; never raises for the artifact's faults.

    A runner asked for a GPU this machine lacks is "skipped: no GPU" (a failure with require_gpu).
    """
    from export.runtimes import DeviceUnavailable
    requested = getattr(runner, "requested_device", "CPU")
    result = ArtifactResult(key, variant, fmt, precision, path, runner.backend, requested, requested,
                            tolerance_key(precision, requested), "failed")
    try:
        runner.load()
    except DeviceUnavailable as e:
        result.device = f"unavailable ({str(e).split(': ', 1)[-1]})"
        if require_gpu:
            result.failures.append(f"GPU required but {str(e).split(': ', 1)[-1]}")
        else:
            result.status, result.reason = "skipped", "skipped: no GPU"
        return result
    except RunnerError as e:
        result.failures.append(f"cannot load: {e}")
        return result
    try:
        result.device = runner.device
        result.tolerance = tolerance_key(precision, runner.device)
        tol = TOLERANCES[result.tolerance]
        for b in batch_sizes:
            before = len(runner.inference_times)
            try:
                outputs = run_batches(runner, inputs, b)
            except RunnerError as e:
                result.failures.append(f"batch {b}: {e}")
                continue
            except Exception as e:  # a runtime that crashes on the artifact is a failed artifact
                result.failures.append(f"batch {b}: {type(e).__name__}: {str(e).strip().splitlines()[0]}")
                continue
            times = runner.inference_times[before:]
            result.mean_ms[str(b)] = round(1000 * float(np.mean(times)), 2)
            for name in sorted(reference):
                if name not in outputs:
                    result.failures.append(f"batch {b}: no output {name!r} (has {sorted(outputs)})")
                    continue
                m = compare_output(name, reference[name], outputs[name], tol, b, judge_ranking=name == "logits")
                result.metrics.append(m)
                result.failures += [f"batch {b}: {f}" for f in m.failures]
    finally:
        runner.close()
    result.status = "failed" if result.failures else "passed"
    return result


# -- the suite -------------------------------------------------------------------------------
#: Formats whose runtime can use a GPU: they get a second row on "GPU:0" (skipped without one).
GPU_FORMATS = ("savedmodel", "onnx")


def reference_info(golden, source: str, batch_sizes: list[int]) -> ReferenceInfo:
    failures, classes, saturated = check_reference(golden.outputs, golden.names, golden.variant)
    return ReferenceInfo(golden.variant, source, golden.meta.get("device", "CPU"), list(golden.names),
                         list(golden.inputs.shape[1:]), golden.inputs_sha256, list(batch_sizes),
                         int(golden.outputs["logits"].shape[1]) if "logits" in golden.outputs else 0,
                         classes, saturated, failures)


def check_artifacts(golden, artifacts: list, root, *, source: str, batch_sizes=(1, 4), gpu: bool = True,
                    require_gpu: bool = False, num_threads: int | None = None,
                    progress: Callable[[str], None] | None = None) -> tuple[ReferenceInfo, list[ArtifactResult]]:
    """The reference check and one result per artifact (plus a GPU row for GPU-capable formats)."""
    from export.runtimes import runner_for
    ref = reference_info(golden, source, list(batch_sizes))
    results = []
    for art in artifacts:
        devices = ["CPU", "GPU:0"] if gpu and art.format in GPU_FORMATS else ["CPU"]
        for device in devices:
            if progress:
                progress(f"{art.key} @ {device}")
            try:
                runner = runner_for(art, root, device=device, num_threads=num_threads)
            except RunnerError as e:
                results.append(ArtifactResult(art.key, art.variant, art.format, art.precision, art.path, "?",
                                              device, device, tolerance_key(art.precision, device), "failed",
                                              failures=[str(e)]))
                continue
            results.append(check_runner(runner, golden.outputs, golden.inputs, batch_sizes, key=art.key,
                                        variant=art.variant, fmt=art.format, precision=art.precision,
                                        path=str(art.path), require_gpu=require_gpu))
    return ref, results


def environment() -> dict[str, Any]:
    """Versions, CPU model and the GPUs each framework sees, for the report."""
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    packages = {}
    for pkg in ("tensorflow", "keras", "onnxruntime", "onnxruntime-gpu", "ai-edge-litert", "onnx", "tf2onnx",
                "numpy"):
        try:
            packages[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpu": cpu, "cpu_count": os.cpu_count(), "packages": packages}
    try:
        from export import import_tensorflow_quietly
        tf = import_tensorflow_quietly()
        gpus = tf.config.list_physical_devices("GPU")
        env["tensorflow_gpus"] = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                                  for g in gpus]
    except Exception as e:  # report, don't fail, when the probe itself breaks
        env["tensorflow_gpus"] = f"probe failed: {e}"
    try:
        import onnxruntime as ort
        env["onnxruntime_providers"] = ort.get_available_providers()
    except Exception as e:
        env["onnxruntime_providers"] = f"probe failed: {e}"
    env["gpu"] = bool(env["tensorflow_gpus"]) and isinstance(env["tensorflow_gpus"], list) or \
        "CUDAExecutionProvider" in (env["onnxruntime_providers"] or [])
    return env


def run_suite(root, artifacts: list, goldens: dict, *, sources: dict[str, str] | None = None,
              batch_sizes=(1, 4), gpu: bool = True, require_gpu: bool = False, num_threads: int | None = None,
              progress: Callable[[str], None] | None = None) -> ParityReport:
    """Every artifact (paths relative to `root`) against its variant's golden reference."""
    references, results = [], []
    for variant in sorted({a.variant for a in artifacts}):
        arts = [a for a in artifacts if a.variant == variant]
        ref, res = check_artifacts(goldens[variant], arts, root, source=(sources or {}).get(variant, "golden"),
                                   batch_sizes=batch_sizes, gpu=gpu, require_gpu=require_gpu,
                                   num_threads=num_threads, progress=progress)
        references.append(ref)
        results += res
    return ParityReport(environment=environment(), references=references, results=results)


# -- Markdown --------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}e}" if x and (abs(x) < 1e-2 or abs(x) >= 1e3) else f"{x:.{digits + 2}g}"


def _row(r: ArtifactResult) -> list[str]:
    if r.status == "skipped":
        return [r.label, r.backend, r.device_requested, r.tolerance] + ["-"] * 10 + [f"**{r.reason}**"]
    k = next((m.k for m in r.metrics if m.k), None)
    topk = r.worst("logits", "topk", lowest=True)
    ms = " / ".join(f"{r.mean_ms[b]:.1f}" for b in r.mean_ms) or "-"
    result = "pass" if r.status == "passed" else "**FAIL**"
    nonfinite = sum(m.nonfinite for m in r.metrics)
    return [r.label, r.backend, r.device, r.tolerance,
            _num(r.worst("logits", "max_abs")), _num(r.worst("logits", "mean_abs")),
            _num(r.worst("logits", "p99_abs")), _num(r.worst("logits", "max_rel")),
            _num(r.worst("logits", "cosine", lowest=True), 6) if r.metrics else "-",
            _num(r.worst("logits", "top1", lowest=True)),
            f"{_num(topk)} (k={k})" if k else "n/a", _num(r.worst("probabilities", "max_abs")),
            "none" if not nonfinite else f"**{nonfinite}**", f"{ms}" + (" " if r.mean_ms else ""), result]


def render_markdown(report: ParityReport, full: bool = True) -> str:
    """The report as Markdown: verdict, one table per variant (rows = artifacts), failures, and
    (when `full`) the tolerance table and the environment."""
    c = report.counts()
    verdict = "PASS" if report else "FAIL"
    lines = [f"# Parity report", "",
             f"**Verdict: {verdict}** - {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped "
             "(skipped rows are not passes). Metrics are against the Keras reference; the worst value over "
             "all inputs and batch sizes; cosine, top-1 and top-k are on the logits.", ""]
    header = ["Artifact", "Runtime", "Device", "Tolerance", "logits max abs", "logits mean abs",
              "logits p99 abs", "logits max rel", "logits cosine (min)", "top-1 agree", "top-k agree",
              "probs max abs", "NaN/Inf", "ms/call (batch " + "/".join(str(b) for b in
                                                                    (report.references[0].batch_sizes
                                                                     if report.references else [])) + ")",
              "Result"]
    for ref in report.references:
        n_photos = len(ref.photo_top1_classes)
        lines += [f"## {ref.variant}", "",
                  f"Reference: {ref.source}, on {ref.device}; {len(ref.inputs)} inputs "
                  f"({', '.join(ref.inputs)}), shape {ref.input_shape}, sha256 {ref.inputs_sha256[:12]}; "
                  f"batch sizes {', '.join(map(str, ref.batch_sizes))}; {ref.num_classes} classes.", "",
                  f"Reference check: **{'ok' if ref.ok else 'FAIL'}** - {len(set(ref.photo_top1_classes))} "
                  f"distinct top-1 classes over {n_photos} photos; softmax > {PHOTO_SATURATION} on "
                  f"{ref.saturated_photos} of {n_photos}.", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_row(r)) + " |" for r in report.results if r.variant == ref.variant]
        lines.append("")
    failures = report.failures()
    lines += ["## Failures", ""] + ([f"- {f}" for f in failures] or ["None."]) + [""]
    if not full:
        return "\n".join(lines)
    lines += ["## Tolerances", "", "| Name | logits max abs | probs max abs | min cosine | min top-1 | "
              "min top-k | Why |", "|---|---|---|---|---|---|---|"]
    for name, t in report.tolerances.items():
        lines.append(f"| {name} | {_num(t['logits_max_abs'])} | {_num(t['probabilities_max_abs'])} | "
                     f"{t['min_cosine']} | {t['min_top1']} | {_num(t['min_topk'])} | {t['source']} |")
    env = report.environment
    lines += ["", "## Environment", "", "| | |", "|---|---|"]
    for key in ("python", "platform", "cpu", "cpu_count", "tensorflow_gpus", "onnxruntime_providers"):
        lines.append(f"| {key} | {env.get(key, '')} |")
    for pkg, v in env.get("packages", {}).items():
        lines.append(f"| {pkg} | {v} |")
    devices = sorted({f"{r.backend}: {r.device}" for r in report.results})
    lines += [f"| runner devices | {'; '.join(devices)} |", f"| created | {report.created} |", ""]
    return "\n".join(lines)
