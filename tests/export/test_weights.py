"""Weights sources: determinism of random:SEED, informative outputs, files, clear errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from export.core.errors import WeightsError
from export.model.build import build
from export.model.variants import get_variant
from export.model.weights import parse_weights
from tests.helpers import ROOT, VARIANTS

pytestmark = pytest.mark.e2e


def test_random_seed_is_bit_identical_in_process_and_across_runs(built_model):
    a = built_model("dense").model.get_weights()
    b = build(get_variant("dense"), weights="random:0").model.get_weights()
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=False))
    c = build(get_variant("dense"), weights="random:1").model.get_weights()
    assert not np.array_equal(a[-2], c[-2])
    # A fresh process gives the same bytes.
    code = ("import hashlib, numpy as np; from export.model.build import build; from export.model.variants import get_variant;"
            "m = build(get_variant('dense'), weights='random:0').model;"
            "print(hashlib.sha256(b''.join(np.ascontiguousarray(w).tobytes() for w in m.get_weights())).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    import hashlib
    here = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in a)).hexdigest()
    assert out.stdout.strip().splitlines()[-1] == here


@pytest.mark.parametrize("variant", VARIANTS)
def test_random_weights_are_informative_on_sample_photos(variant, photos, built_model):
    probs = built_model(variant).model.predict(photos, verbose=0)["probabilities"]
    assert np.mean(probs.max(axis=1) < 0.99) > 0.5, probs.max(axis=1)
    assert len(set(probs.argmax(axis=1).tolist())) > 1


def test_weights_file_roundtrip(tmp_path, photos, built_model):
    src = built_model("dense")
    path = tmp_path / "dense.weights.h5"
    src.model.save_weights(path)
    loaded = build(get_variant("dense"), weights=str(path))
    assert all(np.array_equal(x, y) for x, y in zip(src.model.get_weights(), loaded.model.get_weights(), strict=False))
    assert loaded.weights["kind"] == "file" and len(loaded.weights["sha256"]) == 64
    keras_path = tmp_path / "dense.keras"
    src.model.save(keras_path)
    again = build(get_variant("dense"), weights=str(keras_path))
    np.testing.assert_array_equal(again.model.predict(photos[:2], verbose=0)["logits"],
                                  src.model.predict(photos[:2], verbose=0)["logits"])


def test_keras_file_needing_unsafe_deserialization_is_refused(tmp_path):
    import keras
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda x: x * 2)(inp))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(WeightsError, match="unsafe deserialization"):
        build(get_variant("dense"), weights=str(path))


def test_mismatched_file_is_refused(tmp_path, built_model):
    path = tmp_path / "conv.weights.h5"
    built_model("conv").model.save_weights(path)
    with pytest.raises(WeightsError, match=r"cannot load weights file .*conv\.weights\.h5"):
        build(get_variant("dense"), weights=str(path))


@pytest.mark.parametrize("text,message", [
    ("random:x", "bad weights seed 'x'"),
    ("random:-1", "non-negative"),
    ("/nonexistent/model.weights.h5", "weights file not found: /nonexistent/model.weights.h5"),
    ("foo.bin", "unknown weights source 'foo.bin'"),
])
def test_bad_weights_sources(text, message):
    with pytest.raises(WeightsError, match=message):
        parse_weights(text)
