"""Fine-tune a variant's head on a class-per-folder image tree, and write a run directory.

Phase 1 trains the head with the backbone frozen. On the fast path (the default) the head is
fitted on cached backbone features, scaled per channel, and the scaling is folded into the head
(export.training.head_fit: L-BFGS for the dense head, Adam for the conv heads, a grid point chosen
on the validation split), and a logistic-regression probe on the same features is reported beside
it. Phase 2 (optional) unfreezes the last N ResNet stages (BatchNorm stays frozen) and trains
through the full graph at a lower learning rate, with augmentation that is not part of the saved
model. Adam fits are `model.fit` with EarlyStopping (best weights restored), ModelCheckpoint and CSVLogger.

RUN_DIR (staged beside its final place, renamed when complete): model.keras, labels.txt,
metrics.json, history.csv, training.png, confusion.png, config.json.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from export.core.errors import DataError, UsageError
from export.model.build import build, set_trainable_stages
from export.model.variants import get_variant
from export.model.weights import seed_everything
from export.training import data as data_mod
from export.training import fitting, head_fit
from export.training import report as train_report
from export.training.head_fit import Batches, predict_logits
from export.training.settings import TRAIN_FORMAT_VERSION, TrainSettings


def strategy_for(distribute: str):
    """The tf.distribute strategy for `--distribute`: none (default device) or mirrored over every
    local GPU, or over the logical CPUs when there is no GPU; fewer than two devices is an error."""
    import tensorflow as tf
    if distribute == "none":
        return tf.distribute.get_strategy(), []
    if distribute != "mirrored":
        raise UsageError(f"unknown --distribute {distribute!r}; choose none or mirrored")
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
              [d.name for d in tf.config.list_logical_devices("CPU")]
    short = [name.rpartition("device:")[2] for name in devices]  # "GPU:0", "CPU:1"
    if len(devices) < 2:
        raise UsageError(f"--distribute mirrored needs at least two devices, this machine has one ({short[0]}); "
                         "use --distribute none, or a machine with two or more GPUs")
    return tf.distribute.MirroredStrategy(devices), short


def graph_trainer(model: keras.Model, augment: bool, seed: int) -> keras.Model:
    """image -> (augmentation, training only) -> model -> logits, for fitting through the full graph."""
    inputs = keras.Input(tuple(model.input.shape[1:]), name="image")
    x = inputs
    if augment:
        for layer in (keras.layers.RandomFlip("horizontal", seed=seed), keras.layers.RandomRotation(0.05, seed=seed),
                      keras.layers.RandomZoom(0.1, seed=seed), keras.layers.RandomContrast(0.1, seed=seed)):
            x = layer(x)
    return keras.Model(inputs, model(x)["logits"], name="trainer")


def tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    from export import __version__
    return {"python": platform.python_version(), "resnet-deploy": __version__,
            **{pkg: version(pkg) for pkg in ("tensorflow", "keras", "numpy", "pillow")}}


@dataclass
class Split:
    """The images of a run and their split: training indices into `folder`; validation images from a
    --val-data folder (`val_folder`) or indices into `folder` (`val_idx`)."""

    folder: data_mod.ImageFolder
    train_idx: np.ndarray
    val_folder: data_mod.ImageFolder | None
    val_idx: np.ndarray | None

    @property
    def class_names(self) -> list[str]:
        return self.folder.class_names

    @property
    def y_train(self) -> np.ndarray:
        return self.folder.labels[self.train_idx]

    @property
    def y_val(self) -> np.ndarray:
        return self.val_folder.labels if self.val_folder is not None else self.folder.labels[self.val_idx]

    @property
    def images_train(self) -> np.ndarray:
        return self.folder.images[self.train_idx]

    @property
    def images_val(self) -> np.ndarray:
        return self.val_folder.images if self.val_folder is not None else self.folder.images[self.val_idx]

    def data_record(self) -> dict[str, Any]:
        val_per_class = self.val_folder.per_class() if self.val_folder is not None else self.folder.per_class(self.val_idx)
        return {**self.folder.summary(), "train_images_per_class": self.folder.per_class(self.train_idx),
                "val_images_per_class": val_per_class}


def read_split(data: str | Path, val_data: str | Path | None, size: int, settings: TrainSettings,
               num_classes: int | None) -> Split:
    """Decode the image folder(s) and split them (DataError for bad folders or a bad --num-classes)."""
    folder = data_mod.read_image_folder(data, size, max_per_class=settings.max_per_class, seed=settings.seed)
    k = len(folder.class_names)
    if num_classes is not None and num_classes != k:
        raise DataError(f"--num-classes {num_classes} disagrees with the {k} class folders in {data} "
                        f"({', '.join(folder.class_names)}); drop --num-classes or fix the folders")
    if val_data is not None:
        val_folder = data_mod.read_image_folder(val_data, size, what="--val-data", class_names=folder.class_names)
        return Split(folder, np.arange(len(folder.labels)), val_folder, None)
    train_idx, val_idx = data_mod.stratified_split(folder.labels, settings.val_split, settings.seed, folder.class_names)
    return Split(folder, train_idx, None, val_idx)


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UsageError(f"RUN_DIR {out} already exists; pass --overwrite to replace it or choose another --out")


def _phase1_on_features(model: keras.Model, split: Split, job: dict[str, Any], cache: Path,
                        seconds: dict[str, float]) -> dict[str, Any]:
    """Cached features, the probe on them, and the head fitted on them (head_fit.fit_on_features)."""
    settings, replicas = job["settings"], job["replicas"]
    tick = time.perf_counter()
    digest = head_fit.backbone_digest(model)
    share = job["share_maps"]
    feats, info = head_fit.cached_features(model, split.folder, cache, settings.batch_size, digest, replicas, share)
    cache_info: dict[str, Any] = {"used": True, **info}
    if split.val_folder is not None:
        val_feats, cache_info["val"] = head_fit.cached_features(model, split.val_folder, cache, settings.batch_size,
                                                                digest, replicas, share)
    else:
        val_feats = feats[split.val_idx]
    x_train, x_val = feats[split.train_idx], val_feats
    seconds["features"] = time.perf_counter() - tick
    probe = fitting.probe(x_train, split.y_train, x_val, split.y_val)
    tick = time.perf_counter()
    with job["strategy"].scope():
        trainer = head_fit.head_model(model)
    seed_everything(settings.seed)
    record, done = head_fit.fit_on_features(trainer, x_train, split.y_train, x_val, split.y_val, settings,
                                            job["stage"], job)
    seconds["phase1"] = time.perf_counter() - tick
    return {"trainer": trainer, "x_train": x_train, "x_val": x_val, "epochs": done, "head_fit": record,
            "probe": probe, "feature_cache": cache_info}


def _phase1_on_images(model: keras.Model, split: Split, job: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
    """Phase 1 through the full graph (--no-feature-cache): one Adam fit, no scaling, no probe."""
    settings, replicas = job["settings"], job["replicas"]
    lr = settings.learning_rate or fitting.ADAM_LR_GRID[0]
    with job["strategy"].scope():
        trainer = graph_trainer(model, augment=False, seed=settings.seed)
    seed_everything(settings.seed)
    tick = time.perf_counter()
    with job["strategy"].scope():
        done = head_fit.fit_keras(trainer, Batches(split.images_train, split.y_train, settings.batch_size,
                                                   settings.seed, replicas),
                                  Batches(split.images_val, split.y_val, settings.batch_size, replicas=replicas),
                                  epochs=settings.epochs, initial_epoch=0, lr=lr, settings=settings,
                                  stage=job["stage"], phase=1, verbose=job["verbose"], log=job["log"])
    seconds["phase1"] = time.perf_counter() - tick
    return {"epochs": done, "head_fit": {"solver": "adam", "chosen": {"learning_rate": lr}, "scaling": None},
            "probe": None, "feature_cache": {"used": False}}


def _phase2(model: keras.Model, split: Split, job: dict[str, Any], done: int, lr1: float) -> int:
    """Fine-tune the last stages through the full graph, with augmentation; returns the epochs run."""
    settings, replicas = job["settings"], job["replicas"]
    set_trainable_stages(model.get_layer("resnet50"), settings.unfreeze_stages)
    with job["strategy"].scope():
        tuner = graph_trainer(model, augment=True, seed=settings.seed)
        epochs = head_fit.fit_keras(
            tuner, Batches(split.images_train, split.y_train, settings.batch_size, settings.seed + 1, replicas),
            Batches(split.images_val, split.y_val, settings.batch_size, replicas=replicas),
            epochs=done + settings.fine_tune_epochs, initial_epoch=done,
            lr=settings.fine_tune_learning_rate or lr1 / 10, settings=settings, stage=job["stage"], phase=2,
            verbose=job["verbose"], log=job["log"])
    set_trainable_stages(model.get_layer("resnet50"), 0)
    return epochs


def _fit_and_measure(model: keras.Model, split: Split, job: dict[str, Any], cache: Path,
                     seconds: dict[str, float]) -> dict[str, Any]:
    """Phases 1 and 2, then the metrics of the trained model on both splits (metrics.json's body)."""
    settings, replicas = job["settings"], job["replicas"]
    p1 = _phase1_on_features(model, split, job, cache, seconds) if settings.feature_cache \
        else _phase1_on_images(model, split, job, seconds)
    epochs_run = {"phase1": p1["epochs"]}
    if settings.unfreeze_stages:
        tick = time.perf_counter()
        lr1 = settings.learning_rate or p1["head_fit"]["chosen"].get("learning_rate") or fitting.ADAM_LR_GRID[0]
        epochs_run["phase2"] = _phase2(model, split, job, p1["epochs"], lr1)
        seconds["phase2"] = time.perf_counter() - tick
    tick = time.perf_counter()
    on_features = "trainer" in p1 and not settings.unfreeze_stages
    evaluate = p1["trainer"] if on_features else model
    train_logits = predict_logits(evaluate, p1["x_train"] if on_features else split.images_train,
                                  settings.batch_size, replicas)
    val_logits = predict_logits(evaluate, p1["x_val"] if on_features else split.images_val, settings.batch_size,
                                replicas)
    check = {}
    if on_features:  # the saved model must give what the (folded) head gave on the cached features
        n = min(8, len(split.y_val))
        full = predict_logits(model, split.images_val[:n], settings.batch_size, replicas)
        check = {"fast_path_max_abs_logit_diff": float(np.abs(full - val_logits[:n]).max())}
    seconds["evaluate"] = time.perf_counter() - tick
    names = split.class_names
    return {"train": train_report.classification_metrics(split.y_train, train_logits, names),
            "val": train_report.classification_metrics(split.y_val, val_logits, names),
            "probe": p1["probe"], "head_fit": p1["head_fit"], "data": split.data_record(),
            "val_data": split.val_folder.summary() if split.val_folder is not None else None,
            "epochs_run": epochs_run, "feature_cache": p1["feature_cache"], **check}


def _write_run(stage: Path, model: keras.Model, metrics: dict[str, Any], config: dict[str, Any], title: str) -> None:
    names = metrics["class_names"]
    model.save(stage / "model.keras")
    (stage / "labels.txt").write_text("\n".join(names) + "\n")
    history = train_report.read_history(stage / "history.csv")
    train_report.plot_history(history, stage / "training.png", title)
    train_report.plot_confusion(metrics["val"]["confusion_matrix"], names, stage / "confusion.png",
                                f"{config['variant']}: validation, accuracy {metrics['val']['accuracy']:.3f}")
    (stage / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(stage / ".checkpoints")


def train(variant: str, data: str | Path, out: str | Path, *, weights: str = "random:0",
          num_classes: int | None = None, settings: TrainSettings | None = None,
          val_data: str | Path | None = None, distribute: str = "none", overwrite: bool = False,
          cache_dir: str | Path | None = None, verbose: int = 2, log: Callable[[str], None] | None = None,
          extra_config: dict[str, Any] | None = None, wait: bool = False, share_maps: bool = False) -> dict[str, Any]:
    """Train `variant` on the image folder `data` and write RUN_DIR `out`; returns metrics.json's dict.
    `share_maps`: a head that pools first caches the backbone's maps, not only its pooled vectors, for
    the conv heads trained after it on the same data (head_fit.cached_features).

    Every bad input raises before anything is written; RUN_DIR appears complete or not at all. The
    run holds the lock of RUN_DIR's parent while it writes (export/core/locks.py: another run there
    refuses, or waits with wait=True), and checks under it that RUN_DIR is still absent (or --overwrite).
    """
    import tensorflow as tf

    from export.core.atomic import staged_dir
    from export.core.locks import exclusive_output
    started = time.perf_counter()
    settings = (settings or TrainSettings()).check()
    tf.get_logger().setLevel("ERROR")  # "calls triggered tf.function retracing": one predict per array, harmless
    spec = get_variant(variant)
    out = Path(out)
    _refuse_existing(out, overwrite)  # at once; again under the lock, where it counts
    strategy, devices = strategy_for(distribute)
    replicas = int(strategy.num_replicas_in_sync)
    if settings.batch_size < replicas:
        raise UsageError(f"--batch-size {settings.batch_size} is smaller than the {replicas} devices of "
                         f"--distribute {distribute}; use --batch-size {replicas} or more")
    size = settings.input_size or spec.input_size
    split = read_split(data, val_data, size, settings, num_classes)
    seconds: dict[str, float] = {"data": time.perf_counter() - started}
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    with strategy.scope():
        built = build(spec, weights=weights, num_classes=len(split.class_names), input_size=size,
                      labels=split.class_names)
    with exclusive_output(out.parent, command=f"resnet-deploy train {variant}", wait=wait):
        _refuse_existing(out, overwrite)
        with staged_dir(out, overwrite=overwrite) as stage:
            (stage / ".checkpoints").mkdir()
            job = {"settings": settings, "stage": stage, "strategy": strategy, "replicas": replicas,
                   "verbose": verbose, "log": log, "share_maps": share_maps}
            body = _fit_and_measure(built.model, split, job, cache, seconds)
            seconds["total"] = time.perf_counter() - started
            metrics = {"format_version": TRAIN_FORMAT_VERSION, "variant": variant, "class_names": split.class_names,
                       **body, "seconds": {k: round(v, 2) for k, v in seconds.items()}}
            config = {
                "format_version": TRAIN_FORMAT_VERSION, "variant": variant, "spec": spec.to_dict(),
                "data": str(Path(data).resolve()), "val_data": str(Path(val_data).resolve()) if val_data else None,
                "data_sha256": split.folder.sha256,
                "val_data_sha256": split.val_folder.sha256 if split.val_folder is not None else None,
                "weights": weights, "weights_provenance": built.weights, "num_classes": len(split.class_names),
                "input_size": size, "settings": asdict(settings), "distribute": distribute, "devices": devices,
                "replicas": replicas, "cache_dir": str(cache), "tool_versions": tool_versions(), **(extra_config or {}),
            }
            _write_run(stage, built.model, metrics, config, f"{variant} on {Path(data).name}")
    return metrics


def default_cache_dir() -> Path:
    """$RESNET_DEPLOY_CACHE, else $XDG_CACHE_HOME/resnet-deploy/features (~/.cache/...)."""
    import os
    if os.environ.get("RESNET_DEPLOY_CACHE"):
        return Path(os.environ["RESNET_DEPLOY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-deploy" / "features"
