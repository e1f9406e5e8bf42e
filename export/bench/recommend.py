"""Which file to deploy on this machine: per variant and batch size, the fastest artifact that
passed parity and the accuracy gate, from the paired timings (export.bench.paired) of one run.

- Speed-ups come from the paired rounds only (median over the rounds of one time / the other's):
  every row's speed-up over its fp32 sibling, over the fastest fp32 artifact of another format
  (precision-hint rows), and over the SavedModel (what TF Serving runs).
- Each row's achieved GFLOP/s at its largest batch, as a % of its own precision's ceiling
  (export.bench.ceilings: int8 rows against the int8 GEMM, bf16-hint rows against the bf16 one).
- Eligible: the row's parity row passed (parity.json in the bundle; a bf16-hint row needs its bf16
  row) and its artifact passed the accuracy gate (manifest.json `accuracy`; the gate judges an IR at
  the f32 hint). A variant without an eval set is not judged: its rows stay eligible and say so.
- Within noise: a row that was at least as fast as the fastest in a quarter or more of the paired
  rounds (TIE_SHARE; the rounds time both in turn, so each round compares them on the same machine
  state) counts as a tie; among ties the simplest deployment wins (the SavedModel on TF Serving, then
  ONNX Runtime, OpenVINO, TFLite; fp32 before reduced precisions; no hint before bf16), and the faster
  ones it tied with are named. The rule before compared the p50s with the larger of the two rows'
  interquartile ranges, so a slow row with a wide spread tied with a steady faster one: on dense at
  batch 1 it named ONNX int8 (13.2 ms, IQR 13.0-17.0) over OpenVINO int8 (11.0 ms).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from export.bench import ceilings
from export.bench.document import counted
from export.bench.paired import ceiling_pct, paired_ratio

#: Simpler deployments first: what is ranked ahead wins a tie within noise.
FORMAT_RANK = {"savedmodel": 0, "onnx": 1, "openvino": 2, "tflite": 3}
PRECISION_RANK = {"fp32": 0, "fp16": 1, "dynamic": 2, "int8": 3}
HINT_RANK = {"": 0, "f32": 0, "bf16": 1}


def serve_backend(row: dict[str, Any]) -> str:
    """The `serve --backend` value that serves this row's artifact (and precision hint)."""
    fmt, precision, hint = row["format"], row["precision"], row.get("precision_hint") or ""
    if fmt == "savedmodel":
        return "savedmodel"
    if fmt == "openvino":
        if precision == "int8":
            return "openvino:int8" + ("-bf16" if hint == "bf16" else "")
        return f"openvino:{hint or 'f32'}"
    return fmt if precision == "fp32" else f"{fmt}:{precision}"


def serve_command(bundle: str, row: dict[str, Any]) -> str:
    backend = serve_backend(row)
    if backend == "savedmodel":
        return f"resnet-deploy serve {bundle} --model {row['variant']}"
    return f"resnet-deploy serve {bundle} --local --model {row['variant']} --backend {backend}"


# -- paired speed-ups and ceilings onto the rows -----------------------------------------------------

def apply_paired(doc: dict[str, Any]) -> None:
    """Replace the rows' speed-ups with paired ones and add `paired_ms`, `speedup_vs_savedmodel`,
    `ceiling_precision` and `pct_of_own_ceiling` (in place)."""
    best = ceilings.best_by_precision(ceiling_measurements(doc))
    for r in doc["artifacts"]:
        r["paired_ms"], r["speedup_vs_savedmodel"] = {}, None
        r["ceiling_precision"], r["pct_of_own_ceiling"] = ceilings.row_precision(r), None
        batches = _paired_batches(doc, r["variant"])
        if r.get("error") or r.get("skipped") or not batches:
            continue
        name = r["label"]
        for b, m in batches.items():
            if name in m["p50_ms"]:
                r["paired_ms"][b] = {"p50": m["p50_ms"][name], "p25": m["p25_ms"][name], "p75": m["p75_ms"][name]}
        if not r["paired_ms"]:
            continue

        def ratios(other: str | None, batches=batches, name=name) -> dict[str, float]:
            out = {b: paired_ratio(m["times_ms"], other, name) for b, m in batches.items()}
            return {b: v for b, v in out.items() if v is not None}
        sm = f"{r['variant']}/savedmodel_fp32"
        r["speedup_vs_savedmodel"] = {"baseline": sm, "by_batch": ratios(sm)} if sm != name else None
        if r.get("speedup_vs_fp32"):
            r["speedup_vs_fp32"]["by_batch"] = ratios(r["speedup_vs_fp32"]["sibling"])
            r["speedup_vs_fp32"]["source"] = "paired"
        if r.get("speedup_vs_fastest_fp32"):
            sp = r["speedup_vs_fastest_fp32"]
            sp["baseline"] = {b: _fastest_fp32(r, m["p50_ms"]) for b, m in batches.items()}
            sp["by_batch"] = {b: v for b, k in sp["baseline"].items()
                              if (v := paired_ratio(batches[b]["times_ms"], k, name)) is not None}
            sp["source"] = "paired"
        top = max(r["paired_ms"], key=int)
        pct = ceiling_pct(batches[top], _kernels(doc, r["variant"]), name, r["gflop_per_image"] * int(top),
                          r["ceiling_precision"], (best.get(r["ceiling_precision"]) or {}).get("gflops"))
        r["pct_of_own_ceiling"] = None if pct is None else round(pct, 2)


def _kernels(doc: dict[str, Any], variant: str) -> dict[str, Any]:
    """The ceiling GEMMs timed in `variant`'s paired rounds (export.bench.paired), or {}."""
    return ((doc.get("paired") or {}).get(variant) or {}).get("ceiling_kernels") or {}


def paired_ceilings(doc: dict[str, Any], precision: str | None = None) -> bool:
    """Whether the rows' % of their ceilings (of `precision`'s, if given) come from GEMMs timed in the
    paired rounds."""
    return any(precision is None or k.get("precision") == precision
               for v in doc.get("paired") or {} for k in _kernels(doc, v).values())


def _paired_batches(doc: dict[str, Any], variant: str) -> dict[str, Any]:
    """The paired rounds of `variant`, by batch size (export.bench.paired), or {}."""
    return ((doc.get("paired") or {}).get(variant) or {}).get("by_batch") or {}


def ceiling_measurements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    c = doc.get("ceiling") or {}
    return [*c.get("measurements", []), *c.get("by_precision", [])]


def _fastest_fp32(row: dict[str, Any], p50: dict[str, float]) -> str | None:
    """The fastest fp32 artifact of the row's variant in another format, by paired p50."""
    others = [k for k in p50 if "@" not in k and k.startswith(row["variant"] + "/") and k.endswith("_fp32")
              and k.split("/", 1)[1].split("_")[0] != row["format"]]
    return min(others, key=lambda k: p50[k]) if others else None


# -- the deploy choice -------------------------------------------------------------------------------

def verdicts(root: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Per row label the parity status (parity.json; CPU rows), and per artifact key its gate
    record (manifest.json `accuracy`: status and drop_points)."""
    parity: dict[str, str] = {}
    try:
        results = json.loads((root / "parity.json").read_text()).get("results", [])
    except (OSError, json.JSONDecodeError):
        results = []
    for res in results:
        if res.get("device_requested", "CPU") == "CPU":
            hint = res.get("precision_hint") or ""
            parity[f"{res['key']}@{hint}" if hint else res["key"]] = str(res["status"])
    gate: dict[str, dict[str, Any]] = {}
    try:
        accuracy = json.loads((root / "manifest.json").read_text()).get("accuracy") or {}
    except (OSError, json.JSONDecodeError):
        accuracy = {}
    for variant, v in (accuracy.get("variants") or {}).items():  # variants the gate had an eval set for
        for key, rec in (v.get("artifacts") or {}).items():
            gate[key] = {**rec, "variant": variant}
    return parity, gate


def _rank(r: dict[str, Any]) -> tuple[int, int, int]:
    return (FORMAT_RANK.get(r["format"], 9), PRECISION_RANK.get(r["precision"], 9),
            HINT_RANK.get(r.get("precision_hint") or "", 9))


def recommend(doc: dict[str, Any], parity: dict[str, str], gate: dict[str, dict[str, Any]],
              judged_variants: set[str]) -> list[dict[str, Any]]:
    """Per variant and batch size, the recommendation (see the module's docstring); rows need
    apply_paired's `paired_ms`. `judged_variants`: variants the accuracy gate had an eval set for."""
    out = []
    rows = [r for r in doc["artifacts"] if r.get("paired_ms")]
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        for b in sorted({b for r in mine for b in r["paired_ms"]}, key=int):
            timed = [r for r in mine if b in r["paired_ms"]]
            excluded = {r["label"]: why for r in timed if (why := _ineligible(r, parity, gate, variant in judged_variants))}
            ok = [r for r in timed if r["label"] not in excluded]
            if not ok:
                out.append({"variant": variant, "batch": int(b), "label": None, "note": "no artifact passed parity "
                            "and the accuracy gate", "excluded": excluded})
                continue
            fastest = min(ok, key=lambda r: r["paired_ms"][b]["p50"])
            times = _paired_batches(doc, variant).get(b, {}).get("times_ms", {})
            ties = [r for r in ok if r is fastest or ties_with(times, r["label"], fastest["label"])]
            pick = min(ties, key=lambda r: (_rank(r), r["paired_ms"][b]["p50"]))
            out.append(_entry(doc, pick, b, [r["label"] for r in ties if r is not pick], excluded,
                              gate.get(pick["key"]), variant in judged_variants))
    return out


#: A row ties with the fastest when it was at least as fast in this share of the paired rounds or more.
TIE_SHARE = 0.25


def ties_with(times: dict[str, list[float]], label: str, fastest: str) -> bool:
    """Whether `label` is within noise of `fastest`: at least as fast in TIE_SHARE of the paired rounds
    (times[label][i] against times[fastest][i], timed in the same round), or more."""
    mine, theirs = times.get(label), times.get(fastest)
    if not mine or not theirs or len(mine) != len(theirs):
        return False
    return sum(a <= b for a, b in zip(mine, theirs, strict=True)) >= TIE_SHARE * len(mine)


def _ineligible(r: dict[str, Any], parity: dict[str, str], gate: dict[str, dict[str, Any]], judged: bool) -> str:
    status = parity.get(r["label"])
    if status != "passed":
        return f"parity {status or 'not run'}"
    if judged:
        g = gate.get(r["key"])
        if g is None or g.get("status") != "passed":
            return f"accuracy gate {g.get('status') if g else 'not run'}"
    return ""


def _entry(doc, pick, b, tied, excluded, gate_rec, judged) -> dict[str, Any]:
    sp = (pick.get("speedup_vs_savedmodel") or {}).get("by_batch", {}).get(b)
    if pick["format"] == "savedmodel":
        sp = 1.0
    note = ("within noise of " + ", ".join(tied) + ": the simpler deployment is named") if tied else ""
    if not judged:
        note = (note + "; " if note else "") + "no eval set: the accuracy gate did not judge this variant"
    elif pick.get("precision_hint") == "bf16":
        note = (note + "; " if note else "") + "accuracy judged at the f32 hint, parity at bf16"
    return {"variant": pick["variant"], "batch": int(b), "label": pick["label"], "key": pick["key"],
            "format": pick["format"], "precision": pick["precision"],
            "precision_hint": pick.get("precision_hint") or "", "p50_ms": pick["paired_ms"][b]["p50"],
            "speedup_vs_savedmodel": sp, "accuracy_drop_points": gate_rec.get("drop_points") if gate_rec else None,
            "serve_backend": serve_backend(pick), "serve_command": serve_command(doc["bundle"], pick),
            "within_noise": tied, "excluded": excluded, "note": note}


def render(doc: dict[str, Any]) -> list[str]:
    """bench.md's opening section: the deploy choice per variant and batch size."""
    rec = doc.get("recommended") or []
    if not rec:
        return []
    lines = ["## Which file to deploy on this machine", "",
             f"On **{doc['environment']['cpu_model']}** with {counted(doc['settings']['threads'], 'thread')}: per variant and "
             "batch size, the fastest artifact that passed parity and the accuracy gate, timed with all the "
             "variant's artifacts in turn (paired rounds). Speed-up = median over the rounds of the SavedModel's "
             "time ÷ this one's (TF Serving runs the SavedModel). Within noise = at least as fast as the fastest in a "
             "quarter or more of the rounds; the simpler deployment is then named.", "",
             "| variant | batch | deploy | p50 ms | speed-up vs SavedModel | accuracy drop (points) | serve with | note |",
             "|---|---:|---|---:|---:|---:|---|---|"]
    for e in rec:
        if not e.get("label"):
            lines.append(f"| {e['variant']} | {e['batch']} | **none** | | | | | {e['note']} |")
            continue
        drop = "–" if e["accuracy_drop_points"] is None else f"{e['accuracy_drop_points']:g}"
        sp = "–" if e["speedup_vs_savedmodel"] is None else f"**{e['speedup_vs_savedmodel']:.2f}×**"
        lines.append(f"| {e['variant']} | {e['batch']} | `{e['label']}` | {e['p50_ms']:.1f} | {sp} | {drop} | "
                     f"`{e['serve_command']}` | {e['note'] or '-'} |")
    excluded = sorted({f"`{k}` ({why})" for e in rec for k, why in (e.get("excluded") or {}).items()})
    if excluded:
        lines += ["", "Not eligible: " + ", ".join(excluded) + "."]
    return [*lines, ""]


def ceilings_table(doc: dict[str, Any]) -> list[str]:
    """Every row's achieved GFLOP/s (GOP/s for int8) at its largest paired batch, as a % of its own
    precision's ceiling."""
    best = ceilings.best_by_precision(ceiling_measurements(doc))
    if not best:
        return []
    lines = ["## Each row against its own precision's ceiling", "",
             "Ceilings (2048² matmul, best of the run): " + "; ".join(
                 f"{p} **{m['gflops']:.1f}** G{'OP' if p == 'int8' else 'FLOP'}/s ({m['library']})"
                 for p, m in sorted(best.items())) + ". " + (
                 "The ceiling GEMMs also ran in each variant's paired rounds, beside its rows (fp32: ONNX "
                 "Runtime's MatMul; int8: ONNX Runtime and OpenVINO; bf16 where the CPU has the units): a row's % "
                 "= per round, its achieved rate (GFLOP per image × batch ÷ its time) ÷ the fastest GEMM of its "
                 "precision in that round, median over the rounds, at its largest batch; a precision without a "
                 "GEMM in the rounds (fp32 in a bench.json from before they held one): the row's rate at its "
                 "paired p50 ÷ the run's best"
                 if paired_ceilings(doc) else
                 "A row's achieved rate = GFLOP per image × batch ÷ paired p50 at its largest batch, ÷ that "
                 "best") + "; int8 rows are held to the int8 GEMM, bf16-hint rows to the bf16 one.", "",
             "| row | ceiling | % of it |", "|---|---|---:|"]
    for r in doc["artifacts"]:
        if r.get("pct_of_own_ceiling") is not None:
            lines.append(f"| {r['label']} | {r['ceiling_precision']} | {r['pct_of_own_ceiling']:.1f} |")
    return [*lines, ""]


def compute(doc: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    """apply_paired, then the recommendation from the bundle's parity and gate verdicts."""
    apply_paired(doc)
    parity, gate = verdicts(root)
    return recommend(doc, parity, gate, {r["variant"] for r in gate.values()})
