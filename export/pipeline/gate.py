"""The accuracy gate on the `make export` side of the pool: the config's gate keys, the gate
settings each variant's tasks get, and, once the tasks are done, the report's accuracy sections,
what `on_accuracy_fail = "drop"` leaves out of the bundle, and quantization.md.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from export.core.errors import UsageError
from export.quality import accuracy
from export.training import labeled_sets

TOP_KEYS = {"max_accuracy_drop", "on_accuracy_fail", "calibration_count"}
VARIANT_KEYS = {"calibration", "calibration_count", "eval_data"}


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: calibration_count must be an integer >= 1, got {value!r}")
    return value


def check_config(raw: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The gate's settings from a config's top-level keys, each variant's checked in place
    (UsageError naming the file and key)."""
    max_drop = accuracy.max_drop_from_table(raw["max_accuracy_drop"], str(path)) if "max_accuracy_drop" in raw \
        else dict(accuracy.DEFAULT_MAX_DROP)
    on_fail = accuracy.check_on_fail(raw.get("on_accuracy_fail", "fail"), str(path))
    count = _count(raw.get("calibration_count", labeled_sets.DEFAULT_CALIBRATION_COUNT), str(path))
    for v in raw.get("variants") or []:
        where = f"{path}: variant {v.get('name', '?')!r}"
        for key in ("calibration", "eval_data"):
            if key in v and (not isinstance(v[key], str) or not v[key].strip()):
                raise UsageError(f"{where}: {key} must be a folder path or \"demo:NAME\", got {v[key]!r}")
        if "eval_data" in v and v["eval_data"].startswith("demo:"):
            raise UsageError(f"{where}: eval_data must be a folder (a held-out labeled tree), not {v['eval_data']!r}")
        if "calibration_count" in v:
            _count(v["calibration_count"], where)
    return {"max_drop": max_drop, "on_fail": on_fail, "calibration_count": count}


def variant_gate(cfg: dict[str, Any], v: dict[str, Any], runs: str | Path) -> dict[str, Any] | None:
    """What a variant's Keras task needs to prepare its gate; None when it has no data to judge or
    calibrate with (then int8 is calibrated on the sample photos, as without a gate)."""
    if not (v.get("data") or v.get("eval_data") or v.get("calibration")):
        return None
    gate = cfg["gate"]
    return {"max_drop": gate["max_drop"], "eval_data": v.get("eval_data"), "calibration": v.get("calibration"),
            "calibration_count": v.get("calibration_count", gate["calibration_count"]),
            "demo_root": str(Path(runs) / "data")}


def sections(cfg: dict[str, Any], done: list[dict[str, Any]]) -> list[accuracy.AccuracySection]:
    """One AccuracySection per variant that had an eval set, results in the tasks' order."""
    out = []
    for v in cfg["variants"]:
        keras = next(r for r in done if r["variant"] == v["name"] and r["task"] == "keras")
        prepared = keras.get("gate")
        if not prepared or prepared.get("eval_set") is None:
            continue
        results = [accuracy.result_from_dict(a) for r in done if r["variant"] == v["name"]
                   for a in r.get("accuracy", [])]
        out.append(accuracy.AccuracySection(v["name"], prepared["eval_set"], prepared["reference"],
                                            prepared["max_drop"], results))
    return out


def drop_failed(report, artifacts: list, staging: Path) -> tuple[list, list[dict[str, Any]]]:
    """on_accuracy_fail = "drop": every artifact failing the gate is marked dropped, its files and
    its parity rows leave the bundle. Returns the artifacts that stay and what was dropped (why)."""
    from export.core.registry import FORMATS
    dropped = []
    for section in report.accuracy:
        for r in section.results:
            if r.status != accuracy.GateStatus.FAILED:
                continue
            r.status = accuracy.GateStatus.DROPPED
            dropped.append({"artifact": r.key, "reason": r.failure, "accuracy": r.scored.accuracy,
                            "reference_accuracy": r.reference_accuracy, "drop_points": r.drop_points,
                            "max_drop": r.max_drop})
    keys = {d["artifact"] for d in dropped}
    for a in artifacts:
        if a.key in keys:
            path = staging / a.path
            if FORMATS[a.format].suffix is None or a.format == "openvino":
                shutil.rmtree(path if path.is_dir() else path.parent, ignore_errors=True)
                if a.format == "openvino" and path.parent.parent.is_dir() and not any(path.parent.parent.iterdir()):
                    path.parent.parent.rmdir()  # openvino/<variant>_int8/ held only that version
            else:
                path.unlink(missing_ok=True)
    report.results = [r for r in report.results if r.key not in keys]
    return [a for a in artifacts if a.key not in keys], dropped


def quantization_records(done: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: rec for r in done for k, rec in (r.get("quantization") or {}).items()}


def readme_section(dropped: list[dict[str, Any]]) -> str:
    """The bundle README's note on the artifacts the accuracy gate left out ('' when none)."""
    if not dropped:
        return ""
    rows = "\n".join(f"- `{d['artifact']}`: {d['reason']}" for d in dropped)
    return ("\n## Left out by the accuracy gate\n\n"
            "These artifacts failed the accuracy gate and the config says `on_accuracy_fail = \"drop\"`, "
            "so they are not in this bundle (see parity.md and manifest.json `accuracy`):\n\n" + rows + "\n")


def manifest_summary(report, dropped: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The manifest's `accuracy`: per variant the eval set and reference accuracy, per artifact its
    accuracy, drop, verdict and remedy, and what was dropped (None without any eval set)."""
    if not report.accuracy:
        return None
    return {"passed": not any(s.failures() for s in report.accuracy), "dropped": dropped,
            "max_drop": report.accuracy[0].max_drop,
            "variants": {s.variant: {"eval_set": s.eval_set, "reference_accuracy": s.reference.accuracy,
                                     "artifacts": {r.label: {"accuracy": r.scored.accuracy, "drop_points": r.drop_points,
                                                             "status": str(r.status), "remedy": r.remedy}
                                                   for r in s.results}}
                         for s in report.accuracy}}
