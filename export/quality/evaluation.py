"""`parity --eval-data DIR`: every artifact of an export or bundle on a labeled tree, judged by the
accuracy gate against the Keras reference's accuracy on the same images.

The reference's logits come from, in order: golden/<variant>/eval.json when it holds these very
images (what `make export` saved for the variant's eval set); the Keras model rebuilt with
`--weights`; or the variant's SavedModel in DIR, which passed parity against Keras at export
(fp32, logits within 5e-4) and stands in for it. The report says which.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export.core.errors import UsageError
from export.quality import accuracy
from export.training import labeled_sets


def pixels_sha256(images: np.ndarray) -> str:
    """What identifies an eval set's decoded pixels (the matching key of golden/<variant>/eval.json)."""
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()


def variant_labels(root: Path, variant: str) -> list[str]:
    """The class names of `variant` in an export or bundle: manifest, golden meta, or TFLite labels.txt."""
    manifest = root / "manifest.json"
    if manifest.is_file():
        labels = json.loads(manifest.read_text()).get("variants", {}).get(variant, {}).get("labels")
        if labels:
            return list(labels)
    meta = root / "golden" / variant / "meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("labels"):
        return list(json.loads(meta.read_text())["labels"])
    labels_txt = root / "tflite" / variant / "labels.txt"
    if labels_txt.is_file():
        return labels_txt.read_text().split("\n")[:-1] or labels_txt.read_text().splitlines()
    raise UsageError(f"cannot tell the class names of variant {variant!r} in {root} (no manifest.json, "
                     "golden meta.json labels or tflite labels.txt); re-export it")


def _input_size(arts: list) -> int:
    for a in arts:
        for spec in a.inputs:
            shape = spec.get("shape") or []
            if len(shape) == 4 and shape[1]:
                return int(shape[1])
    raise UsageError(f"cannot tell the input size of {arts[0].variant!r} from artifacts.json")


def reference_logits(root: Path, variant: str, arts: list, evalset: labeled_sets.LabeledSet, size: int,
                     weights: str | None, threads: int | None) -> tuple[np.ndarray, str]:
    """The reference's logits on the eval set and a line saying where they came from."""
    saved = root / "golden" / variant / "eval.json"
    if saved.is_file() and not weights:
        doc = json.loads(saved.read_text())
        if doc.get("pixels_sha256") == pixels_sha256(evalset.images):
            return np.asarray(doc["logits"], dtype=np.float32), f"Keras logits saved at export ({saved.relative_to(root)})"
    if weights:
        from export.model.build import build
        from export.model.variants import get_variant
        from export.runtimes.keras import KerasRunner
        labels = evalset.class_names
        built = build(get_variant(variant), weights=weights, num_classes=len(labels), input_size=size, labels=labels)
        with KerasRunner(built.model, name=f"{variant}/keras") as runner:
            return accuracy.logits_of(runner, evalset.images), f"Keras model rebuilt from --weights {weights}"
    from export.runtimes import runner_for
    sm = next((a for a in arts if a.format == "savedmodel"), None)
    if sm is None:
        raise UsageError(f"no reference for variant {variant!r} on these images: pass --weights (the weights it was "
                         "exported with, e.g. the run's model.keras) or include its SavedModel")
    with runner_for(sm, root, device="CPU", num_threads=threads) as runner:
        return accuracy.logits_of(runner, evalset.images), \
            f"the SavedModel {sm.path} (fp32, parity-checked against Keras at export)"


def load_sets(root: str | Path, artifacts: list, eval_dir: str | Path,
              labels: list[str] | None = None) -> dict[str, labeled_sets.LabeledSet]:
    """The eval set of every variant of `artifacts` (its classes checked against the variant's
    labels, or `labels`: a training run's): read before any artifact runs, so bad eval data is said at once."""
    return {variant: labeled_sets.eval_set(eval_dir, _input_size([a for a in artifacts if a.variant == variant]),
                                           _labels(Path(root), variant, labels))
            for variant in sorted({a.variant for a in artifacts})}


def _labels(root: Path, variant: str, run_labels: list[str] | None) -> list[str]:
    """The run's labels when given (they must be the export's, where it names any), else the export's."""
    if run_labels is None:
        return variant_labels(root, variant)
    try:
        exported = variant_labels(root, variant)
    except UsageError:
        return run_labels
    if exported != run_labels:
        raise UsageError(f"the run's labels.txt ({', '.join(run_labels)}) differs from the labels variant {variant!r} "
                         f"was exported with in {root} ({', '.join(exported)}); export the run again")
    return run_labels


def evaluate(root: str | Path, artifacts: list, sets: dict[str, labeled_sets.LabeledSet],
             max_drop: dict[str, float], *, weights: str | None = None, threads: int | None = None,
             progress: Callable[[str], None] | None = None) -> list[accuracy.AccuracySection]:
    """One AccuracySection per variant of `artifacts` on its eval set (`load_sets`)."""
    root = Path(root)
    sections = []
    for variant, evalset in sets.items():
        arts = [a for a in artifacts if a.variant == variant]
        labels, size = evalset.class_names, _input_size(arts)
        eval_dir = evalset.record["path"]
        if progress:
            progress(f"accuracy of {variant} on {evalset.record['count']} images of {eval_dir}")
        ref, source = reference_logits(root, variant, arts, evalset, size, weights, threads)
        results = accuracy.evaluate_artifacts(arts, root, evalset.images, evalset.labels, labels, ref, max_drop,
                                              num_threads=threads)
        sections.append(accuracy.AccuracySection(variant, {**evalset.record, "reference": source},
                                                 accuracy.score(ref, evalset.labels, labels), max_drop, results))
    return sections
