"""Fixtures for the parity tests: each variant's full export checked once per session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def variant_parity(exported):
    """Call with a variant: (out_dir, golden, ParityReport) for every artifact of that variant,
    exported once (the session's shared export) and checked once."""
    reports: dict = {}

    def get(variant: str):
        if variant not in reports:
            from export import golden, parity
            built, out, arts = exported(variant)
            if not golden.exists(out, variant):
                golden.save(out, golden.make(built))
            ref = golden.load(out, variant)
            report = parity.run_suite(Path(out), list(arts.values()), {variant: ref},
                                      sources={variant: "golden (session export)"})
            reports[variant] = (Path(out), ref, report)
        return reports[variant]
    return get


#: The class names of `tiny_built` (written into its TFLite metadata).
TINY_TFLITE_LABELS = [f"kind_{i}" for i in range(TINY_CLASSES)]


def tiny_built(resnet_preprocess: bool = False, name: str = "tiny"):
    """A BuiltModel around a tiny model: with ResNet50's in-graph preprocessing (slices, concat,
    minus the means) when asked, which is what gives a full-integer input a non-pixel scale."""
    import keras

    from export.build import BuiltModel, ResNetPreprocess
    from export.variants import VariantSpec
    if resnet_preprocess:
        keras.utils.set_random_seed(0)
        image = keras.Input((TINY_SIZE, TINY_SIZE, 3), dtype="float32", name="image")
        x = ResNetPreprocess()(image)
        x = keras.layers.Conv2D(8, 3, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        logits = keras.layers.Dense(TINY_CLASSES, name="logits")(x)
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        model = keras.Model(image, {"logits": logits, "probabilities": probabilities})
    else:
        model = tiny_model()
    spec = VariantSpec(name=name, head=(), num_classes=TINY_CLASSES, input_size=TINY_SIZE,
                       description="A tiny test classifier")
    return BuiltModel(model, spec, TINY_CLASSES, TINY_SIZE, {"source": "random:0"}, list(TINY_TFLITE_LABELS))


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory):
    """The four TFLite precisions of a tiny model with ResNet50's preprocessing, exported with
    metadata by the real exporter (from the Keras model, calibrated on the sample photos)."""
    from export.formats import tflite
    out = tmp_path_factory.mktemp("tiny-tflite")
    built = tiny_built(resnet_preprocess=True)
    card = {"name": "tiny-test", "version": 7, "author": "The Tests", "license": "Apache-2.0"}
    arts = {p: tflite.export(built, out, p, card=card) for p in ("fp32", "fp16", "dynamic", "int8")}
    return built, out, arts
