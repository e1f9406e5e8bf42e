"""Session fixtures: expensive things (built models, exported artifacts) are made once per session
and shared. Plain helpers are in tests/helpers.py.

Every test carries exactly one tier marker (unit, integration or e2e; see pyproject.toml): a test
without one fails collection, and a run of unit tests alone fails if anything imported TensorFlow.
"""
from __future__ import annotations

import os
import sys

import pytest

from tests.helpers import TINY_SIZE, tiny_built, tiny_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config, items):
    untiered = [item.nodeid for item in items
                if sum(1 for tier in TIERS if item.get_closest_marker(tier)) != 1]
    if untiered:
        raise pytest.UsageError("tests need exactly one tier marker (unit, integration or e2e): "
                                + ", ".join(untiered[:10]))
    config._only_unit = bool(items) and all(item.get_closest_marker("unit") for item in items)


def pytest_sessionfinish(session, exitstatus):
    if getattr(session.config, "_only_unit", False) and "tensorflow" in sys.modules and exitstatus == 0:
        print("\nerror: a `unit` test imported TensorFlow; mark it integration or e2e", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def built_model():
    """Call with (variant, weights="random:0"): a BuiltModel, built once per session."""
    cache: dict = {}

    def get(variant: str, weights: str = "random:0"):
        if (variant, weights) not in cache:
            from export.model.build import build
            from export.model.variants import get_variant
            cache[variant, weights] = build(get_variant(variant), weights=weights)
        return cache[variant, weights]
    return get


@pytest.fixture(scope="session")
def photos():
    from export.model import samples
    return samples.photos()


@pytest.fixture(scope="session")
def exported(tmp_path_factory, built_model):
    """Call with a variant name: (BuiltModel, out_dir, {key: Artifact}) with every format and
    precision of that variant, exported once per session."""
    root = tmp_path_factory.mktemp("artifacts")
    cache: dict = {}

    def get(variant: str):
        if variant not in cache:
            from export.pipeline.single import export_artifacts, resolve_targets
            built = built_model(variant)
            out = root / f"exported-{variant}"
            arts = export_artifacts(built, out, resolve_targets("all"))
            cache[variant] = (built, out, {a.key: a for a in arts})
        return cache[variant]
    return get


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny model and its SavedModel, .tflite (fp32 and full-int8 uint8 I/O), .onnx files and an
    OpenVINO IR (converted from the .onnx with fp32 weights, independently of export/formats)."""
    import tensorflow as tf
    import tf2onnx

    from export.model import samples
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
    import openvino as ov
    ov.save_model(ov.convert_model(str(root / "model.onnx")), str(root / "ir" / "model.xml"), compress_to_fp16=False)
    return {"model": model, "root": root, "savedmodel": root / "savedmodel", "tflite": root / "model.tflite",
            "tflite_int8": root / "model_int8.tflite", "onnx": root / "model.onnx",
            "openvino": root / "ir" / "model.xml"}


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
