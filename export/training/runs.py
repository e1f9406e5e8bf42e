"""Cached training runs for `make train` and `make export`: a configured variant is trained once
and its run directory reused while the data, the training settings and the weights hash match.

A run lives in `<runs>/<variant>-<key[:12]>/` (the RUN_DIR of export.training.train), where the key hashes
the variant's spec, the data's content sha256, the settings and the weights' identity; `demo:NAME`
data is written once to `<runs>/data/NAME/`, and backbone features are cached in `<runs>/features/`.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from export.core.errors import UsageError


def weights_identity(weights: str) -> str:
    """What identifies the starting weights: random:SEED, a file's sha256, or the ImageNet file's."""
    from export.core.atomic import sha256_file
    from export.model.weights import parse_weights
    source = parse_weights(weights)
    if source.kind == "file":
        return f"file:{sha256_file(str(source.path))}"
    if source.kind == "imagenet":
        cached = Path.home() / ".keras" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return f"imagenet:{sha256_file(cached)}" if cached.is_file() else "imagenet"
    return str(source)


@dataclass
class Run:
    """A complete run directory and what the bundle records about it."""

    path: Path
    key: str
    cached: bool
    data: str
    metrics: dict[str, Any]
    config: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def class_names(self) -> list[str]:
        return (self.path / "labels.txt").read_text().splitlines()

    @property
    def val_accuracy(self) -> float:
        return float(self.metrics["val"]["accuracy"])

    def provenance(self) -> dict[str, Any]:
        """The manifest's `training` record of a variant."""
        m, c = self.metrics, self.config
        return {"data": self.data, "data_sha256": c["data_sha256"], "images_per_class": m["data"]["images_per_class"],
                "val_images": m["val"]["images"], "val_accuracy": m["val"]["accuracy"], "val_loss": m["val"]["loss"],
                "train_accuracy": m["train"]["accuracy"], "per_class": m["val"]["per_class"],
                "epochs_run": m["epochs_run"], "seconds": m["seconds"]["total"], "run": str(self.path),
                "run_key": self.key, "cached": self.cached, "weights": c["weights"], "input_size": c["input_size"],
                "settings": c["settings"], "tool_versions": c["tool_versions"], **self.report_data()}

    def report_data(self) -> dict[str, Any]:
        """What a bundle's report.html and model card draw from a run: history.csv per epoch, the
        validation confusion matrix, images per class in the validation split, and the probe baseline
        (a standardised logistic regression on the same features) when the run reports one."""
        from export.training.report import read_history
        history = self.path / "history.csv"
        return {"history": read_history(history) if history.is_file() else [],
                "confusion_matrix": self.metrics["val"].get("confusion_matrix"),
                "val_images_per_class": self.metrics["data"].get("val_images_per_class"),
                "probe": self.metrics.get("probe")}

    def summary(self) -> dict[str, Any]:
        return {"variant": self.config["variant"], "run": str(self.path), "cached": self.cached, "data": self.data,
                "val_accuracy": self.val_accuracy, "seconds": self.metrics["seconds"]["total"]}


def run_key(spec, data_sha256: str, settings, weights: str) -> str:
    from export import __version__
    from export.training.settings import TRAIN_FORMAT_VERSION
    doc = {"format": TRAIN_FORMAT_VERSION, "resnet-deploy": __version__, "spec": spec.to_dict(),
           "data": data_sha256, "settings": asdict(settings), "weights": weights_identity(weights)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def ensure_run(variant: dict[str, Any], runs: str | Path, log: Callable[[str], None] | None = None,
               wait: bool = False) -> Run:
    """The run of a configured variant (`name`, `data`, optional `train`, `weights`, `num_classes`):
    reused from `runs` when its key matches, else trained now (staged, then renamed)."""
    from export.model.variants import get_variant
    from export.training import data as data_mod
    from export.training.settings import TrainSettings
    from export.training.train import train
    runs = Path(runs)
    name = variant["name"]
    spec = get_variant(name)
    settings = variant.get("settings") or TrainSettings()
    folder = data_mod.resolve_data(variant["data"], runs / "data")
    index = data_mod.scan_folder(folder, what=f"variant {name!r} data")
    k = variant.get("num_classes")
    if k is not None and k != len(index.class_names):
        raise UsageError(f"variant {name!r}: num_classes = {k} but its data {variant['data']} has "
                         f"{len(index.class_names)} class folders; drop num_classes (the folders decide)")
    weights = variant.get("weights") or "random:0"
    key = run_key(spec, data_mod.data_sha256(folder, settings.max_per_class, settings.seed), settings, weights)
    path = runs / f"{name}-{key[:12]}"
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        if config.get("run_key") == key:
            return Run(path, key, True, variant["data"], json.loads((path / "metrics.json").read_text()), config)
    metrics = train(name, folder, path, weights=weights, settings=settings, overwrite=True,
                    cache_dir=runs / "features", verbose=0, log=log,
                    extra_config={"run_key": key, "config_data": variant["data"]}, wait=wait)
    config = json.loads((path / "config.json").read_text())
    return Run(path, key, False, variant["data"], metrics, config)
