"""report.html: one self-contained page (inline CSS and SVG, no scripts, no fetches) with the model
card, the deploy recommendation and speed-ups (once `make bench` has run), accuracy per artifact
with intervals, the parity table, the end-to-end path table, and the training curves and confusion
matrices; every number from the bundle's documents (export.bundle.documents), rendered by Jinja2.
"""
from __future__ import annotations

from typing import Any

from export.bundle import charts
from export.bundle.card import variant_cards
from export.bundle.documents import BundleDocs


def _worst(metrics: list[dict[str, Any]], key: str, lowest: bool = False) -> float | None:
    values = [m[key] for m in metrics if m.get(key) is not None]
    return (min(values) if lowest else max(values)) if values else None


def _parity_rows(docs: BundleDocs, variant: str) -> list[dict[str, Any]]:
    out = []
    for r in docs.parity_rows(variant):
        logits = [m for m in r.get("metrics", []) if m.get("output") == "logits"]
        out.append({"label": docs.row_label(r), "backend": r.get("backend"), "device": r.get("device"),
                    "precision": r.get("precision"), "tolerance": r.get("tolerance"), "status": r.get("status"),
                    "reason": r.get("reason", ""), "max_abs": _worst(logits, "max_abs"),
                    "mean_abs": _worst(logits, "mean_abs"), "cosine": _worst(logits, "mean_cosine", True),
                    "top1": _worst(logits, "top1", True),
                    "ms": r.get("mean_ms") or {}})
    return out


def _bench_rows(bench: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    rows = []
    for r in bench.get("artifacts", []):
        if r.get("variant") != variant or r.get("error") or r.get("skipped") or "1" not in (r.get("latency_ms") or {}):
            continue
        speed = ((r.get("speedup_vs_fp32") or r.get("speedup_vs_fastest_fp32") or {}).get("by_batch") or {}).get("1")
        rows.append({"label": r.get("label") or r["key"], "precision": r["precision"], "p50": r["latency_ms"]["1"]["p50"],
                     "p99": r["latency_ms"]["1"].get("p99"), "speedup": speed,
                     "images_per_s": max(s["images_per_s"] for s in r["latency_ms"].values()),
                     "agreement": (r.get("top1") or {}).get("agreement"), "bytes": r.get("bytes")})
    return rows


def _variant_view(docs: BundleDocs, card: dict[str, Any]) -> dict[str, Any]:
    name = card["name"]
    training = docs.variants[name].get("training") or {}
    parity_rows = _parity_rows(docs, name)
    view: dict[str, Any] = {"card": card, "parity": parity_rows, "bench": [],  # a chart the documents cannot draw is None
                            "charts": dict.fromkeys(("accuracy", "parity", "latency", "training", "confusion"))}
    ev = card["evaluation"]
    if ev and ev["artifacts"]:
        view["charts"]["accuracy"] = charts.accuracy(ev["artifacts"], ev["reference"], f"{name}-accuracy")
    measured = [r for r in parity_rows if r["max_abs"] is not None]
    if measured:
        view["charts"]["parity"] = charts.parity(measured, f"{name}-parity")
    if docs.bench:
        view["bench"] = _bench_rows(docs.bench, name)
        if view["bench"]:
            view["charts"]["latency"] = charts.latency(view["bench"], f"{name}-latency")
    if training.get("history"):
        view["charts"]["training"] = charts.training(training["history"], f"{name}-training")
    if training.get("confusion_matrix"):
        view["charts"]["confusion"] = charts.confusion(training["confusion_matrix"], docs.variants[name]["labels"],
                                                       f"{name}-confusion")
    return view


#: The columns of bench.json's `recommended` entries (export.bench.recommend) the page shows, in order.
RECOMMENDATION_COLUMNS = ("variant", "batch", "label", "p50_ms", "speedup_vs_savedmodel", "accuracy_drop_points",
                          "serve_command", "note")


def recommendations(recommended: Any) -> Any:
    """bench.json's `recommended` for the page: a list of per-variant choices narrowed to the columns a
    reader needs (any other shape is shown as it is)."""
    if isinstance(recommended, list) and recommended and all(isinstance(r, dict) for r in recommended):
        return [{k: r[k] for k in RECOMMENDATION_COLUMNS if k in r} for r in recommended]
    return recommended


def render(docs: BundleDocs) -> str:
    """The whole page for the bundle's documents (deterministic: same documents, same bytes)."""
    from export.bundle.templates import environment
    bench = docs.bench or {}
    return environment().get_template("report.html.j2").render(
        bundle=docs.bundle_name, manifest=docs.manifest, variants=[_variant_view(docs, c) for c in variant_cards(docs)],
        bench=bench, recommended=recommendations(bench.get("recommended")), end_to_end=docs.end_to_end(),
        parity_passed=(docs.manifest.get("parity") or {}).get("passed"), dropped=docs.dropped())
