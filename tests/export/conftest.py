"""Fixtures for the runtime and parity tests: tiny real artifacts (seconds to make) for runner
behaviour, and each variant's full export checked once per session for parity."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TINY_SIZE = 32
TINY_CLASSES = 10


def tiny_model(logit_scale: float = 1.0, bias: np.ndarray | None = None, seed: int = 0):
    """A small Keras model with the project's I/O contract (`image` -> `logits`, `probabilities`)."""
    import keras
    keras.utils.set_random_seed(seed)
    image = keras.Input((TINY_SIZE, TINY_SIZE, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(TINY_CLASSES, name="logits")(x)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    model = keras.Model(image, {"logits": logits, "probabilities": probabilities})
    layer = model.get_layer("logits")
    kernel, b = layer.get_weights()
    layer.set_weights([kernel * logit_scale, b if bias is None else bias.astype(np.float32)])
    return model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny model and its SavedModel, .tflite (fp32 and full-int8 uint8 I/O) and .onnx files."""
    import tensorflow as tf
    import tf2onnx

    from export import samples
    root = tmp_path_factory.mktemp("tiny")
    model = tiny_model()
    model.export(str(root / "savedmodel"), format="tf_saved_model", verbose=False)
    model.export(str(root / "model.tflite"), format="litert", verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(root / "savedmodel"))
    photos = samples.photos(TINY_SIZE)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([photos[i:i + 1]] for i in range(len(photos)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    (root / "model_int8.tflite").write_bytes(conv.convert())
    spec = (tf.TensorSpec((None, TINY_SIZE, TINY_SIZE, 3), tf.float32, name="image"),)
    fn = tf.function(lambda image: model(image, training=False), input_signature=spec)
    tf2onnx.convert.from_function(fn, input_signature=spec, output_path=str(root / "model.onnx"), opset=17)
    return {"model": model, "root": root, "savedmodel": root / "savedmodel", "tflite": root / "model.tflite",
            "tflite_int8": root / "model_int8.tflite", "onnx": root / "model.onnx"}


def tiny_runner(tiny, kind: str):
    """A (not loaded) runner of the tiny model for `kind`: keras, savedmodel, tflite, tflite_int8, onnx."""
    from export.runtimes import runner_for
    from export.runtimes.keras import KerasRunner
    if kind == "keras":
        return KerasRunner(tiny["model"])
    return runner_for(tiny[kind], device="CPU")


_REPORTS: dict = {}


@pytest.fixture(scope="session")
def variant_parity(exported):
    """Call with a variant: (out_dir, golden, ParityReport) for every artifact of that variant,
    exported once (the session's shared export) and checked once."""
    def get(variant: str):
        if variant not in _REPORTS:
            from export import golden, parity
            built, out, arts = exported(variant)
            if not golden.exists(out, variant):
                golden.save(out, golden.make(built))
            ref = golden.load(out, variant)
            report = parity.run_suite(Path(out), list(arts.values()), {variant: ref},
                                      sources={variant: "golden (session export)"})
            _REPORTS[variant] = (Path(out), ref, report)
        return _REPORTS[variant]
    return get
