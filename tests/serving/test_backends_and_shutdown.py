"""The local server on the ONNX Runtime and LiteRT backends (image bytes decoded in Python), with
batching off, and its graceful shutdown: SIGTERM lets a request in flight finish."""
from __future__ import annotations

import json
import threading
import time

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


def test_sigterm_lets_the_request_in_flight_finish(bundle, photos4, reference):
    s = start_server(bundle, "--no-batching")
    body = json.dumps({"inputs": photos4[:1].tolist()}).encode()
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    sent_first = threading.Event()

    def slow_body():  # the request is on the wire, half sent, when SIGTERM arrives
        yield chunks[0]
        sent_first.set()
        time.sleep(1.5)
        yield from chunks[1:]

    answer = {}

    def in_flight():
        try:
            answer["response"] = httpx.post(f"{s.rest}/v1/models/dense:predict", content=slow_body(), timeout=60,
                                            headers={"Content-Type": "application/json"})
        except Exception as e:  # noqa: BLE001
            answer["error"] = e

    t = threading.Thread(target=in_flight)
    t.start()
    assert sent_first.wait(30)
    time.sleep(0.5)
    s.proc.send_signal(__import__("signal").SIGTERM)
    t.join(60)
    assert "error" not in answer, answer.get("error")
    r = answer["response"]
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["outputs"]["probabilities"], reference["probabilities"][:1], atol=1e-5)
    assert s.proc.wait(60) == 0
    assert "stopped: in-flight requests finished" in s.output()
    with pytest.raises(httpx.TransportError):  # and nothing listens any more
        httpx.get(f"{s.rest}/v1/models/dense", timeout=5)


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
