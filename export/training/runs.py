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
                "probe_val_accuracy": (m.get("probe") or {}).get("val_accuracy"),
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


#: The code whose change changes a trained model: export/training/*.py and these of export/model/.
TRAINING_CODE = ("build.py", "variants.py", "weights.py", "samples.py")


def training_code_sha256(package: str | Path | None = None) -> str:
    """sha256 over the training code's sources (`package`: the `export` package folder, default this one)."""
    root = Path(package) if package else Path(__file__).resolve().parents[1]
    files = sorted((root / "training").glob("*.py")) + [root / "model" / name for name in TRAINING_CODE]
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes() + b"\0")
    return h.hexdigest()


def framework_versions() -> dict[str, str]:
    from importlib.metadata import version
    return {pkg: version(pkg) for pkg in ("tensorflow", "keras", "numpy", "scikit-learn")}


def run_key(spec, data_sha256: str, settings, weights: str, versions: dict[str, str] | None = None,
            code_sha256: str | None = None) -> str:
    """What a cached run must match: format, variant spec, data, settings, weights, the TensorFlow and Keras
    (and NumPy, scikit-learn) versions and the training code's hash, so an upgrade never reuses a stale run."""
    from export import __version__
    from export.training.settings import TRAIN_FORMAT_VERSION
    doc = {"format": TRAIN_FORMAT_VERSION, "resnet-deploy": __version__, "spec": spec.to_dict(),
           "data": data_sha256, "settings": asdict(settings), "weights": weights_identity(weights),
           "versions": versions if versions is not None else framework_versions(),
           "code": code_sha256 or training_code_sha256()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def maps_sharers(variants: list[dict[str, Any]]) -> list[bool]:
    """Per configured variant with `data`, in the order given (the order they train in): whether it
    trains with `share_maps` (export.training.head_fit.cached_features), i.e. its head pools first and
    a conv head trains after it on the same data and weights, which then takes the maps it cached."""
    from export.model.variants import get_variant
    pools = [get_variant(v["name"]).pools_first for v in variants]
    same = [(v["data"], v.get("weights")) for v in variants]
    return [pools[i] and any(same[j] == same[i] and not pools[j] for j in range(i + 1, len(variants)))
            for i in range(len(variants))]


def ensure_run(variant: dict[str, Any], runs: str | Path, log: Callable[[str], None] | None = None,
               wait: bool = False, share_maps: bool = False) -> Run:
    """The run of a configured variant (`name`, `data`, optional `train`, `weights`, `num_classes`):
    reused from `runs` when its key matches, else trained now (staged, then renamed). `share_maps`:
    see maps_sharers."""
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
                    extra_config={"run_key": key, "config_data": variant["data"]}, wait=wait,
                    share_maps=share_maps)
    config = json.loads((path / "config.json").read_text())
    return Run(path, key, False, variant["data"], metrics, config)


@dataclass
class RunModel:
    """A trained model file and what its run directory (export.training.train's RUN_DIR) says about
    it: `export`/`parity` take the class count from the model and the labels from labels.txt beside it."""

    path: Path
    num_classes: int
    labels: list[str] | None
    variant: str | None
    input_size: int | None

    def check_variant(self, variant: str | None) -> str:
        """The variant to export: `variant` when given (it must agree with the run's), else the run's."""
        if variant and self.variant and variant != self.variant:
            raise UsageError(f"--variant {variant} but {self.path.parent / 'config.json'} trained {self.variant!r}; "
                             f"drop --variant or give --variant {self.variant}")
        if not (variant or self.variant):
            raise UsageError(f"--variant is needed: no config.json beside {self.path} names it")
        return str(variant or self.variant)

    def check_classes(self, num_classes: int | None) -> int:
        if num_classes is not None and num_classes != self.num_classes:
            raise UsageError(f"--num-classes {num_classes} but {self.path} has {self.num_classes} outputs; "
                             "drop --num-classes (the model decides)")
        return self.num_classes


def keras_file_shape(path: Path) -> tuple[int, int | None]:
    """The units of the `logits` layer of a .keras file and its input size (None if not square and
    fixed), read from its config.json (no model is built)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise UsageError(f"cannot read {path} as a .keras file ({e}); give the model.keras of a training run") from None
    layers = [layer.get("config", {}) for layer in config.get("config", {}).get("layers", [])]
    found = [c["units"] for c in layers if c.get("name") == "logits" and "units" in c]
    if len(found) != 1:
        raise UsageError(f"{path} has no `logits` Dense layer; is it a model saved by resnet-deploy build or train?")
    shapes = [c.get("batch_shape") for c in layers if c.get("name") == "image"]
    shape = shapes[0] if shapes and isinstance(shapes[0], list) and len(shapes[0]) == 4 else [None] * 4
    return int(found[0]), (int(shape[1]) if shape[1] and shape[1] == shape[2] else None)


def run_model(weights: str | None, run: str | None) -> RunModel | None:
    """The RunModel of `--run DIR` or of `--weights FILE.keras`, else None (random, imagenet, .weights.h5).
    A missing model.keras, or a labels.txt whose line count is not the model's outputs, is a UsageError."""
    if run is not None:
        if weights:
            raise UsageError(f"give --run {run} or --weights {weights}, not both (--run uses {run}/model.keras)")
        path = Path(run) / "model.keras"
        if not path.is_file():
            raise UsageError(f"--run {run} has no model.keras ({path}); give a RUN_DIR written by resnet-deploy train")
    elif weights and weights.endswith(".keras") and Path(weights).is_file():
        path = Path(weights)
    else:
        return None
    k, size = keras_file_shape(path)
    labels_file = path.parent / "labels.txt"
    labels = labels_file.read_text().splitlines() if labels_file.is_file() else None
    if labels is not None and len(labels) != k:
        raise UsageError(f"{labels_file} has {len(labels)} lines but {path} has {k} outputs; "
                         "give one label per output (the run's labels.txt)")
    config_file = path.parent / "config.json"
    variant = None
    if config_file.is_file():
        try:
            variant = json.loads(config_file.read_text()).get("variant")
        except ValueError:
            variant = None
    return RunModel(path, k, labels, variant if isinstance(variant, str) else None, size)
