"""MODEL_CARD.md: what each variant of a bundle is for and not for, what trained and evaluated it,
how it scores per class and per artifact, and the limits the bundle itself knows of.

Every figure comes from the bundle's documents (export.bundle.documents); only the human parts
(intended use, out-of-scope uses, extra limitations) come from the config's `[card]` table, and
without it from defaults that say plainly when a model is a demo. The same view (`variant_cards`)
feeds the Markdown template and report.html.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from export.bundle.documents import BundleDocs
from export.core.errors import UsageError

#: `[card]` keys of configs/variants.toml: free text for the card's human parts.
CARD_KEYS = {"intended_use": str, "out_of_scope": list, "limitations": list}
#: A class whose recall (training validation) or accuracy (eval set) is below this is named a limit.
LOW_RECALL = 0.8


def check_config(raw: Any, path: str | Path) -> dict[str, Any]:
    """The config's `[card]` table, checked (UsageError naming the file and key); {} when absent."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: card must be a table ([card]), got {raw!r}")
    for key, value in raw.items():
        if key not in CARD_KEYS:
            raise UsageError(f"{path}: [card] has unknown key {key!r}; allowed: {sorted(CARD_KEYS)}")
        if CARD_KEYS[key] is str and (not isinstance(value, str) or not value.strip()):
            raise UsageError(f"{path}: [card] {key} must be a non-empty string, got {value!r}")
        if CARD_KEYS[key] is list and (not isinstance(value, list)
                                       or not all(isinstance(x, str) and x.strip() for x in value)):
            raise UsageError(f"{path}: [card] {key} must be a list of non-empty strings, got {value!r}")
    return dict(raw)


def card_record(cfg: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `card`: author, licence and the `[card]` texts of the config (None where unset)."""
    card = cfg.get("card") or {}
    return {"author": cfg.get("author"), "license": cfg.get("license"),
            "intended_use": card.get("intended_use"), "out_of_scope": card.get("out_of_scope"),
            "limitations": card.get("limitations") or []}


# -- the view ------------------------------------------------------------------------------------

def _demo(variant: dict[str, Any]) -> str | None:
    """Why a variant is a demo model ('' = it is not): demo data, or weights that are not trained features."""
    training = variant.get("training") or {}
    weights = variant.get("weights") or {}
    if str(training.get("data", "")).startswith("demo:"):
        return f"trained on the demo data set `{training['data']}`"
    if weights.get("kind") == "random" and not training:
        return f"seeded random weights (`{weights.get('source')}`) and an untrained head"
    return None


def _intended(card: dict[str, Any], name: str, variant: dict[str, Any]) -> tuple[str, list[str], bool]:
    demo = _demo(variant)
    labels = variant.get("labels") or []
    classes = ", ".join(f"`{c}`" for c in labels[:10]) + (", …" if len(labels) > 10 else "")
    if card.get("intended_use"):
        use = card["intended_use"]
    elif demo:
        use = (f"**A demonstration model, not for real use**: `{name}` is {demo}, to show and test "
               "resnet-deploy's export, parity, accuracy gate and serving. Its outputs say nothing "
               "trustworthy about real images.")
    else:
        use = (f"Classifying images into the {len(labels)} classes {classes}, on images like its "
               "training data (see Training data), served from this bundle's artifacts.")
    if card.get("out_of_scope"):
        out = list(card["out_of_scope"])
    else:
        out = ["Any decision with consequences for people, and any use without human review."]
        if demo:
            out.insert(0, "Everything but demonstrating and testing the deployment pipeline: this is a demo model.")
        out += [f"Classes other than the {len(labels)} listed, and images unlike the training data "
                "(another domain, camera, size or preprocessing)."]
    return use, out, bool(demo)


def _details(docs: BundleDocs, name: str, v: dict[str, Any]) -> list[tuple[str, str]]:
    spec, params, weights = v.get("spec") or {}, v.get("params") or {}, v.get("weights") or {}
    head = " → ".join(layer.get("kind", "?") + (f"({layer['units']})" if "units" in layer else "")
                      for layer in spec.get("head", [])) or "none"
    card = docs.card
    arts = sorted({f"{a['format']} {a['precision']}" for a in docs.artifacts(name)})
    rows = [("architecture", f"ResNet50 backbone (Keras), input {spec.get('input_size', '?')}×{spec.get('input_size', '?')} RGB"),
            ("head", f"`{name}`: {head} → Dense({v.get('num_classes')}) `logits`"),
            ("classes", f"{v.get('num_classes')}: {', '.join(v.get('labels') or [])}"),
            ("parameters", ", ".join(f"{k} {n:,}" for k, n in params.items()) or "n/a"),
            ("weights source", f"`{weights.get('source', '?')}` ({weights.get('kind', '?')})"),
            ("version", f"{docs.manifest.get('version')} (bundle `{docs.bundle_name}`, commit "
                        f"{str((docs.manifest.get('git') or {}).get('commit', 'unknown'))[:12]})"),
            ("licence", str(card.get("license") or "unspecified")),
            ("author", str(card.get("author") or "unspecified")),
            ("artifacts", ", ".join(arts) or "none")]
    return rows


def _training(v: dict[str, Any]) -> dict[str, Any] | None:
    t = v.get("training")
    if not t:
        return None
    per_class = t.get("images_per_class") or {}
    val_per_class = t.get("val_images_per_class") or {}
    settings = t.get("settings") or {}
    total = sum(per_class.values())
    val = t.get("val_images", 0)
    recall = t.get("per_class") or {}
    return {
        "source": t.get("data"), "sha256": t.get("data_sha256"), "total": total,
        "classes": [{"name": c, "images": n, "val": val_per_class.get(c), "train": (n - val_per_class[c])
                     if c in val_per_class else None, "recall": (recall.get(c) or {}).get("recall"),
                     "precision": (recall.get(c) or {}).get("precision")} for c, n in per_class.items()],
        "split": f"{total - val} training / {val} validation images"
                 + (f" (val_split {settings['val_split']}, seed {settings.get('seed')})" if "val_split" in settings else ""),
        "val_accuracy": t.get("val_accuracy"), "train_accuracy": t.get("train_accuracy"),
        "epochs": _epochs(t.get("epochs_run")), "weights": t.get("weights"), "probe": probe_text(t.get("probe")),
    }


def _epochs(run: Any) -> str:
    """`epochs_run` as text: a count, or per phase (`{"phase1": 3, "phase2": 2}` → "5 (phase1 3, phase2 2)")."""
    if isinstance(run, dict):
        return f"{sum(v for v in run.values() if isinstance(v, int))} ({', '.join(f'{k} {v}' for k, v in run.items())})"
    return "n/a" if run is None else str(run)


def probe_text(probe: Any) -> str | None:
    """The training run's probe baseline (a standardised logistic regression on the same features), if it has one."""
    if probe is None:
        return None
    if isinstance(probe, int | float):
        return f"{probe:.3f}"
    if isinstance(probe, dict):
        acc = next((probe[k] for k in ("val_accuracy", "accuracy") if isinstance(probe.get(k), int | float)), None)
        rest = [f"training {probe['train_accuracy']:.3f}"] if isinstance(probe.get("train_accuracy"), int | float) else []
        rest += [str(probe["model"])] if probe.get("model") else []
        rest += [f"{k} {v}" for k, v in probe.items() if k not in ("val_accuracy", "accuracy", "train_accuracy", "model",
                                                                    "seconds") and isinstance(v, str | int | float)]
        return (f"{acc:.3f}" if acc is not None else "n/a") + (f" ({'; '.join(rest)})" if rest else "")
    return str(probe)


def _ci(ci: list[float] | None, digits: int = 3) -> str:
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "n/a"


def _evaluation(docs: BundleDocs, name: str) -> dict[str, Any] | None:
    s = docs.accuracy_section(name)
    if not s:
        return None
    ref = s["reference"]
    rows = [{"label": r["label"], "format": r["format"], "precision": r["precision"],
             "accuracy": r["scored"]["accuracy"], "ci": _ci(r["scored"].get("accuracy_ci")),
             "ci_values": r["scored"].get("accuracy_ci"),
             "correct": r["scored"]["correct"], "images": r["scored"]["images"],
             "drop": r["drop_points"], "drop_ci": _ci(r.get("drop_ci"), 1), "max_drop": r["max_drop"],
             "agreement": r.get("agreement"), "flips": f"{r.get('flips_to_wrong', 0)} / {r.get('flips_to_right', 0)}",
             "status": r["status"], "per_class": r["scored"].get("per_class") or {}}
            for r in s.get("results", [])]
    return {"eval_set": s.get("eval_set") or {}, "reference": {**ref, "ci": _ci(ref.get("accuracy_ci"))},
            "artifacts": rows, "classes": list((ref.get("per_class") or {}).keys())}


def _quantization(docs: BundleDocs, name: str) -> list[dict[str, Any]]:
    """Per artifact: the parity against the Keras reference (worst logits error, top-1 agreement)."""
    out = []
    for r in docs.parity_rows(name):
        logits = [m for m in r.get("metrics", []) if m.get("output") == "logits"]
        out.append({"label": docs.row_label(r), "precision": r.get("precision"), "status": r.get("status"),
                    "reason": r.get("reason", ""),
                    "max_abs": max((m["max_abs"] for m in logits), default=None),
                    "top1": min((m["top1"] for m in logits), default=None),
                    "cosine": min((m["mean_cosine"] for m in logits), default=None)})
    return out


def _limits(docs: BundleDocs, name: str, training: dict | None, evaluation: dict | None) -> list[str]:
    out = []
    if evaluation:
        n = evaluation["eval_set"].get("count") or evaluation["reference"].get("images") or 0
        if n:
            out.append(f"The eval set has {n} images: one image is {100 / n:.1f} points, and the reference's "
                       f"95% interval is {evaluation['reference']['ci']}; differences inside it are noise.")
        for c, pc in (evaluation["reference"].get("per_class") or {}).items():
            if pc.get("images") and pc["accuracy"] < LOW_RECALL:
                out.append(f"Class `{c}` has low recall on the eval set: {pc['accuracy']:.3f} "
                           f"({pc['correct']}/{pc['images']}).")
        for a in evaluation["artifacts"]:
            for c, pc in a["per_class"].items():
                ref = (evaluation["reference"].get("per_class") or {}).get(c) or {}
                if pc.get("images") and pc["accuracy"] < min(LOW_RECALL, ref.get("accuracy", 1.0)):
                    out.append(f"`{a['label']}` recognises class `{c}` less often than the reference: "
                               f"{pc['accuracy']:.3f} ({pc['correct']}/{pc['images']}) against {ref.get('accuracy', 0):.3f}.")
    else:
        out.append("No eval set: the accuracy gate did not judge this variant's artifacts.")
    for c in (training or {}).get("classes", []):
        if c["recall"] is not None and c["recall"] < LOW_RECALL:
            out.append(f"Class `{c['name']}` has low recall in training validation: {c['recall']:.3f}.")
    for d in docs.dropped():
        if str(d.get("artifact", "")).startswith(f"{name}/"):
            out.append(f"`{d['artifact']}` was dropped by the accuracy gate: {d.get('reason', '')}")
    for r in docs.parity_rows(name):
        if r.get("status") == "skipped":
            out.append(f"Parity row `{docs.row_label(r)}` was not run ({r.get('reason') or 'skipped'}).")
    return out + list(docs.card.get("limitations") or [])


def variant_cards(docs: BundleDocs) -> list[dict[str, Any]]:
    """One card section per variant, in the manifest's order: the view both templates render."""
    cards = []
    for name, v in docs.variants.items():
        use, out_of_scope, demo = _intended(docs.card, name, v)
        training = _training(v)
        evaluation = _evaluation(docs, name)
        cards.append({"name": name, "weights": (v.get("weights") or {}).get("source"),
                      "details": _details(docs, name, v), "intended_use": use, "out_of_scope": out_of_scope,
                      "demo": demo, "training": training, "evaluation": evaluation,
                      "quantization": _quantization(docs, name), "limits": _limits(docs, name, training, evaluation)})
    return cards


def render_markdown(docs: BundleDocs) -> str:
    """MODEL_CARD.md of the bundle."""
    from export.bundle.templates import environment
    return environment(markdown=True).get_template("model_card.md.j2").render(
        bundle=docs.bundle_name, cards=variant_cards(docs), parity_passed=(docs.manifest.get("parity") or {}).get("passed"))
