"""`serve --backend openvino[:f32|bf16]`: the local server on the bundle's OpenVINO IR, over REST
and gRPC, answering like the Keras model (f32 hint) or within the bf16 tolerance with the same
top-1 (bf16 hint, on CPUs with bf16 units); elsewhere bf16 is refused in one line. The ResNet50
bundle tests are e2e; the same path on a tiny model's IR is an integration test."""
from __future__ import annotations

import numpy as np
import pytest

from serving.client.clients import GrpcClient, RestClient, encode_png
from tests.helpers import has_bf16, run_cli
from tests.serving.conftest import start_server

#: fp16 weights computed in f32 (the parity suite's "fp16" tolerance is 0.1 + 2e-3 |ref| on logits).
F32_ATOL = {"logits": 0.05, "probabilities": 5e-3}
#: bf16: measured max |logit error| 0.18 on photos (parity's openvino-bf16 tolerance).
BF16_ATOL = {"logits": 0.5, "probabilities": 0.05}


def _check(outputs, reference, atol):
    for k, tol in atol.items():
        np.testing.assert_allclose(outputs[k], reference[k], atol=tol, err_msg=k)
    np.testing.assert_array_equal(outputs["logits"].argmax(1), reference["logits"].argmax(1))


@pytest.mark.e2e
@pytest.mark.parametrize("hint", ["f32", "bf16"])
def test_openvino_backend_answers_like_keras(bundle, photos4, reference, hint):
    if hint == "bf16" and not has_bf16():
        r = run_cli("serve", str(bundle), "--local", "--backend", "openvino:bf16", "--rest-port", "0",
                    "--grpc-port", "0", timeout=300)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.startswith("error: openvino:model.xml@bf16: no bf16 hardware: ") and r.stderr.count("\n") == 1
        return
    atol = F32_ATOL if hint == "f32" else BF16_ATOL
    s = start_server(bundle, "--backend", f"openvino:{hint}")
    try:
        assert f"dense v1 (openvino:{hint})" in s.output()
        with RestClient(s.rest) as rest, GrpcClient(s.grpc) as grpc:
            assert rest.status("dense")["model_version_status"][0]["state"] == "AVAILABLE"
            sigs = rest.metadata("dense")["metadata"]["signature_def"]["signature_def"]
            assert set(sigs) == {"serving_default", "predict_image_bytes"}
            _check(rest.predict("dense", {"image": photos4}), reference, atol)
            _check(grpc.predict("dense", {"image": photos4}), reference, atol)
            blobs = np.empty(2, dtype=object)
            blobs[:] = [encode_png(img) for img in photos4[:2]]
            got = rest.predict("dense", {"image_bytes": blobs}, "predict_image_bytes", form="row")
            _check(got, {k: v[:2] for k, v in reference.items()}, atol)
    finally:
        assert s.stop() == 0


@pytest.mark.unit
def test_bad_openvino_hint_is_a_usage_error(tmp_path):
    from tests.helpers import run_main
    r = run_main("serve", str(tmp_path), "--local", "--backend", "openvino:fp8")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert ("--backend openvino:fp8: choose one of openvino:f32, openvino:bf16, openvino:int8, "
            "openvino:int8-bf16") in r.stderr


@pytest.fixture(scope="module")
def tiny_ir_bundle(tmp_path_factory):
    """A bundle with only what `serve --backend openvino` reads: models.config and the exporter's
    IRs of a tiny model (32 px) at openvino/tiny/1/ and openvino/tiny_int8/1/ (NNCF int8),
    plus the Keras answers for four photos."""
    from export.deploy import tfserving
    from export.formats import openvino
    from export.model import samples
    from tests.helpers import tiny_built
    built = tiny_built()
    root = tmp_path_factory.mktemp("tiny-ir-bundle")
    openvino.export(built, root)
    openvino.export(built, root, "int8")  # NNCF, calibrated on the sample photos
    (root / "models.config").write_text(tfserving.bundle_models_config({"tiny": [1]}))
    (root / "tfserving" / "tiny").mkdir(parents=True)
    photos = samples.photos(built.input_size)[:4]
    reference = {k: np.asarray(v) for k, v in built.model.predict(photos, verbose=0).items()}
    return root, photos, reference


@pytest.mark.integration
def test_openvino_backend_on_a_tiny_bundle(tiny_ir_bundle):
    """The same path on a tiny model (no ResNet50): REST and gRPC, both signatures, f32 hint."""
    root, photos, reference = tiny_ir_bundle
    s = start_server(root, "--backend", "openvino:f32", "--no-batching")
    try:
        assert "tiny v1 (openvino:f32)" in s.output()
        with RestClient(s.rest) as rest, GrpcClient(s.grpc) as grpc:
            _check(rest.predict("tiny", {"image": photos}), reference, {"logits": 5e-3, "probabilities": 1e-3})
            _check(grpc.predict("tiny", {"image": photos}), reference, {"logits": 5e-3, "probabilities": 1e-3})
            blobs = np.empty(1, dtype=object)
            blobs[:] = [encode_png(photos[0])]
            got = rest.predict("tiny", {"image_bytes": blobs}, "predict_image_bytes", form="row")
            assert got["probabilities"].shape == (1, 10)
    finally:
        assert s.stop() == 0


@pytest.mark.integration
def test_openvino_backend_without_the_ir_is_one_line(tiny_ir_bundle, tmp_path):
    from export.deploy import tfserving
    (tmp_path / "models.config").write_text(tfserving.bundle_models_config({"tiny": [1]}))
    (tmp_path / "tfserving" / "tiny").mkdir(parents=True)
    r = run_cli("serve", str(tmp_path), "--local", "--backend", "openvino", "--rest-port", "0", "--grpc-port", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "openvino/tiny/1/model.xml is not in the bundle" in r.stderr


@pytest.mark.integration
def test_openvino_int8_backend_answers_from_the_int8_ir(tiny_ir_bundle):
    """`serve --backend openvino:int8` serves openvino/tiny_int8/1/model.xml: its answers are that IR's
    (run directly), not the fp16 IR's, over REST and gRPC."""
    from export.runtimes.openvino import OpenVINORunner
    root, photos, _ = tiny_ir_bundle
    with OpenVINORunner(root / "openvino" / "tiny_int8" / "1" / "model.xml") as r:
        int8 = r.infer({"image": photos})
    with OpenVINORunner(root / "openvino" / "tiny" / "1" / "model.xml") as r:
        fp16 = r.infer({"image": photos})
    assert np.abs(int8["logits"] - fp16["logits"]).max() > 1e-4  # the two IRs differ: the test can tell them apart
    s = start_server(root, "--backend", "openvino:int8", "--no-batching")
    try:
        assert "tiny v1 (openvino:int8)" in s.output()
        with RestClient(s.rest) as rest, GrpcClient(s.grpc) as grpc:
            for got in (rest.predict("tiny", {"image": photos}), grpc.predict("tiny", {"image": photos})):
                np.testing.assert_allclose(got["logits"], int8["logits"], atol=1e-5)
                np.testing.assert_allclose(got["probabilities"].sum(1), 1.0, atol=1e-5)
    finally:
        assert s.stop() == 0
