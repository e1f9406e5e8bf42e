"""The fast path's head fit: the feature scaling folds exactly into every head's first layer, the
L-BFGS solver is the logistic regression scikit-learn fits, and the run cache key follows the
framework versions and the training code.

The fold tests build each registered head (its real layer kinds, from export.model.build) on small
feature maps, so they run in seconds without a ResNet50.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from export.training import fitting

# -- NumPy / scikit-learn only ------------------------------------------------------------------------


def _blobs(n: int = 120, c: int = 6, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with channel scales spread over four orders of magnitude, like a random backbone's."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(size=(k, c))
    x = centres[y] + rng.normal(scale=1.5, size=(n, c))
    return (x * np.logspace(-2, 2, c) + 5.0).astype(np.float32), y


@pytest.mark.unit
def test_feature_scaling_standardises_and_keeps_constant_channels_finite():
    x, _ = _blobs()
    x[:, 2] = 7.0  # a dead channel
    s = fitting.feature_scaling(x, centred=True)
    z = s.apply(x)
    live = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(z[:, live].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(z[:, live].std(axis=0), 1, rtol=1e-4)
    assert s.scale[2] == 1.0 and np.all(z[:, 2] == 0)
    r = fitting.feature_scaling(x, centred=False)
    np.testing.assert_allclose(np.sqrt((r.apply(x)[:, live] ** 2).mean(axis=0)), 1, rtol=1e-4)
    assert not np.any(r.mean) and r.record()["centred"] is False


@pytest.mark.unit
def test_dense_fold_is_exact_and_a_centred_conv_fold_is_refused():
    x, _ = _blobs()
    s = fitting.feature_scaling(x, centred=True)
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    wf, bf = fitting.fold_dense(w, b, s)
    np.testing.assert_allclose(x.astype(np.float64) @ wf + bf, s.apply(x).astype(np.float64) @ w + b,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="a mean shift does not fold exactly into a zero-padded convolution"):
        fitting.fold_conv(np.zeros((3, 3, 6, 2)), s)


@pytest.mark.unit
def test_lbfgs_softmax_is_sklearns_logistic_regression():
    """Same objective (sklearn: sum of losses + |W|^2 / (2C), i.e. l2 = 1 / (C n)), same optimum."""
    from sklearn.linear_model import LogisticRegression
    x, y = _blobs()
    z = fitting.feature_scaling(x, centred=True).apply(x)
    w, b, info = fitting.fit_softmax(z, y, 3, l2=1.0 / len(y), val=(z[:30], y[:30]))
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(z, y)
    assert info["converged"] and len(info["history"]) == info["iterations"]
    assert {"epoch", "accuracy", "loss", "phase", "val_accuracy", "val_loss"} == set(info["history"][-1])
    ours, theirs = z @ w + b, ref.decision_function(z)
    # Softmax logits are defined up to a per-row constant: compare them centred.
    np.testing.assert_allclose(ours - ours.mean(axis=1, keepdims=True), theirs - theirs.mean(axis=1, keepdims=True),
                               atol=2e-3)
    acc, loss = fitting.accuracy_and_loss(ours, y)
    assert acc == pytest.approx(ref.score(z, y)) and loss > 0
    probe = fitting.probe(x[:90], y[:90], x[90:], y[90:])
    assert probe["val_accuracy"] == pytest.approx(
        LogisticRegression().fit(fitting.feature_scaling(x[:90], True).apply(x[:90]), y[:90]).score(
            fitting.feature_scaling(x[:90], True).apply(x[90:]), y[90:]), abs=1e-6)


@pytest.mark.unit
def test_best_trial_prefers_accuracy_then_loss():
    trials = [{"val_accuracy": 0.9, "val_loss": 0.3}, {"val_accuracy": 0.95, "val_loss": 0.5},
              {"val_accuracy": 0.95, "val_loss": 0.2}]
    assert fitting.best_trial(trials) == 2
    # Among equally accurate L2 trials the stronger L2 wins, whatever the loss (lfw_subset: l2 0.1 and 1e-4
    # both 0.975; the 0.1 head's TFLite fp32 logits error was 3.0e-4 against 4.9e-4).
    l2 = [{"l2": 1e-4, "val_accuracy": 0.975, "val_loss": 0.05}, {"l2": 1e-2, "val_accuracy": 0.95, "val_loss": 0.07},
          {"l2": 1e-1, "val_accuracy": 0.975, "val_loss": 0.09}]
    assert fitting.best_trial(l2) == 2


@pytest.mark.unit
def test_run_key_follows_framework_versions_and_training_code(tmp_path):
    from pathlib import Path

    import export
    from export.model.variants import get_variant
    from export.training.runs import run_key, training_code_sha256
    from export.training.settings import TrainSettings
    spec, settings = get_variant("dense"), TrainSettings()
    versions = {"tensorflow": "2.20.0", "keras": "3.11.0"}
    key = run_key(spec, "data", settings, "random:0", versions, "code")
    assert key == run_key(spec, "data", settings, "random:0", dict(versions), "code")
    assert key != run_key(spec, "data", settings, "random:0", {**versions, "tensorflow": "2.21.0"}, "code")
    assert key != run_key(spec, "data", settings, "random:0", {**versions, "keras": "3.12.0"}, "code")
    assert key != run_key(spec, "data", settings, "random:0", versions, "other code")
    package = Path(export.__file__).parent
    copy = tmp_path / "export"
    shutil.copytree(package / "training", copy / "training")
    shutil.copytree(package / "model", copy / "model")
    before = training_code_sha256(copy)
    assert before == training_code_sha256(package)
    (copy / "training" / "fitting.py").write_text((copy / "training" / "fitting.py").read_text() + "\n# changed\n")
    assert training_code_sha256(copy) != before
    assert run_key(spec, "data", settings, "random:0") != run_key(spec, "data", settings, "random:0", None, before[::-1])


# -- the fold on every registered head (Keras, tiny) -----------------------------------------------------


def _tiny_model(variant: str, k: int = 3):
    """The variant's head (its own layer kinds and names) on 5x5x6 feature maps, then `logits`."""
    import keras

    from export.model.build import _head_layer
    from export.model.variants import get_variant
    maps = keras.Input((5, 5, 6), name="maps")
    x = maps
    for i, layer in enumerate(get_variant(variant).head):
        kw = dict(layer.params)
        if layer.kind == "conv2d":
            kw["filters"] = 4  # small, same kind, kernel and padding
        x = _head_layer(type(layer)(layer.kind, tuple(sorted(kw.items()))), f"head_{i}_{layer.kind}")(x)
    logits = keras.layers.Dense(k, name="logits")(x)
    return keras.Model(maps, logits)


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["dense", "conv", "dropout"])
def test_folded_head_equals_standardise_then_head(variant):
    import keras

    from export.model.variants import get_variant
    from export.training import head_fit
    from export.training.settings import TrainSettings
    keras.utils.set_random_seed(0)
    trainer = head_fit.head_model(_tiny_model(variant))
    rng = np.random.default_rng(0)
    maps = (rng.gamma(0.5, size=(16, 5, 5, 6)) * np.logspace(-2, 2, 6)).astype(np.float32)  # ReLU-like, >= 0
    x = maps.mean(axis=(1, 2)) if len(trainer.input.shape) == 2 else maps
    scaling = head_fit.scaling_for(trainer, x, TrainSettings())
    assert scaling is not None and scaling.centred == (variant == "dense")  # Conv2D `same`: scale only
    reference = np.asarray(trainer(scaling.apply(x), training=False))
    head_fit.fold_into(head_fit.first_weighted_layer(trainer), scaling)
    folded = np.asarray(trainer(x, training=False))
    np.testing.assert_allclose(folded, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    assert [la.name for la in trainer.layers][1:] == [f"head_{i}_{h.kind}" for i, h in
                                                      enumerate(get_variant(variant).head) if h.kind != "gap" or
                                                      variant != "dense"] + ["logits"]
    assert head_fit.solver_for(trainer, TrainSettings()) == ("lbfgs" if variant == "dense" else "adam")


@pytest.mark.integration
def test_a_centred_fold_into_a_same_padded_conv_would_be_wrong_at_the_borders():
    """Why the conv heads get a scale only: folding a mean shift into the kernel and bias is exact inside
    the map and wrong on its border, where `same` padding feeds zeros instead of the shifted zeros."""
    import keras
    conv = keras.layers.Conv2D(2, 3, padding="same")
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 3, size=(1, 5, 5, 4)).astype(np.float32)
    mean = x.mean(axis=(0, 1, 2))
    reference = np.asarray(conv(x - mean))
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel, bias - np.einsum("hwcf,c->f", kernel, mean)])
    naive = np.asarray(conv(x))
    np.testing.assert_allclose(naive[:, 1:-1, 1:-1], reference[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-4)
    assert np.abs(naive[:, 0] - reference[:, 0]).max() > 1e-2
