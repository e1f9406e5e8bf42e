"""Fit a variant's head on cached backbone features (the fast path), and the Keras pieces that
every fit shares: seeded batches, the epoch log, compile + fit with EarlyStopping.

The backbone's features are computed once per image and cached on disk (keyed by the backbone's
weights, the data, the input size and the decoding). The head's own layers are fitted on them,
so the full model is trained in place. The features are scaled per channel first (the training
split's statistics, export.training.fitting) and the scaling is folded into the head's first
layer afterwards: the saved model has the variant's layers and takes raw features. The dense head
is fitted by L-BFGS over an L2 grid, the conv heads by Adam over a learning-rate grid; the
validation split picks the grid point, and every trial is recorded.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from export.core.errors import UsageError
from export.model.weights import seed_everything
from export.training import data as data_mod
from export.training import fitting
from export.training.settings import TrainSettings


class Batches(keras.utils.PyDataset):
    """(x, y) batches from arrays (uint8 images or float features), cast to float32 one batch at a
    time; shuffled per epoch by a seeded permutation when `seed` is given (deterministic).

    Under MirroredStrategy (`replicas` > 1) every batch must split evenly across the replicas (TF
    sums per-replica tensors of one shape), so a short last batch is padded by repeating its last
    example: with labels the batches carry sample weights, 0 on the padding, so no example counts
    twice; without labels (predict) `n_out` says how many leading outputs are real. `transform`
    (e.g. the feature scaling) maps each float32 batch, so a scaled copy of all the features is never held.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray | None, batch_size: int, seed: int | None = None,
                 replicas: int = 1, transform: Callable[[np.ndarray], np.ndarray] | None = None):
        super().__init__()
        self.x, self.y, self.seed, self.epoch, self.replicas = x, y, seed, 0, replicas
        self.transform = transform
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
        if self.transform is not None:
            x = self.transform(x)
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


def _first_head_layer(model: keras.Model) -> keras.layers.Layer:
    return next(la for la in model.layers if la.name.startswith("head_"))


def pools_first(model: keras.Model) -> bool:
    """Whether the head starts by pooling: then it trains on the pooled 2048-vectors (its
    GlobalAveragePooling2D output), else on the backbone's feature maps."""
    return isinstance(_first_head_layer(model), keras.layers.GlobalAveragePooling2D)


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


def feature_extractor(model: keras.Model, maps: bool = False) -> keras.Model:
    """image -> what the head of `model` trains on: the pooled 2048-vectors when it pools first (see
    `pools_first`), else, or with `maps`, the backbone's feature maps (400 KB an image at 224 px, the
    pooled vectors 8 KB)."""
    first = _first_head_layer(model)
    return keras.Model(model.input, first.output if pools_first(model) and not maps else first.input, name="features")


def head_features(model: keras.Model, maps: np.ndarray) -> np.ndarray:
    """What the head of `model` trains on from cached maps: the maps, or pooled by the head's own
    GlobalAveragePooling2D when it pools first."""
    if not pools_first(model):
        return maps
    return np.asarray(_first_head_layer(model)(maps), dtype=np.float32)


def backbone_digest(model: keras.Model) -> str:
    """sha256 of the weights in front of the head (preprocessing and backbone)."""
    h = hashlib.sha256()
    for name in ("preprocess", "resnet50"):
        for w in model.get_layer(name).get_weights():
            h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def cached_features(model: keras.Model, folder: data_mod.ImageFolder, cache_dir: Path, batch_size: int,
                    digest: str, replicas: int = 1, share_maps: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """The features the head of `model` trains on, for every image of `folder`, from `cache_dir` when
    computed before. A head that pools first takes the backbone's maps when they are cached (pooled by
    its own GlobalAveragePooling2D); with `share_maps` it computes and caches the maps itself, for conv
    heads trained after it on the same data (make export: export.pipeline.run), so the variants of one
    backbone and data set take one feature pass between them; else it caches only the pooled vectors."""
    from export.core.atomic import ensure_writable_dir, replacing

    def cache_path(kind: str) -> tuple[str, Path]:
        key = hashlib.sha256(json.dumps([digest, folder.sha256, folder.images.shape[1], kind,
                                         data_mod.DECODE_VERSION]).encode()).hexdigest()
        return key, Path(cache_dir) / f"{key}.npy"

    pooled = pools_first(model)
    for kind in ("maps", "pooled") if pooled else ("maps",):
        key, path = cache_path(kind)
        if path.is_file():
            features = np.load(path)
            if len(features) == len(folder.images):
                return head_features(model, features) if kind == "maps" else features, \
                    {"key": key, "hit": True, "path": str(path)}
    maps = not pooled or share_maps
    key, path = cache_path("maps" if maps else "pooled")
    batches = Batches(folder.images, None, batch_size, replicas=replicas)
    extractor = feature_extractor(model, maps=maps)
    features = np.asarray(extractor.predict(batches, verbose=0), dtype=np.float32)[:batches.n_out]
    ensure_writable_dir(cache_dir)
    with replacing(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, features)
    return head_features(model, features) if maps else features, {"key": key, "hit": False, "path": str(path)}


def fit_keras(trainer: keras.Model, train: Batches, val: Batches, *, epochs: int, initial_epoch: int, lr: float,
              settings: TrainSettings, stage: Path, phase: int, verbose: int, log: Callable[[str], None] | None,
              csv: Path | None = None) -> int:
    """compile + fit with the three callbacks (the epoch log to `csv`, default RUN_DIR/history.csv);
    returns the number of epochs run."""
    trainer.compile(optimizer=keras.optimizers.Adam(lr),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(stage / ".checkpoints" / f"phase{phase}-best.weights.h5"),
                                        monitor="val_loss", save_best_only=True, save_weights_only=True),
        PhaseCSVLogger(str(csv or stage / "history.csv"), phase),
    ]
    if log:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: log(
            f"phase {phase} epoch {epoch + 1}/{epochs}: " + " ".join(f"{k} {v:.4f}" for k, v in logs.items()))))
    history = trainer.fit(train, validation_data=val, epochs=epochs, initial_epoch=initial_epoch,
                          callbacks=callbacks, verbose=verbose)
    return len(history.epoch)


def predict_logits(model: keras.Model, x: np.ndarray, batch_size: int, replicas: int = 1,
                   transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    batches = Batches(x, None, batch_size, replicas=replicas, transform=transform)
    out = model.predict(batches, verbose=0)
    return np.asarray(out["logits"] if isinstance(out, dict) else out)[:batches.n_out]




def first_weighted_layer(trainer: keras.Model) -> keras.layers.Layer:
    """The head's first layer with weights: where the feature scaling is folded."""
    return next(la for la in trainer.layers if la.weights)


def solver_for(trainer: keras.Model, settings: TrainSettings) -> str:
    """lbfgs when the head is one Dense on pooled features (a convex fit) and settings allow, else adam."""
    weighted = [la for la in trainer.layers if la.weights]
    convex = len(weighted) == 1 and isinstance(weighted[0], keras.layers.Dense)
    if settings.solver == "lbfgs" and not convex:
        raise UsageError(f"--solver lbfgs fits a head that is one Dense on pooled features (variant dense); this "
                         f"head has {len(weighted)} layers with weights; use --solver adam or auto")
    if settings.solver == "auto":
        return "lbfgs" if convex else "adam"
    return settings.solver


def scaling_for(trainer: keras.Model, x_train: np.ndarray, settings: TrainSettings) -> fitting.FeatureScaling | None:
    """Standardisation (mean and std) in front of a Dense; a scale only in front of a Conv2D, whose
    `same` zero padding a mean shift would move (fitting's docstring). None without settings.standardize."""
    if not settings.standardize:
        return None
    return fitting.feature_scaling(x_train, centred=isinstance(first_weighted_layer(trainer), keras.layers.Dense))


def fold_into(layer: keras.layers.Layer, scaling: fitting.FeatureScaling) -> None:
    """Rewrite `layer` (Dense or Conv2D, with bias) so that on raw features it gives what it gave on scaled ones."""
    kernel, bias = layer.get_weights()
    if isinstance(layer, keras.layers.Dense):
        layer.set_weights(list(fitting.fold_dense(kernel, bias, scaling)))
    else:
        layer.set_weights([fitting.fold_conv(kernel, scaling), bias])


def _write_history(rows: list[dict[str, float]], path: Path) -> None:
    """history.csv in the CSVLogger's layout (epoch first, then the sorted keys)."""
    keys = ["epoch", *sorted(k for k in rows[0] if k != "epoch")] if rows else ["epoch"]
    lines = [",".join(keys)] + [",".join(str(int(r[k]) if k in ("epoch", "phase") else r[k]) for k in keys)
                                for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _fit_lbfgs(trainer: keras.Model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
               y_val: np.ndarray, settings: TrainSettings, stage: Path) -> tuple[dict[str, Any], int]:
    """The logits Dense by L-BFGS at every L2 of the grid (largest first, each warm-started from the
    last); the validation split picks one. x_* are already scaled."""
    dense = first_weighted_layer(trainer)
    k = int(dense.units)
    grid = sorted((settings.l2,) if settings.l2 is not None else fitting.DENSE_L2_GRID, reverse=True)
    trials, fits = [], []
    start = None
    for l2 in grid:
        tick = time.perf_counter()
        w, b, info = fitting.fit_softmax(x_train, y_train, k, l2, start=start, val=(x_val, y_val))
        start = (w, b)
        acc, loss = fitting.accuracy_and_loss(np.asarray(x_val, np.float64) @ w + b, y_val)
        trials.append({"l2": l2, "val_accuracy": round(acc, 6), "val_loss": round(loss, 6),
                       "iterations": info["iterations"], "converged": info["converged"],
                       "seconds": round(time.perf_counter() - tick, 3)})
        fits.append((w, b, info["history"]))
    best = fitting.best_trial(trials)
    w, b, history = fits[best]
    dense.set_weights([w, b])
    _write_history(history, stage / "history.csv")
    return {"solver": "lbfgs", "grid": trials, "chosen": {"l2": grid[best]}}, len(history)


def _fit_adam(trainer: keras.Model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
              y_val: np.ndarray, settings: TrainSettings, stage: Path, fit: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """model.fit at every learning rate of the grid, from the same start and seed; the validation split
    picks one (its weights and epoch log are kept). `fit`: strategy, replicas, transform, verbose, log."""
    strategy, replicas, transform = fit["strategy"], fit["replicas"], fit["transform"]
    grid = (settings.learning_rate,) if settings.learning_rate else fitting.ADAM_LR_GRID
    start = trainer.get_weights()
    trials, weights, epochs = [], [], []
    for i, lr in enumerate(grid):
        tick = time.perf_counter()
        trainer.set_weights(start)
        seed_everything(settings.seed)
        with strategy.scope():
            epochs.append(fit_keras(
                trainer, Batches(x_train, y_train, settings.batch_size, settings.seed, replicas, transform),
                Batches(x_val, y_val, settings.batch_size, replicas=replicas, transform=transform),
                epochs=settings.epochs, initial_epoch=0, lr=lr, settings=settings, stage=stage, phase=1,
                verbose=fit["verbose"], log=fit["log"], csv=stage / ".checkpoints" / f"trial{i}.csv"))
        logits = predict_logits(trainer, x_val, settings.batch_size, replicas, transform)
        acc, loss = fitting.accuracy_and_loss(logits, y_val)
        trials.append({"learning_rate": lr, "val_accuracy": round(acc, 6), "val_loss": round(loss, 6),
                       "epochs": epochs[-1], "seconds": round(time.perf_counter() - tick, 3)})
        weights.append(trainer.get_weights())
    best = fitting.best_trial(trials)
    trainer.set_weights(weights[best])
    shutil.copyfile(stage / ".checkpoints" / f"trial{best}.csv", stage / "history.csv")
    return {"solver": "adam", "grid": trials, "chosen": {"learning_rate": grid[best]}}, epochs[best]


def fit_on_features(trainer: keras.Model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                    y_val: np.ndarray, settings: TrainSettings, stage: Path, fit: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Fit the head (`trainer`, on cached features) on scaled features and fold the scaling into its first
    layer; returns (metrics.json's `head_fit` record, epochs or iterations run by the chosen fit)."""
    scaling = scaling_for(trainer, x_train, settings)
    solver = solver_for(trainer, settings)
    if solver == "lbfgs":
        scale = scaling.apply if scaling else (lambda x: np.asarray(x, np.float32))
        record, done = _fit_lbfgs(trainer, scale(x_train), y_train, scale(x_val), y_val, settings, stage)
    else:
        record, done = _fit_adam(trainer, x_train, y_train, x_val, y_val, settings, stage,
                                 {**fit, "transform": scaling.apply if scaling else None})
    if scaling is not None:
        fold_into(first_weighted_layer(trainer), scaling)
    return {**record, "scaling": scaling.record() if scaling else None}, done
