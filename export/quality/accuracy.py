"""Labeled evaluation and the accuracy gate: top-1 accuracy of every artifact on a labeled eval set,
its drop from the Keras reference's accuracy (with a confidence interval), and the per-precision
threshold the drop must stay within.

The drop is measured against the reference on the same images (paired): an image the reference
classifies right and the artifact wrong costs 100/N points, the reverse gives them back. Only
images the reference *decides* are charged: its top-1 ahead of the runner-up by more than the
precision's numerical noise, the parity table's top-1 margin (NOISE_MARGIN: fp32 1e-3 logits,
fp16 0.2, dynamic 0.5, int8 1.0, each measured there). Flips inside that margin are reported,
not charged. So a 0-point fp32 gate fails on a single decided image flipped to wrong, never on a
summation-order coin toss; and on the 40-image demo eval sets, where one image is 2.5 points,
an int8 model is not failed for one borderline image while one calibrated on noise still is.

Small eval sets are noisy: one image of 40 is 2.5 points. The report gives a 95% binomial
(Wilson) interval for each accuracy and a conservative 95% interval for each paired drop. The
gate judges the point estimate, as the thresholds are stated; the intervals say how much a number
can be trusted. No TensorFlow here (the runners bring their own runtimes).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from export.core.errors import UsageError

#: The default gate, in accuracy points the artifact may lose against the reference, per precision.
DEFAULT_MAX_DROP: dict[str, float] = {"fp32": 0.0, "fp16": 0.5, "dynamic": 1.0, "int8": 2.0}
#: Per precision, a reference top-1 ahead of the runner-up by at most this many logits is within the
#: precision's numerical noise: a flip there is reported, not charged. The parity table's top1_margin
#: (export.quality.parity.TOLERANCES, where each is measured; a test keeps the two equal).
NOISE_MARGIN: dict[str, float] = {"fp32": 1e-3, "fp16": 0.2, "dynamic": 0.5, "int8": 1.0}
CONFIDENCE = 0.95
ON_FAIL = ("fail", "drop")


class GateStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"    # fails the bundle (or the parity command)
    DROPPED = "dropped"  # failed, and left out of the bundle (on_accuracy_fail = "drop")


# -- thresholds --------------------------------------------------------------------------------

def _points(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UsageError(f"{what}: {value!r} is not a number of accuracy points; write e.g. int8=2 (points, >= 0)")
    try:
        points = float(value)
    except ValueError:
        raise UsageError(f"{what}: {value!r} is not a number of accuracy points; write e.g. int8=2 (points, >= 0)") \
            from None
    if not 0 <= points <= 100 or points != points:
        raise UsageError(f"{what}: {value!r} must be between 0 and 100 accuracy points")
    return points


def _precision(name: str, what: str) -> str:
    if name not in DEFAULT_MAX_DROP:
        raise UsageError(f"{what}: unknown precision {name!r}; choose from {', '.join(DEFAULT_MAX_DROP)}")
    return name


def max_drop_from_table(table: Any, where: str, base: dict[str, float] | None = None) -> dict[str, float]:
    """A config's `max_accuracy_drop = {int8 = 2, ...}` over `base` (default: DEFAULT_MAX_DROP)."""
    if not isinstance(table, dict):
        raise UsageError(f"{where}: max_accuracy_drop must be a table, e.g. max_accuracy_drop = {{ int8 = 2 }}")
    out = dict(base or DEFAULT_MAX_DROP)
    for name, value in table.items():
        what = f"{where}: max_accuracy_drop.{name}"
        out[_precision(name, what)] = _points(value, what)
    return out


def parse_max_drop(items: list[str] | None, base: dict[str, float] | None = None) -> dict[str, float]:
    """`--max-accuracy-drop PRECISION=POINTS` (repeatable) over `base` (default: DEFAULT_MAX_DROP)."""
    out = dict(base or DEFAULT_MAX_DROP)
    for item in items or []:
        what = f"--max-accuracy-drop {item!r}"
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{what}: write PRECISION=POINTS, e.g. int8=2")
        out[_precision(name.strip(), what)] = _points(value.strip(), what)
    return out


def check_on_fail(value: Any, where: str) -> str:
    if value not in ON_FAIL:
        raise UsageError(f"{where}: on_accuracy_fail must be \"fail\" (the bundle is not published) or \"drop\" "
                         f"(the artifact is left out), got {value!r}")
    return str(value)


# -- statistics --------------------------------------------------------------------------------

def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion k/n (scipy's binomtest)."""
    from scipy.stats import binomtest
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _exact(k: int, n: int, confidence: float) -> tuple[float, float]:
    from scipy.stats import binomtest
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)


def paired_drop_interval(worse: int, better: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A conservative interval (points) for the paired drop (worse - better) / n.

    The drop is d * (2p - 1), d the share of images the two disagree on and p the share of those
    the artifact gets wrong; each gets an exact (Clopper-Pearson) interval at the split confidence
    and the interval spans every combination. With no disagreement at all it is +-100*d_upper
    (+-10.4 points for 40 images), not a falsely certain 0.
    """
    if n == 0:
        return -100.0, 100.0
    split = 1 - (1 - confidence) / 2
    discordant = worse + better
    d_lo, d_hi = _exact(discordant, n, split)
    p_lo, p_hi = _exact(worse, discordant, split) if discordant else (0.0, 1.0)
    corners = [d * (2 * p - 1) for d in (d_lo, d_hi) for p in (p_lo, p_hi)]
    return round(100 * min(corners), 2), round(100 * max(corners), 2)


# -- results -----------------------------------------------------------------------------------

@dataclass
class ClassAccuracy:
    images: int
    correct: int
    accuracy: float


@dataclass
class Scored:
    """Top-1 accuracy of one model on the eval set, with its interval and per-class accuracy."""

    images: int
    correct: int
    accuracy: float
    accuracy_ci: list[float]
    per_class: dict[str, ClassAccuracy]


def score(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Scored:
    pred = np.asarray(logits).argmax(1)
    right = pred == labels
    per_class = {}
    for c, name in enumerate(class_names):
        mine = labels == c
        n, k = int(mine.sum()), int(right[mine].sum())
        per_class[name] = ClassAccuracy(n, k, round(k / n, 4) if n else 0.0)
    n, k = len(labels), int(right.sum())
    lo, hi = wilson(k, n)
    return Scored(n, k, round(k / n, 4) if n else 0.0, [round(lo, 4), round(hi, 4)], per_class)


@dataclass
class AccuracyResult:
    """One artifact (on one runtime row) on the eval set, against the reference, and the gate's verdict."""

    key: str
    label: str
    variant: str
    format: str
    precision: str
    scored: Scored
    reference_accuracy: float
    drop_points: float           # charged drop: (decided images flipped to wrong - to right) / N, in points
    drop_ci: list[float]         # conservative 95% interval of the paired drop, points
    agreement: float             # share of eval images with the reference's top-1 class
    flips_to_wrong: int
    flips_to_right: int
    ties: int                    # images within the precision's noise margin (flips there not charged)
    max_drop: float
    status: GateStatus
    failure: str = ""
    remedy: str = ""             # the int8 repair that made it pass (export.quality.repair_onnx), if one fired
    note: str = ""               # how it was judged when not by running it (bit-close fp32: see judge_bit_close)

    @property
    def passed(self) -> bool:
        return self.status != GateStatus.FAILED


def judge(key: str, label: str, variant: str, fmt: str, precision: str, logits: np.ndarray,
          reference_logits: np.ndarray, labels: np.ndarray, class_names: list[str],
          max_drop: dict[str, float]) -> AccuracyResult:
    """Score `logits` on the eval set and judge its drop from `reference_logits` against max_drop[precision]."""
    ref = np.asarray(reference_logits, dtype=np.float64)
    got = np.asarray(logits, dtype=np.float64)
    scored = score(got, labels, class_names)
    ref_right, got_right = ref.argmax(1) == labels, got.argmax(1) == labels
    ordered = np.sort(ref, axis=1)
    margin = NOISE_MARGIN.get(precision, NOISE_MARGIN["fp32"])
    tie = (ordered[:, -1] - ordered[:, -2] <= margin) if ref.shape[1] > 1 else np.zeros(len(ref), bool)
    worse, better = ref_right & ~got_right, ~ref_right & got_right
    n = len(labels)
    charged = int((worse & ~tie).sum()) - int((better & ~tie).sum())
    drop = round(100 * charged / n, 2) if n else 0.0
    limit = max_drop.get(precision, DEFAULT_MAX_DROP.get(precision, 0.0))
    ref_acc = float(ref_right.mean()) if n else 0.0
    result = AccuracyResult(
        key, label, variant, fmt, precision, scored, round(ref_acc, 4), drop,
        list(paired_drop_interval(int(worse.sum()), int(better.sum()), n)),
        round(float(np.mean(ref.argmax(1) == got.argmax(1))), 4) if n else 0.0,
        int(worse.sum()), int(better.sum()), int(tie.sum()), limit, GateStatus.PASSED)
    if drop > limit + 1e-9:
        result.status = GateStatus.FAILED
        result.failure = (f"accuracy {scored.accuracy:.3f} is {drop:g} points below the reference's {ref_acc:.3f} "
                          f"on {n} eval images ({int(worse.sum())} flipped to wrong, {int(better.sum())} to right, "
                          f"counting those decided by more than {margin:g} logits); {precision} may lose at most "
                          f"{limit:g}")
    return result


@dataclass
class AccuracySection:
    """A variant's eval set, the reference's accuracy on it, and every artifact's AccuracyResult."""

    variant: str
    eval_set: dict[str, Any]
    reference: Scored
    max_drop: dict[str, float]
    results: list[AccuracyResult] = field(default_factory=list)

    def failures(self) -> list[str]:
        return [f"{r.label}: {r.failure}" for r in self.results if r.status == GateStatus.FAILED]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AccuracySection:
        return cls(d["variant"], d["eval_set"], _scored(d["reference"]), d["max_drop"],
                   [result_from_dict(r) for r in d["results"]])


def _scored(d: dict[str, Any]) -> Scored:
    return Scored(**{**d, "per_class": {k: ClassAccuracy(**v) for k, v in d["per_class"].items()}})


# -- evaluation with the runners ---------------------------------------------------------------

def logits_of(runner, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """The logits of every eval image (uint8 or float pixels) through a loaded runner."""
    chunks = [runner.infer({"image": images[i:i + batch_size].astype(np.float32)})["logits"]
              for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks) if chunks else np.empty((0, 0), np.float32)


#: An fp32 artifact whose parity logits are within this of the reference's (max abs, on the golden
#: inputs at every batch size) is not run on the eval set again: a tenth of fp32's noise margin, so
#: no image the reference decides can flip, and its eval answers are the reference's.
BIT_CLOSE_LOGITS = NOISE_MARGIN["fp32"] / 10


def judge_bit_close(key: str, label: str, variant: str, fmt: str, precision: str, max_abs: float,
                    reference_logits: np.ndarray, labels: np.ndarray, class_names: list[str],
                    max_drop: dict[str, float]) -> AccuracyResult:
    """The gate's result for an fp32 artifact that parity found bit-close to the reference (its
    largest logit error `max_abs` <= BIT_CLOSE_LOGITS): scored with the reference's own eval logits,
    and the report says it was not re-evaluated and why."""
    result = judge(key, label, variant, fmt, precision, reference_logits, reference_logits, labels, class_names,
                   max_drop)
    result.note = (f"not re-evaluated: parity max |logit error| {max_abs:.1e} <= {BIT_CLOSE_LOGITS:g} "
                   "(bit-close), so its answers are the reference's")
    return result


def evaluate_artifacts(artifacts: list, root, eval_images: np.ndarray, labels: np.ndarray, class_names: list[str],
                       reference_logits: np.ndarray, max_drop: dict[str, float],
                       num_threads: int | None = None) -> list[AccuracyResult]:
    """Every artifact (CPU; OpenVINO at its default f32 hint) on the eval set, judged against the reference.
    An artifact that cannot load or run fails the gate with the runtime's message."""
    from export.core.errors import first_line
    from export.runtimes import runner_for
    results = []
    for art in artifacts:
        try:
            with runner_for(art, root, device="CPU", num_threads=num_threads) as runner:
                logits = logits_of(runner, eval_images)
        except Exception as e:  # noqa: BLE001 -- a runtime that cannot run the artifact fails its gate
            results.append(_unrunnable(art, labels, class_names, reference_logits, max_drop, first_line(e)))
            continue
        results.append(judge(art.key, art.key, art.variant, art.format, art.precision, logits, reference_logits,
                             labels, class_names, max_drop))
    return results


def _unrunnable(art, labels, class_names, reference_logits, max_drop, why: str) -> AccuracyResult:
    wrong = np.zeros_like(reference_logits)
    wrong[np.arange(len(labels)), (labels + 1) % max(len(class_names), 1)] = 1.0
    r = judge(art.key, art.key, art.variant, art.format, art.precision, wrong, reference_logits, labels,
              class_names, max_drop)
    r.status, r.failure = GateStatus.FAILED, f"cannot evaluate: {why}"
    return r


def asdict_result(result: AccuracyResult) -> dict[str, Any]:
    return asdict(result)


def result_from_dict(d: dict[str, Any]) -> AccuracyResult:
    return AccuracyResult(**{**d, "scored": _scored(d["scored"]), "status": GateStatus(d["status"])})


# -- Markdown ----------------------------------------------------------------------------------

def _per_class_text(scored: Scored) -> str:
    return ", ".join(f"{name} {c.accuracy:.2f} ({c.correct}/{c.images})" for name, c in scored.per_class.items())


def render_accuracy(sections: list[AccuracySection]) -> list[str]:
    """parity.md's accuracy section: per variant, the eval set, the reference, one row per artifact."""
    lines = ["## Accuracy on labeled images (the accuracy gate)", "",
             "Top-1 accuracy of every artifact on the variant's labeled eval set, against the Keras reference on "
             "the same images. An artifact fails when it loses more than its precision's threshold (points), "
             "counting only images the reference decides beyond the precision's numerical noise (top-1 ahead "
             f"by more than {', '.join(f'{p} {m:g}' for p, m in NOISE_MARGIN.items())} logits: the parity "
             "table's margins); flips inside it are listed as ties, not charged. "
             "**Small eval sets are noisy**: one image of N is 100/N points, so read the 95% intervals (Wilson "
             "for an accuracy, a conservative paired interval for a drop) before trusting a difference; the gate "
             "judges the measured drop, not the interval.", ""]
    for s in sections:
        ev, ref = s.eval_set, s.reference
        lines += [f"### {s.variant}", "",
                  f"Eval set: {ev.get('count')} images, {ev.get('source')} (`{ev.get('path')}`, sha256 "
                  f"{str(ev.get('sha256', ''))[:12]}); one image = {100 / max(ref.images, 1):.3g} points. "
                  f"Reference (Keras): accuracy **{ref.accuracy:.3f}** (95% CI {ref.accuracy_ci[0]:.3f}-"
                  f"{ref.accuracy_ci[1]:.3f}); per class: {_per_class_text(ref)}.", "",
                  "| Artifact | accuracy (95% CI) | drop, points (95% CI) | max drop | agreement | to wrong / to right "
                  "(within noise) | per class | remedy | gate |", "|---|---|---|---|---|---|---|---|---|"]
        for r in s.results:
            sc = r.scored
            gate = {"passed": "pass", "failed": "**FAIL**", "dropped": "**dropped**"}[str(r.status)]
            lines.append(f"| {r.label} | {sc.accuracy:.3f} ({sc.accuracy_ci[0]:.3f}-{sc.accuracy_ci[1]:.3f}) | "
                         f"{r.drop_points:g} ({r.drop_ci[0]:g} to {r.drop_ci[1]:g}) | {r.max_drop:g} | "
                         f"{r.agreement:.3f} | {r.flips_to_wrong} / {r.flips_to_right} ({r.ties}) | "
                         f"{_per_class_text(sc)} | {r.remedy or '-'} | {gate} |")
        noted = [f"`{r.label}` ({r.note})" for r in s.results if r.note]
        if noted:
            lines += ["", "Not run on the eval set again: " + "; ".join(noted) + "."]
        lines.append("")
    return lines
