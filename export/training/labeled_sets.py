"""The labeled image sets of the accuracy gate: the eval set an artifact is judged on and the
calibration set int8 is quantized with, from a folder, a `demo:NAME` data set, or the split a
training run used (export.training.runs).

Both are read with export.training.data (the class-per-folder conventions of training), but stricter:
an unreadable image is an error naming it, not a skipped file, since a gate or a calibration
that silently ran on fewer images than asked would be a different gate. No TensorFlow here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.core.atomic import sha256_file
from export.core.errors import DataError, UsageError
from export.training import data as data_mod

#: Calibration images drawn from the training data by default (a seeded class-stratified sample).
#: Measured on the demo config's dense head (lfw_subset, int8 TFLite + ONNX, 40-image eval set,
#: 2 cores under load ~4): 50, 100 and 200 (= all 160 of the split) images all passed the accuracy
#: gate with 0 points charged (accuracy 0.875-0.900 vs the reference's 0.900, at most one flip
#: within int8's noise margin), at 82, 103 and 123 s of export CPU. 100: half the cost of the whole
#: split, and 50 per class for the conv heads, which were not measured at 50.
DEFAULT_CALIBRATION_COUNT = 100


@dataclass
class LabeledSet:
    """uint8 RGB images [N, size, size, 3] with labels indexed like the model's `class_names`."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    files: list[str]
    record: dict[str, Any]  # source, path, count, sha256, images_per_class: what manifests and reports say


def _digest(root: Path, files: list[str]) -> str:
    h = hashlib.sha256()
    for rel in files:
        h.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return h.hexdigest()


def _per_class(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(class_names))
    return {n: int(k) for n, k in zip(class_names, counts, strict=True)}


def _strict_load(index: data_mod.FolderIndex, size: int, what: str) -> data_mod.ImageFolder:
    """Decode every file; DataError naming the unreadable ones (none may be skipped here)."""
    folder = data_mod.load_images(index, size, what, max_corrupt_share=1.0)
    if folder.corrupt:
        shown = ", ".join(folder.corrupt[:5]) + (f" and {len(folder.corrupt) - 5} more" if len(folder.corrupt) > 5
                                                  else "")
        raise DataError(f"{what} {index.root}: {len(folder.corrupt)} image file(s) cannot be read: {shown}; "
                        "fix or remove them")
    return folder


def check_classes(found: list[str], labels: list[str], what: str, root: str | Path) -> None:
    """DataError naming the difference when the class folders are not exactly the model's labels."""
    missing = [c for c in labels if c not in found]
    extra = [c for c in found if c not in labels]
    if missing or extra:
        parts = ([f"no folder for label(s) {', '.join(missing)}"] if missing else []) + \
                ([f"folder(s) {', '.join(extra)} not among the labels"] if extra else [])
        raise DataError(f"{what} {root}: its classes don't match the model's labels ({'; '.join(parts)}); "
                        f"give one folder per label: {', '.join(labels)}")


def eval_set(root: str | Path, size: int, class_names: list[str], what: str = "--eval-data") -> LabeledSet:
    """Every image of a labeled tree whose class folders are exactly `class_names` (in any order)."""
    index = data_mod.scan_folder(root, what, min_classes=1)
    check_classes(index.class_names, list(class_names), what, root)
    folder = _strict_load(index, size, what)
    remap = np.array([list(class_names).index(c) for c in folder.class_names])
    labels = remap[folder.labels]
    return LabeledSet(folder.images, labels, list(class_names), folder.files,
                      {"source": what, "path": str(Path(root)), "count": len(labels), "sha256": folder.sha256,
                       "images_per_class": _per_class(labels, list(class_names))})


def calibration_set(spec: str | Path, size: int, *, count: int = DEFAULT_CALIBRATION_COUNT, seed: int = 0,
                    demo_root: str | Path = "runs/data", what: str = "--calibration-data") -> LabeledSet:
    """A seeded class-stratified sample of up to `count` images of a folder or `demo:NAME`."""
    if count < 1:
        raise UsageError(f"calibration count must be >= 1, got {count}")
    folder_path = data_mod.resolve_data(str(spec), demo_root)
    index = data_mod.scan_folder(folder_path, what, min_classes=1)
    labels = np.array([c for _, c in index.files])
    picked = data_mod.stratified_sample(labels, count, seed)
    index = data_mod.FolderIndex(index.root, index.class_names, [index.files[i] for i in picked], index.ignored)
    folder = _strict_load(index, size, what)
    return LabeledSet(folder.images, folder.labels, folder.class_names, folder.files,
                      {"source": str(spec), "path": str(folder_path), "count": len(folder.files),
                       "sha256": _digest(index.root, folder.files), "seed": seed,
                       "images_per_class": _per_class(folder.labels, folder.class_names)})


def run_split(run_dir: str | Path, size: int | None = None) -> tuple[LabeledSet, LabeledSet]:
    """The (training, validation) images of a training run, exactly as `export.training.train` split them:
    the same folder, max_per_class sample, seed and val_split (or its --val-data folder)."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    settings = config["settings"]
    size = size or int(config["input_size"])
    folder = data_mod.read_image_folder(config["data"], size, max_per_class=settings.get("max_per_class"),
                                        seed=settings["seed"])
    names = folder.class_names
    root = Path(config["data"])

    def subset(idx: np.ndarray, role: str) -> LabeledSet:
        files = [folder.files[i] for i in idx]
        labels = folder.labels[idx]
        return LabeledSet(folder.images[idx], labels, names, files,
                          {"source": f"{role} split of training run {run_dir.name}", "path": str(root),
                           "count": len(idx), "sha256": _digest(root, files),
                           "images_per_class": _per_class(labels, names)})

    if config.get("val_data"):
        train = subset(np.arange(len(folder.labels)), "training")
        val = eval_set(config["val_data"], size, names, what="--val-data")
        val.record["source"] = f"--val-data of training run {run_dir.name}"
        return train, val
    train_idx, val_idx = data_mod.stratified_split(folder.labels, settings["val_split"], settings["seed"], names)
    return subset(train_idx, "training"), subset(val_idx, "validation")


def sample(labeled: LabeledSet, count: int = DEFAULT_CALIBRATION_COUNT, seed: int = 0) -> LabeledSet:
    """A seeded class-stratified sample of up to `count` images of `labeled` (the default calibration
    set: from the training split, so the eval set stays unseen)."""
    picked = data_mod.stratified_sample(labeled.labels, count, seed)
    files = [labeled.files[i] for i in picked]
    root = Path(labeled.record["path"])
    return LabeledSet(labeled.images[picked], labeled.labels[picked], labeled.class_names, files,
                      {**labeled.record, "count": len(picked), "seed": seed, "sha256": _digest(root, files),
                       "images_per_class": _per_class(labeled.labels[picked], labeled.class_names)})


def photos_record(size: int) -> dict[str, Any]:
    """What the artifact record says when int8 is calibrated on the sample photos (no data given)."""
    from export.model import samples
    images = samples.photos(size)
    return {"source": "the scikit-image sample photos", "path": "skimage.data", "count": len(images),
            "sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()}
