"""Fine-tune a variant's head on a class-per-folder image tree, and write a run directory.

Phase 1 trains the head with the backbone frozen. On the fast path (the default) the backbone's
features are computed once per image and cached on disk, keyed by a hash of the data, the
backbone weights and the input size, and the head alone is fitted on them: the head's own layers
are reused, so the full model is trained in place. Phase 2 (optional) unfreezes the last N ResNet
stages (BatchNorm stays frozen) and trains through the full graph at a lower learning rate, with
augmentation that is not part of the saved model. Both phases are `model.fit` with EarlyStopping
(best weights restored), ModelCheckpoint and CSVLogger.

RUN_DIR (staged beside its final place, renamed when complete): model.keras, labels.txt,
metrics.json, history.csv, training.png, confusion.png, config.json.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import numpy as np

from export.core.errors import DataError, UsageError
from export.model.build import build, set_trainable_stages
from export.model.variants import get_variant
from export.model.weights import seed_everything
from export.training import data as data_mod
from export.training import report as train_report
from export.training.settings import TRAIN_FORMAT_VERSION, TrainSettings


class Batches(keras.utils.PyDataset):
    """(x, y) batches from arrays (uint8 images or float features), cast to float32 one batch at a
    time; shuffled per epoch by a seeded permutation when `seed` is given (deterministic).

    Under MirroredStrategy (`replicas` > 1) every batch must split evenly across the replicas (TF
    sums per-replica tensors of one shape), so a short last batch is padded by repeating its last
    example: with labels the batches carry sample weights, 0 on the padding, so no example counts
    twice; without labels (predict) `n_out` says how many leading outputs are real.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray | None, batch_size: int, seed: int | None = None,
                 replicas: int = 1):
        super().__init__()
        self.x, self.y, self.seed, self.epoch, self.replicas = x, y, seed, 0, replicas
        self.bounds = [*range(0, len(x), batch_size), len(x)]
        self.order = self._order()

    @property
    def n_out(self) -> int:
        return len(self.x)

    def _order(self) -> np.ndarray:
        n = len(self.x)
        return np.arange(n) if self.seed is None else np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, i: int):
        idx = self.order[self.bounds[i]:self.bounds[i + 1]]
        real = len(idx)
        pad = (-real) % self.replicas
        if pad:
            idx = np.concatenate([idx, np.repeat(idx[-1:], pad)])
        x = self.x[idx].astype(np.float32)
        if self.y is None:
            return x
        if self.replicas == 1:
            return x, self.y[idx]
        weights = np.ones(len(idx), np.float32)
        weights[real:] = 0.0
        return x, self.y[idx], weights

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()


class PhaseCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger (appending) with a `phase` column: 1 = head on frozen backbone, 2 = fine-tuning."""

    def __init__(self, filename: str, phase: int):
        super().__init__(filename, append=True)
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, {**(logs or {}), "phase": self.phase})


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


def pools_first(model: keras.Model) -> bool:
    """Whether the head starts by pooling: then the cached features are the pooled 2048-vectors
    (the head's GlobalAveragePooling2D output), else the backbone's feature maps."""
    first = next(la for la in model.layers if la.name.startswith("head_"))
    return isinstance(first, keras.layers.GlobalAveragePooling2D)


def head_model(model: keras.Model) -> keras.Model:
    """The head of `model` (its own layer objects: training it trains `model`) as a model from the
    cached features (see `pools_first`) to the logits."""
    layers = [la for la in model.layers if la.name.startswith("head_")] + [model.get_layer("logits")]
    shape = tuple(layers[0].input.shape[1:])
    if pools_first(model):
        layers, shape = layers[1:], (shape[-1],)
    x = inputs = keras.Input(shape, name="features")
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name="head")


def graph_trainer(model: keras.Model, augment: bool, seed: int) -> keras.Model:
    """image -> (augmentation, training only) -> model -> logits, for fitting through the full graph."""
    inputs = keras.Input(tuple(model.input.shape[1:]), name="image")
    x = inputs
    if augment:
        for layer in (keras.layers.RandomFlip("horizontal", seed=seed), keras.layers.RandomRotation(0.05, seed=seed),
                      keras.layers.RandomZoom(0.1, seed=seed), keras.layers.RandomContrast(0.1, seed=seed)):
            x = layer(x)
    return keras.Model(inputs, model(x)["logits"], name="trainer")


def feature_extractor(model: keras.Model) -> keras.Model:
    """image -> what the fast path caches: the pooled features or the backbone's maps."""
    first = next(la for la in model.layers if la.name.startswith("head_"))
    return keras.Model(model.input, first.output if pools_first(model) else first.input, name="features")


def backbone_digest(model: keras.Model) -> str:
    """sha256 of the weights in front of the head (preprocessing and backbone)."""
    h = hashlib.sha256()
    for name in ("preprocess", "resnet50"):
        for w in model.get_layer(name).get_weights():
            h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def cached_features(model: keras.Model, folder: data_mod.ImageFolder, cache_dir: Path, batch_size: int,
                    digest: str, replicas: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """The backbone's features of every image of `folder`, from `cache_dir` when computed before."""
    from export.core.atomic import ensure_writable_dir, replacing
    key = hashlib.sha256(json.dumps([digest, folder.sha256, folder.images.shape[1], pools_first(model),
                                     data_mod.DECODE_VERSION]).encode()).hexdigest()
    path = Path(cache_dir) / f"{key}.npy"
    if path.is_file():
        features = np.load(path)
        if len(features) == len(folder.images):
            return features, {"key": key, "hit": True, "path": str(path)}
    extractor = feature_extractor(model)
    batches = Batches(folder.images, None, batch_size, replicas=replicas)
    features = np.asarray(extractor.predict(batches, verbose=0), dtype=np.float32)[:batches.n_out]
    ensure_writable_dir(cache_dir)
    with replacing(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, features)
    return features, {"key": key, "hit": False, "path": str(path)}


def _fit(trainer: keras.Model, train: Batches, val: Batches, *, epochs: int, initial_epoch: int, lr: float,
         settings: TrainSettings, stage: Path, phase: int, verbose: int, log: Callable[[str], None] | None) -> int:
    """compile + fit with the three callbacks; returns the number of epochs run."""
    trainer.compile(optimizer=keras.optimizers.Adam(lr),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(stage / ".checkpoints" / f"phase{phase}-best.weights.h5"),
                                        monitor="val_loss", save_best_only=True, save_weights_only=True),
        PhaseCSVLogger(str(stage / "history.csv"), phase),
    ]
    if log:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: log(
            f"phase {phase} epoch {epoch + 1}/{epochs}: " + " ".join(f"{k} {v:.4f}" for k, v in logs.items()))))
    history = trainer.fit(train, validation_data=val, epochs=epochs, initial_epoch=initial_epoch,
                          callbacks=callbacks, verbose=verbose)
    return len(history.epoch)


def _logits(model: keras.Model, x: np.ndarray, batch_size: int, replicas: int = 1) -> np.ndarray:
    batches = Batches(x, None, batch_size, replicas=replicas)
    out = model.predict(batches, verbose=0)
    return np.asarray(out["logits"] if isinstance(out, dict) else out)[:batches.n_out]


def tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    from export import __version__
    return {"python": platform.python_version(), "resnet-deploy": __version__,
            **{pkg: version(pkg) for pkg in ("tensorflow", "keras", "numpy", "pillow")}}


def train(variant: str, data: str | Path, out: str | Path, *, weights: str = "random:0",
          num_classes: int | None = None, settings: TrainSettings | None = None,
          val_data: str | Path | None = None, distribute: str = "none", overwrite: bool = False,
          cache_dir: str | Path | None = None, verbose: int = 2, log: Callable[[str], None] | None = None,
          extra_config: dict[str, Any] | None = None, wait: bool = False) -> dict[str, Any]:
    """Train `variant` on the image folder `data` and write RUN_DIR `out`; returns metrics.json's dict.

    Every bad input raises before anything is written; RUN_DIR appears complete or not at all. The
    run holds the lock of RUN_DIR's parent while it writes (export/core/locks.py: another run there
    refuses, or waits with wait=True).
    """
    import tensorflow as tf

    from export.core.locks import staged_output
    started = time.perf_counter()
    settings = settings or TrainSettings()
    tf.get_logger().setLevel("ERROR")  # "calls triggered tf.function retracing": one predict per array, harmless
    settings.check()
    spec = get_variant(variant)
    out = Path(out)
    if out.exists() and not overwrite:
        raise UsageError(f"RUN_DIR {out} already exists; pass --overwrite to replace it or choose another --out")
    strategy, devices = strategy_for(distribute)
    replicas = int(strategy.num_replicas_in_sync)
    if settings.batch_size < replicas:
        raise UsageError(f"--batch-size {settings.batch_size} is smaller than the {replicas} devices of "
                         f"--distribute {distribute}; use --batch-size {replicas} or more")
    size = settings.input_size or spec.input_size
    folder = data_mod.read_image_folder(data, size, max_per_class=settings.max_per_class, seed=settings.seed)
    k = len(folder.class_names)
    if num_classes is not None and num_classes != k:
        raise DataError(f"--num-classes {num_classes} disagrees with the {k} class folders in {data} "
                        f"({', '.join(folder.class_names)}); drop --num-classes or fix the folders")
    if val_data is not None:
        val_folder = data_mod.read_image_folder(val_data, size, what="--val-data", class_names=folder.class_names)
        train_idx, val_idx = np.arange(len(folder.labels)), None
    else:
        train_idx, val_idx = data_mod.stratified_split(folder.labels, settings.val_split, settings.seed,
                                                       folder.class_names)
    seconds: dict[str, float] = {"data": time.perf_counter() - started}
    cache = Path(cache_dir) if cache_dir else default_cache_dir()

    with strategy.scope():
        built = build(spec, weights=weights, num_classes=k, input_size=size, labels=folder.class_names)
    model = built.model
    with staged_output(out, overwrite=True, command=f"resnet-deploy train {variant}", wait=wait) as stage:
        (stage / ".checkpoints").mkdir()
        tick = time.perf_counter()
        cache_info: dict[str, Any] = {"used": settings.feature_cache}
        y_train = folder.labels[train_idx]
        y_val = val_folder.labels if val_idx is None else folder.labels[val_idx]
        if settings.feature_cache:
            digest = backbone_digest(model)
            feats, info = cached_features(model, folder, cache, settings.batch_size, digest, replicas)
            cache_info.update(info)
            if val_idx is None:
                val_feats, val_info = cached_features(model, val_folder, cache, settings.batch_size, digest, replicas)
                cache_info["val"] = val_info
            else:
                val_feats = feats[val_idx]
            x_train, x_val = feats[train_idx], val_feats
            seconds["features"] = time.perf_counter() - tick
            with strategy.scope():
                trainer = head_model(model)
        else:
            x_train = folder.images[train_idx]
            x_val = val_folder.images if val_idx is None else folder.images[val_idx]
            with strategy.scope():
                trainer = graph_trainer(model, augment=False, seed=settings.seed)
        seed_everything(settings.seed)
        tick = time.perf_counter()
        with strategy.scope():
            done = _fit(trainer, Batches(x_train, y_train, settings.batch_size, settings.seed, replicas),
                        Batches(x_val, y_val, settings.batch_size, replicas=replicas), epochs=settings.epochs,
                        initial_epoch=0,
                        lr=settings.learning_rate, settings=settings, stage=stage, phase=1, verbose=verbose, log=log)
        seconds["phase1"] = time.perf_counter() - tick
        epochs_run = {"phase1": done}

        images_train = folder.images[train_idx]
        images_val = val_folder.images if val_idx is None else folder.images[val_idx]
        if settings.unfreeze_stages:
            tick = time.perf_counter()
            set_trainable_stages(model.get_layer("resnet50"), settings.unfreeze_stages)
            with strategy.scope():
                tuner = graph_trainer(model, augment=True, seed=settings.seed)
                epochs_run["phase2"] = _fit(
                    tuner, Batches(images_train, y_train, settings.batch_size, settings.seed + 1, replicas),
                    Batches(images_val, y_val, settings.batch_size, replicas=replicas),
                    epochs=done + settings.fine_tune_epochs,
                    initial_epoch=done, lr=settings.fine_tune_learning_rate or settings.learning_rate / 10,
                    settings=settings, stage=stage, phase=2, verbose=verbose, log=log)
            set_trainable_stages(model.get_layer("resnet50"), 0)
            seconds["phase2"] = time.perf_counter() - tick

        tick = time.perf_counter()
        on_features = settings.feature_cache and not settings.unfreeze_stages
        evaluate = trainer if on_features else model
        train_logits = _logits(evaluate, x_train if on_features else images_train, settings.batch_size, replicas)
        val_logits = _logits(evaluate, x_val if on_features else images_val, settings.batch_size, replicas)
        check = {}
        if on_features:  # the saved model must give what the head gave on the cached features
            n = min(8, len(images_val))
            full = _logits(model, images_val[:n], settings.batch_size, replicas)
            check = {"fast_path_max_abs_logit_diff": float(np.abs(full - val_logits[:n]).max())}
        seconds["evaluate"] = time.perf_counter() - tick

        names = folder.class_names
        metrics: dict[str, Any] = {
            "format_version": TRAIN_FORMAT_VERSION, "variant": variant, "class_names": names,
            "train": train_report.classification_metrics(y_train, train_logits, names),
            "val": train_report.classification_metrics(y_val, val_logits, names),
            "data": {**folder.summary(), "train_images_per_class": folder.per_class(train_idx),
                     "val_images_per_class": val_folder.per_class() if val_idx is None else folder.per_class(val_idx)},
            "val_data": val_folder.summary() if val_idx is None else None,
            "epochs_run": epochs_run, "feature_cache": cache_info, **check,
        }
        model.save(stage / "model.keras")
        (stage / "labels.txt").write_text("\n".join(names) + "\n")
        history = train_report.read_history(stage / "history.csv")
        train_report.plot_history(history, stage / "training.png", f"{variant} on {Path(data).name}")
        train_report.plot_confusion(metrics["val"]["confusion_matrix"], names, stage / "confusion.png",
                                    f"{variant}: validation, accuracy {metrics['val']['accuracy']:.3f}")
        seconds["total"] = time.perf_counter() - started
        metrics["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
        config = {
            "format_version": TRAIN_FORMAT_VERSION, "variant": variant, "spec": spec.to_dict(),
            "data": str(Path(data).resolve()), "val_data": str(Path(val_data).resolve()) if val_data else None,
            "data_sha256": folder.sha256, "val_data_sha256": val_folder.sha256 if val_idx is None else None,
            "weights": weights, "weights_provenance": built.weights, "num_classes": k, "input_size": size,
            "settings": asdict(settings), "distribute": distribute, "devices": devices,
            "replicas": replicas, "cache_dir": str(cache),
            "tool_versions": tool_versions(), **(extra_config or {}),
        }
        (stage / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        import shutil
        shutil.rmtree(stage / ".checkpoints")
    return metrics


def default_cache_dir() -> Path:
    """$RESNET_DEPLOY_CACHE, else $XDG_CACHE_HOME/resnet-deploy/features (~/.cache/...)."""
    import os
    if os.environ.get("RESNET_DEPLOY_CACHE"):
        return Path(os.environ["RESNET_DEPLOY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-deploy" / "features"
