"""The local server on the ONNX Runtime and LiteRT backends (image bytes decoded in Python), with
batching off, and a warmup record that fails the load. (Graceful shutdown, SIGTERM with a request
in flight, is in test_server_seams.py, on the tiny model.)"""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from serving.client.clients import GrpcClient, RestClient, encode_png
from tests.serving.conftest import start_server

pytestmark = pytest.mark.e2e

# Other runtimes than the SavedModel graph: fp32 round-off between kernels (the parity suite's
# fp32 tolerance is of this order).
ATOL = {"probabilities": 1e-4, "logits": 1e-3}


def assert_close(outputs, reference, atol=ATOL):
    for k, tol in atol.items():
        np.testing.assert_allclose(outputs[k], reference[k], rtol=1e-4, atol=tol, err_msg=k)


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_runner_backend_answers_like_keras(bundle, photos4, reference, backend):
    s = start_server(bundle, "--backend", backend, "--no-batching")
    try:
        assert f"dense v1 ({backend}); batching off" in s.output()
        blobs = np.empty(2, dtype=object)
        blobs[:] = [encode_png(img) for img in photos4[:2]]
        with RestClient(s.rest) as r, GrpcClient(s.grpc) as g:
            assert r.status("dense")["model_version_status"][0]["state"] == "AVAILABLE"
            sigs = r.metadata("dense")["metadata"]["signature_def"]["signature_def"]
            assert set(sigs) == {"serving_default", "predict_image_bytes"}
            assert_close(r.predict("dense", {"image": photos4}), reference)
            assert_close(g.predict("dense", {"image": photos4}), reference)
            ref2 = {k: v[:2] for k, v in reference.items()}
            assert_close(r.predict("dense", {"image_bytes": blobs}, "predict_image_bytes", form="row"), ref2)
            bad = httpx.post(f"{s.rest}/v1/models/dense:predict", timeout=60, json={
                "signature_name": "predict_image_bytes", "instances": [{"b64": "iVBORw0KGgoAAAAN"}]})
            assert bad.status_code == 400 and bad.json()["error"]
            assert r.status("dense")["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        assert s.stop() == 0


def test_a_failing_warmup_record_fails_the_load_like_tf_serving(bundle):
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    from export.core.errors import BundleError
    from serving.backends.servables import SavedModelServable
    from serving.frontends.server import _replay_warmup
    servable = SavedModelServable("dense", 1, bundle / "tfserving" / "dense" / "1")
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="dense"))
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 10, 10, 3), np.float32)))
    bad = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with pytest.raises(BundleError) as info:
        _replay_warmup(servable, bundle / "warmup", [bad], 1000)
    assert "record 0 fails (input 'image' expects shape [-1,224,224,3], got [1,10,10,3])" in str(info.value)
    with pytest.raises(BundleError, match="has 2 records; TF Serving accepts at most 1"):
        _replay_warmup(servable, bundle / "warmup", [bad, bad], 1)
