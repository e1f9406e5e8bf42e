"""`resnet-deploy score` answers like `resnet-deploy predict`: the same images through the local
TF Serving-compatible server (REST, the bytes signature) and through Beam RunInference on the
DirectRunner, for every backend the server has. Starts servers, hence e2e (tiny model: ~1 min)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_cli
from tests.serving.conftest import start_server
from tests.serving.scoring_bundle import MODEL, make_images, rows_by_path, top_k_arrays

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_bundle(tiny_scoring_bundle):
    return tiny_scoring_bundle


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("scoring-predict-images"))


@pytest.mark.parametrize("fmt,precision", [("savedmodel", None), ("onnx", None), ("tflite", None),
                                           ("tflite", "int8"), ("openvino", "fp16")])
def test_score_equals_predict(tiny_bundle, images, tmp_path, fmt, precision):
    from serving.scoring import pipeline as scoring
    folder, good, _ = images
    backend = fmt + (f":{precision}" if precision and fmt != "openvino" else "")  # openvino's is its one precision
    server = start_server(tiny_bundle, "--backend", backend)
    try:
        r = run_cli("predict", "--rest", server.rest, "--model", MODEL, "--json", "--top-k", "10", "--batch", "3",
                    "--labels", str(tiny_bundle / "tflite" / MODEL / "labels.txt"), *map(str, good))
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    predicted = {p["image"]: p["top_k"] for p in json.loads(r.stdout)["predictions"]}
    summary = scoring.run(scoring.plan(str(tiny_bundle), MODEL, str(folder), str(tmp_path / "scores"), fmt,
                                       precision, top_k=10))
    scored = rows_by_path(summary.outputs)
    assert sorted(predicted) == sorted(p for p in scored if p in predicted) == sorted(map(str, good))
    for path, top in predicted.items():
        (pi, pp), (si, sp) = top_k_arrays(top), top_k_arrays(scored[path]["top_k"])
        # Same decode and resize, same runtime; only the batch composition differs (predict sends
        # 3 images a request, Beam batches up to batching.config's 4). Measured: identical
        # (max difference 0.0 for all four backends); the tolerance leaves room for kernels whose
        # summation order depends on the batch size.
        assert si == pi, path
        np.testing.assert_allclose(sp, pp, atol=1e-6, err_msg=path)
        assert [t["label"] for t in scored[path]["top_k"]] == [t["label"] for t in top]
