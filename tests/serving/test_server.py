"""The local server over real loopback HTTP and gRPC: status, metadata, predict in every form
(answers equal the Keras reference), every bad request with its code and message, a concurrent
burst, and the Prometheus endpoint."""
from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import numpy as np
import pytest

from export.core.errors import ServingError
from serving.client.clients import encode_png

pytestmark = pytest.mark.e2e

# The same SavedModel graph as Keras, on the same CPU: differences are float round-off only.
ATOL = {"probabilities": 1e-5, "logits": 1e-4}


def assert_matches(outputs, reference, rows=slice(None)):
    assert set(outputs) >= {"logits", "probabilities"}
    for k, atol in ATOL.items():
        np.testing.assert_allclose(outputs[k], reference[k][rows], rtol=1e-5, atol=atol, err_msg=k)


def pngs(images) -> np.ndarray:
    arr = np.empty(len(images), dtype=object)
    arr[:] = [encode_png(img) for img in images]
    return arr


# -- status and metadata ---------------------------------------------------------------------

def test_startup_says_how_to_run_tf_serving(server):
    out = server.output()
    assert "docker run --rm -p" in out and "tensorflow/serving --model_config_file=/models/models.config" in out
    assert "--batching_parameters_file=/models/batching.config" in out
    assert "starting the local TF Serving-compatible server" in out
    assert "warmup: replayed 6 requests from assets.extra/tf_serving_warmup_requests" in out


@pytest.mark.parametrize("spec", [{}, {"version": 1}, {"label": "stable"}])
def test_status_rest_and_grpc(rest, grpc_client, spec):
    expected = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert rest.status("dense", **spec) == expected
    assert grpc_client.status("dense", **spec) == expected


def test_metadata_rest_and_grpc_agree(rest, grpc_client):
    doc = rest.metadata("dense")
    assert doc["model_spec"] == {"name": "dense", "signature_name": "", "version": "1"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "predict_image_bytes"} <= set(sigs)
    image = sigs["serving_default"]["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "224", "224", "3"]
    assert sigs["predict_image_bytes"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert set(sigs["serving_default"]["outputs"]) == {"logits", "probabilities"}
    assert grpc_client.metadata("dense", label="stable") == doc


# -- predict ------------------------------------------------------------------------------------

def test_predict_columnar_rest(rest, photos4, reference):
    assert_matches(rest.predict("dense", {"image": photos4}, form="columnar"), reference)


def test_predict_row_rest_gives_one_object_per_instance(rest, photos4, reference):
    doc = rest.predict_json("dense", {"instances": photos4[:2].tolist()})
    assert len(doc["predictions"]) == 2 and set(doc["predictions"][0]) == {"logits", "probabilities"}
    outputs = {k: np.array([p[k] for p in doc["predictions"]]) for k in ATOL}
    assert_matches(outputs, reference, slice(0, 2))


def test_predict_row_with_named_inputs_and_columnar_named(rest, photos4, reference):
    doc = rest.predict_json("dense", {"signature_name": "serving_default",
                                      "instances": [{"image": photos4[1].tolist()}]})
    assert_matches({k: np.array([doc["predictions"][0][k]]) for k in ATOL}, reference, slice(1, 2))
    doc = rest.predict_json("dense", {"inputs": {"image": photos4[2:3].tolist()}})
    assert set(doc) == {"outputs"} and set(doc["outputs"]) == {"logits", "probabilities"}
    assert_matches({k: np.array(v) for k, v in doc["outputs"].items()}, reference, slice(2, 3))


def test_predict_b64_images_rest_row_and_columnar(rest, photos4, reference):
    # PNG is lossless and already 224x224, so the decoded pixels are exactly the photos.
    blobs = pngs(photos4)
    assert_matches(rest.predict("dense", {"image_bytes": blobs}, "predict_image_bytes", form="row"), reference)
    assert_matches(rest.predict("dense", {"image_bytes": blobs}, "predict_image_bytes", label="stable"), reference)


def test_predict_grpc_pixels_and_bytes(grpc_client, photos4, reference):
    assert_matches(grpc_client.predict("dense", {"image": photos4}, version=1), reference)
    assert_matches(grpc_client.predict("dense", {"image_bytes": pngs(photos4)}, "predict_image_bytes"), reference)
    response = grpc_client.predict_response("dense", {"image": photos4[:1]}, output_filter=["probabilities"])
    assert set(response.outputs) == {"probabilities"}
    assert response.model_spec.name == "dense" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_jpeg_bytes_are_decoded_by_the_graph(rest, built):
    from export.model import samples
    jpeg = samples.encode_jpeg(samples.load_photo("rocket", 300))
    out = rest.predict_json("dense", {"signature_name": "predict_image_bytes",
                                      "instances": [{"b64": base64.b64encode(jpeg).decode()}]})
    probs = np.array(out["predictions"][0]["probabilities"])
    assert probs.shape == (built.num_classes,) and abs(probs.sum() - 1) < 1e-4


# -- bad requests: REST -----------------------------------------------------------------------

def _pixels_json(n=1, value=0.0):
    return json.dumps({"inputs": np.full((n, 224, 224, 3), value).tolist()})


TINY_PNG = base64.b64encode(encode_png(np.zeros((4, 4, 3)))).decode()
BAD_REST = [
    ("malformed JSON", "dense:predict", b'{"instances": [1,', 400, "JSON Parse error: Expecting value at offset: 17"),
    ("empty body", "dense:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("not an object", "dense:predict", b"[1, 2]", 400, "Is not object"),
    ("no instances or inputs", "dense:predict", b"{}", 400, "Missing 'inputs' or 'instances' key"),
    ("both forms", "dense:predict", b'{"inputs": [], "instances": []}', 400, "expecting only one of 'inputs' or 'instances'"),
    ("empty instances", "dense:predict", b'{"instances": []}', 400, "No values in 'instances' array"),
    ("signature not a string", "dense:predict", b'{"signature_name": 5, "inputs": []}', 400,
     "'signature_name' key must be a string value."),
    ("unknown signature", "dense:predict", b'{"signature_name": "nope", "inputs": []}', 400,
     'Serving signature name: "nope" not found in signature def'),
    ("wrong shape", "dense:predict", json.dumps({"inputs": np.zeros((1, 10, 10, 3)).tolist()}).encode(), 400,
     "input 'image' expects shape [-1,224,224,3], got [1,10,10,3]"),
    ("ragged lists", "dense:predict", b'{"inputs": [[1, 2], [3]]}', 400, "lists of unequal length"),
    ("strings for pixels", "dense:predict", b'{"instances": [["a", "b"]]}', 400,
     'JSON Value: "a" Type: String is not of expected type: float'),
    ("NaN pixels", "dense:predict", _pixels_json(value=np.nan).encode(), 400, "input 'image' has NaN or Inf values"),
    ("Inf pixels", "dense:predict", _pixels_json(value=np.inf).encode(), 400, "input 'image' has NaN or Inf values"),
    ("undecodable image", "dense:predict",
     json.dumps({"signature_name": "predict_image_bytes", "instances": [{"b64": base64.b64encode(b"hello").decode()}]}).encode(),
     400, "image 0: not a JPEG, PNG, GIF, BMP or WebP file"),
    ("bad base64", "dense:predict", b'{"signature_name": "predict_image_bytes", "instances": [{"b64": "%%%"}]}', 400,
     "Unable to base64 decode"),
    ("number for image bytes", "dense:predict", b'{"signature_name": "predict_image_bytes", "instances": [3]}', 400,
     "is not of expected type: string"),
    ("batch over max_batch_size", "dense:predict",
     json.dumps({"signature_name": "predict_image_bytes", "instances": [{"b64": TINY_PNG}] * 9}).encode(), 400,
     "Task size 9 is larger than maximum input batch size 8"),
    ("oversized body", "dense:predict", _pixels_json(n=6, value=123.456).encode(), 413,
     "is larger than the limit of 6000000 bytes"),
    ("unknown model", "nope:predict", _pixels_json().encode(), 404, "Servable not found for request: Latest(nope)"),
    ("unknown version", "dense/versions/7:predict", _pixels_json().encode(), 404,
     "Servable not found for request: Specific(dense, 7)"),
    # TF Serving answers an unknown label with INVALID_ARGUMENT (400), not NOT_FOUND.
    ("unknown label", "dense/labels/canary:predict", _pixels_json().encode(), 400,
     "Unrecognized servable version label: canary"),
    ("unknown method", "dense:explain", b"{}", 400, "Malformed request: POST /v1/models/dense:explain"),
]


@pytest.mark.parametrize("what, path, body, status, message", BAD_REST, ids=[b[0] for b in BAD_REST])
def test_bad_rest_request(server, what, path, body, status, message):
    r = httpx.post(f"{server.rest}/v1/models/{path}", content=body, timeout=60)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    assert message in r.json()["error"]


@pytest.mark.parametrize("path, status, message", [
    ("nope", 404, "Could not find any versions of model nope"),
    ("dense/versions/7", 404, "Could not find version 7 of model dense"),
    ("nope/metadata", 404, "Servable not found for request: Latest(nope)"),
    ("dense/versions/x", 400, "Failed to convert version: x to numeric."),
])
def test_bad_rest_status_and_metadata(server, path, status, message):
    r = httpx.get(f"{server.rest}/v1/models/{path}", timeout=30)
    assert (r.status_code, r.json()) == (status, {"error": message})


def test_truncated_image_fails_alone_and_server_stays_up(rest, server, photos4, reference):
    png = encode_png(photos4[0])
    broken = png[: len(png) // 2]  # a valid header, then nothing: only the decoder finds out
    r = httpx.post(f"{server.rest}/v1/models/dense:predict", timeout=60, json={
        "signature_name": "predict_image_bytes", "instances": [{"b64": base64.b64encode(broken).decode()}]})
    assert r.status_code == 400 and r.json()["error"]
    assert_matches(rest.predict("dense", {"image": photos4[:1]}), reference, slice(0, 1))


# -- bad requests: gRPC -------------------------------------------------------------------------

def _grpc_error(call) -> str:
    with pytest.raises(ServingError) as info:
        call()
    return str(info.value)


def test_bad_grpc_requests(grpc_client, photos4):
    c = grpc_client
    assert _grpc_error(lambda: c.status("nope")) == "gRPC NOT_FOUND: Could not find any versions of model nope"
    assert _grpc_error(lambda: c.predict("nope", {"image": photos4[:1]})) == \
        "gRPC NOT_FOUND: Servable not found for request: Latest(nope)"
    assert _grpc_error(lambda: c.predict("dense", {"image": photos4[:1]}, version=3)) == \
        "gRPC NOT_FOUND: Servable not found for request: Specific(dense, 3)"
    assert _grpc_error(lambda: c.predict("dense", {"image": photos4[:1]}, label="canary")) == \
        "gRPC INVALID_ARGUMENT: Unrecognized servable version label: canary"
    assert _grpc_error(lambda: c.predict("dense", {"image": photos4[:1, :10]})) == \
        "gRPC INVALID_ARGUMENT: input 'image' expects shape [-1,224,224,3], got [1,10,224,3]"
    assert _grpc_error(lambda: c.predict("dense", {"image": photos4[:1].astype(np.int32)})) == \
        "gRPC INVALID_ARGUMENT: input 'image' expects dtype DT_FLOAT, got DT_INT32"
    nan = photos4[:1].copy()
    nan[0, 0, 0, 0] = np.nan
    assert "has NaN or Inf values" in _grpc_error(lambda: c.predict("dense", {"image": nan}))
    blobs = np.array([b"GIF89a but not really"], dtype=object)
    assert "gRPC INVALID_ARGUMENT" in _grpc_error(lambda: c.predict("dense", {"image_bytes": blobs}, "predict_image_bytes"))
    assert "expects inputs ['image']" in _grpc_error(lambda: c.predict("dense", {"pixels": photos4[:1]}))
    assert "output tensor alias not found in signature: nope" in _grpc_error(
        lambda: c.predict_response("dense", {"image": photos4[:1]}, output_filter=["nope"]))
    assert c.status("dense")["model_version_status"][0]["state"] == "AVAILABLE"  # still serving


def test_grpc_metadata_needs_signature_def_field(grpc_client):
    from tensorflow_serving.apis import get_model_metadata_pb2
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "dense"
    msg = _grpc_error(lambda: grpc_client._call(grpc_client._predict.GetModelMetadata, request))
    assert msg == "gRPC INVALID_ARGUMENT: GetModelMetadataRequest must specify at least one metadata_field"


# -- concurrency --------------------------------------------------------------------------------

def test_concurrent_burst_matches_sequential_answers(server, photos4):
    """8 clients for ~3 s (REST pixels, REST b64, gRPC), with one more sending bad images all the
    while: zero errors, and each answer equal to the same request sent alone."""
    from serving.client.clients import GrpcClient, RestClient
    blobs = pngs(photos4)
    with RestClient(server.rest) as r, GrpcClient(server.grpc) as g:
        calls = [lambda i: r.predict("dense", {"image": photos4[i:i + 1]}),
                 lambda i: r.predict("dense", {"image_bytes": blobs[i:i + 1]}, "predict_image_bytes", form="row"),
                 lambda i: g.predict("dense", {"image": photos4[i:i + 1]})]
        sequential = {(k, i): calls[k](i) for k in range(len(calls)) for i in range(len(photos4))}

    results, errors, bad_answers = [], [], []
    deadline = time.monotonic() + 3.0

    def client(n: int) -> None:
        with RestClient(server.rest, timeout=60) as r, GrpcClient(server.grpc, timeout=60) as g:
            calls = [lambda i: r.predict("dense", {"image": photos4[i:i + 1]}),
                     lambda i: r.predict("dense", {"image_bytes": blobs[i:i + 1]}, "predict_image_bytes", form="row"),
                     lambda i: g.predict("dense", {"image": photos4[i:i + 1]})]
            for j in range(200):  # bounded, whatever the machine's speed
                if time.monotonic() > deadline:
                    break
                k, i = (n + j) % len(calls), (n + 2 * j) % len(photos4)
                try:
                    results.append(((k, i), calls[k](i)))
                except Exception as e:  # noqa: BLE001 - every failure is a test failure
                    errors.append(f"client {n} call {k} image {i}: {e}")

    def bad_client() -> None:
        for _ in range(200):
            if time.monotonic() > deadline:
                break
            resp = httpx.post(f"{server.rest}/v1/models/dense:predict", timeout=60, json={
                "signature_name": "predict_image_bytes", "instances": [{"b64": base64.b64encode(b"\xff\xd8\xffjunk").decode()}]})
            bad_answers.append(resp.status_code)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)] + [threading.Thread(target=bad_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(results) >= 8 and bad_answers and set(bad_answers) == {400}
    worst = dict.fromkeys(ATOL, 0.0)
    for key, outputs in results:
        assert np.argmax(outputs["probabilities"]) == np.argmax(sequential[key]["probabilities"])
        for name in ATOL:
            worst[name] = max(worst[name], float(np.abs(outputs[name] - sequential[key][name]).max()))
    # Batched and alone run the same graph; only the kernels' summation order may differ with the
    # batch size (oneDNN: ~1e-5 on logits of magnitude ~1).
    assert all(worst[k] <= ATOL[k] for k in ATOL), f"max |concurrent - sequential| = {worst}"


def test_prometheus_metrics_count_requests(server, rest, photos4):
    rest.status("dense")
    text = httpx.get(f"{server.rest}/monitoring/prometheus/metrics", timeout=30).text
    assert ':tensorflow:serving:request_count{api="status",model_name="dense",status="OK"}' in text
