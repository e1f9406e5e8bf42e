"""Variants and the models built from them: parameter counts, I/O names, layer names."""
from __future__ import annotations

import numpy as np
import pytest

from export.model.build import build_architecture, param_counts, set_trainable_stages
from export.model.variants import HeadLayer, VariantSpec, get_variant, list_variants, register_variant

pytestmark = pytest.mark.e2e

#: ResNet50 notop's 23,587,712 frozen parameters + the frozen 1x1 preprocessing conv (9 + 3).
NON_TRAINABLE = 23_587_712 + 12
EXPECTED = {"dense": (10, 20_490), "conv": (5, 5_014_533), "dropout": (2, 5_014_146)}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_parameter_counts_match_reference(variant, built_model):
    classes, trainable = EXPECTED[variant]
    model = built_model(variant).model
    assert model.output["logits"].shape[-1] == classes
    assert param_counts(model) == {"trainable": trainable, "non_trainable": NON_TRAINABLE,
                                   "total": trainable + NON_TRAINABLE}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_io_names_shapes_and_preprocessing(variant, photos, built_model):
    built = built_model(variant)
    model = built.model
    assert [t.name for t in model.inputs] == ["image"]
    assert tuple(model.inputs[0].shape) == (None, 224, 224, 3)
    out = model.predict(photos[:3], verbose=0)
    assert set(out) == {"logits", "probabilities"}
    assert out["logits"].shape == out["probabilities"].shape == (3, built.num_classes)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    e = np.exp(out["logits"] - out["logits"].max(axis=1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], e / e.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    # ResNet50's own caffe preprocessing is inside the graph.
    import keras
    pre = model.get_layer("preprocess")(photos[:1])
    np.testing.assert_allclose(np.asarray(pre),
                               keras.applications.resnet50.preprocess_input(photos[:1].copy()), atol=1e-4)


def test_layer_names_are_deterministic():
    a = [layer.name for layer in build_architecture(get_variant("dropout")).layers]
    b = [layer.name for layer in build_architecture(get_variant("dropout")).layers]
    assert a == b == ["image", "preprocess", "resnet50", "head_0_conv2d", "head_1_dropout",
                      "head_2_conv2d", "head_3_gap", "head_4_dropout", "logits", "probabilities"]


def test_dropout_head_declares_l2_and_rates():
    model = build_architecture(get_variant("dropout"))
    assert model.get_layer("head_0_conv2d").kernel_regularizer.l2 == pytest.approx(0.01)
    assert model.get_layer("head_2_conv2d").kernel_regularizer.l2 == pytest.approx(0.01)
    assert model.get_layer("head_1_dropout").rate == 0.3
    assert model.get_layer("head_4_dropout").rate == 0.5


def test_num_classes_override_and_unfreeze():
    model = build_architecture(get_variant("dense"), num_classes=3, unfreeze_stages=1)
    backbone = model.get_layer("resnet50")
    trainable = [layer.name for layer in backbone.layers if layer.trainable_weights]
    assert trainable and all(n.startswith("conv5") for n in trainable)
    assert model.output["logits"].shape[-1] == 3
    assert param_counts(model)["trainable"] > 2048 * 3 + 3
    set_trainable_stages(backbone, 0)
    assert not backbone.trainable_weights


def test_registry_refuses_duplicates_and_takes_a_fourth_head():
    with pytest.raises(ValueError, match="already registered"):
        register_variant(VariantSpec("dense", (HeadLayer.of("gap"),), 3))
    with pytest.raises(ValueError, match="unknown head layer kind"):
        register_variant(VariantSpec("bad_kind", (HeadLayer.of("lstm"), HeadLayer.of("gap")), 3))
    spec = register_variant(VariantSpec("mlp_test", (HeadLayer.of("gap"), HeadLayer.of("dense", units=64, activation="relu")), 4))
    try:
        model = build_architecture(spec)
        assert param_counts(model)["trainable"] == 2048 * 64 + 64 + 64 * 4 + 4
        assert "mlp_test" in [s.name for s in list_variants()]
    finally:
        from export.model import variants
        variants._REGISTRY.pop("mlp_test")
