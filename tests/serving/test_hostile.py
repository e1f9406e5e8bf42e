"""Hostile requests against the running local server (tiny model, real loopback HTTP and gRPC).

Hypothesis generates REST bodies and paths and gRPC PredictRequests: wrong dtypes, wrong, huge and
negative shapes, NaN and Inf, unknown models, signatures and inputs, b64 garbage, deeply nested
JSON, raw garbage and truncated JSON. Every answer must be 400, 404 or 413 (or 200 for a request
that happens to be valid), or the gRPC equivalent (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED,
...), never a 5xx, INTERNAL or a dead server; a valid request right after must still get the
right answer. Then explicit cases at and over the body limit, truncated and slow requests, a
client that stops reading, and the server's memory after 1,000 bad and 1,000 good requests.

Run time is bounded by the "ci" hypothesis profile (derandomized, a fixed number of examples,
no deadline); HYPOTHESIS_PROFILE=dev explores more. The counts and status codes seen are printed
at the end of the module.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections import Counter

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.conftest import TINY_VARIANT, start_server
from tests.serving.hostile_requests import (
    PNG,
    SIZE,
    nested,
    paths,
    predict_bodies,
    predict_requests,
    raw_bodies,
    truncated,
)

pytestmark = pytest.mark.e2e

LIMIT = 1_000_000  # --max-body-bytes of the server under attack
settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                 HealthCheck.data_too_large])
settings.register_profile("dev", parent=settings.get_profile("ci"), max_examples=2000, derandomize=False)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REST_OK = {200, 400, 404, 413}
GRPC_OK = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE}
TALLY: Counter = Counter()
ATOL = {"probabilities": 1e-5, "logits": 1e-4}


@pytest.fixture(scope="module")
def target(tiny_bundle, request):
    server = start_server(tiny_bundle, "--max-body-bytes", str(LIMIT))
    channel = grpc.insecure_channel(server.grpc, options=[("grpc.max_send_message_length", 64 << 20),
                                                          ("grpc.max_receive_message_length", 64 << 20)])
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    with httpx.Client(base_url=server.rest, timeout=60) as http:
        yield server, http, prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()
    code = server.stop()
    total = sum(TALLY.values())
    report(request, f"hostile requests: {total} sent; answers: "
                    + ", ".join(f"{k} x{n}" for k, n in sorted(TALLY.items())))
    assert code == 0, server.output()[-3000:]


def report(request, line: str) -> None:
    """Print a result line past pytest's capture (the numbers the issue's closing note asks for)."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + line)


# -- what a good answer is ----------------------------------------------------------------------

def check_still_right(http, stub, reference, i: int = 0) -> None:
    """A valid REST and gRPC request right after: 200 and the tiny Keras model's answer."""
    images, expected = reference
    r = http.post(f"/v1/models/{TINY_VARIANT}:predict", json={"inputs": images[i:i + 1].tolist()})
    assert r.status_code == 200, r.text
    for name, atol in ATOL.items():
        np.testing.assert_allclose(np.array(r.json()["outputs"][name]), expected[name][i:i + 1], atol=atol, rtol=1e-5)
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    req = predict_pb2.PredictRequest()
    req.model_spec.name = TINY_VARIANT
    req.inputs["image"].CopyFrom(tf.make_tensor_proto(images[i:i + 1]))
    out = stub.Predict(req, timeout=60)
    np.testing.assert_allclose(tf.make_ndarray(out.outputs["probabilities"]), expected["probabilities"][i:i + 1],
                               atol=ATOL["probabilities"], rtol=1e-5)


def assert_rest_answer(r: httpx.Response) -> None:
    TALLY[f"REST {r.status_code}"] += 1
    assert r.status_code in REST_OK, f"{r.status_code}: {r.text[:500]}"
    doc = r.json()
    if r.status_code == 200:
        assert set(doc) & {"predictions", "outputs", "model_version_status", "metadata"}, doc
    else:
        assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], doc


@PROFILE
@given(body=predict_bodies() | raw_bodies | truncated(), path=paths, i=st.integers(0, 7))
def test_rest_never_fails_on_hostile_bodies(target, tiny_reference, body, path, i):
    _, http, stub = target
    r = http.post(f"/v1/models/{path}", content=body, headers={"content-type": "application/json"})
    assert_rest_answer(r)
    check_still_right(http, stub, tiny_reference, i)


@PROFILE
@given(path=paths)
def test_rest_get_paths(target, path):
    _, http, _ = target
    assert_rest_answer(http.get(f"/v1/models/{path}"))


@PROFILE
@given(req=predict_requests(), i=st.integers(0, 7))
def test_grpc_never_fails_on_hostile_tensors(target, tiny_reference, req, i):
    _, http, stub = target
    try:
        stub.Predict(req, timeout=60)
        code, detail = grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        code, detail = e.code(), e.details()
    TALLY[f"gRPC {code.name}"] += 1
    assert code in GRPC_OK, f"{code}: {detail}"
    check_still_right(http, stub, tiny_reference, i)


# -- size limit, truncated and slow requests -----------------------------------------------------

def padded(doc: dict, size: int) -> bytes:
    body = json.dumps(doc).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_body_at_the_limit_is_served_and_over_it_is_413(target, tiny_reference):
    _, http, stub = target
    images, expected = tiny_reference
    at = padded({"inputs": images[:1].tolist()}, LIMIT)
    assert len(at) == LIMIT
    r = http.post(f"/v1/models/{TINY_VARIANT}:predict", content=at)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["outputs"]["logits"], expected["logits"][:1], atol=ATOL["logits"], rtol=1e-5)
    for size in (LIMIT + 1, 10 * LIMIT):
        r = http.post(f"/v1/models/{TINY_VARIANT}:predict", content=padded({"inputs": images[:1].tolist()}, size))
        assert r.status_code == 413, r.text
        assert r.json() == {"error": f"request body of {size} bytes is larger than the limit of {LIMIT} bytes"}
    check_still_right(http, stub, tiny_reference)


def test_grpc_message_over_the_limit_is_resource_exhausted(target, tiny_reference):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    _, http, stub = target
    req = predict_pb2.PredictRequest()
    req.model_spec.name = TINY_VARIANT
    req.inputs["image"].CopyFrom(tf.make_tensor_proto(np.zeros((LIMIT // (SIZE * SIZE * 12) + 1, SIZE, SIZE, 3),
                                                                np.float32)))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req, timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in info.value.details()
    check_still_right(http, stub, tiny_reference)


@pytest.mark.parametrize("dims, message", [
    ([2**40, SIZE, SIZE, 3], "input 'image': a tensor of shape [1099511627776,32,32,3] holds 3377699720527872 "
                             "values (13510798882111488 bytes), more than the request limit of 1000000 bytes"),
    ([-5, SIZE, SIZE, 3], "input 'image': negative dimension -5 in tensor_shape"),
    ([1, 2**62, 2**62, 3], "more than the request limit of 1000000 bytes"),
])
def test_grpc_shape_that_would_not_fit_is_refused_before_allocating(target, tiny_reference, dims, message):
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2
    _, http, stub = target
    req = predict_pb2.PredictRequest()
    req.model_spec.name = TINY_VARIANT
    t = req.inputs["image"]
    t.dtype = types_pb2.DT_FLOAT
    for d in dims:
        t.tensor_shape.dim.add(size=d)
    t.float_val.append(1.0)  # TF would repeat it to fill the shape
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    check_still_right(http, stub, tiny_reference)


def raw_http(server, data: bytes, shutdown: bool = True, timeout: float = 30) -> bytes:
    """Send bytes on a fresh connection, optionally half-close, and read whatever comes back."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=timeout) as s:
        s.sendall(data)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


@pytest.mark.parametrize("data", [
    b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"inputs\": [[",
    b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Len",
    b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxx\r\n",
    b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -4\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
], ids=["body-cut", "headers-cut", "bad-chunk", "negative-length", "tls"])
def test_truncated_and_malformed_http_gets_400_or_a_close(target, tiny_reference, data):
    server, http, stub = target
    answer = raw_http(server, data)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    TALLY[f"raw {status or 'closed'}"] += 1
    assert status in (None, 400), answer[:300]
    check_still_right(http, stub, tiny_reference)


def test_slow_and_stalled_clients_do_not_block_others(target, tiny_reference):
    """One client sends its body a byte a second, another pipelines requests and never reads the
    answers; meanwhile 20 REST and 20 gRPC requests are answered correctly."""
    server, http, stub = target
    images, _ = tiny_reference
    body = json.dumps({"inputs": images[:1].tolist()}).encode()
    stop = threading.Event()
    sent = []

    def dribble():
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=60) as s:
            s.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode())
            for b in body:
                if stop.wait(1.0):
                    return
                s.sendall(bytes([b]))
                sent.append(b)

    stalled = socket.create_connection(("127.0.0.1", server.rest_port), timeout=60)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = f"GET /v1/models/{TINY_VARIANT}/metadata HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    stalled.sendall(request * 500)  # ~1 MB of answers nobody reads
    slow = threading.Thread(target=dribble)
    slow.start()
    try:
        for i in range(20):
            check_still_right(http, stub, tiny_reference, i % 8)
        assert slow.is_alive() and len(sent) < len(body), "the slow client should still be sending"
    finally:
        stop.set()
        slow.join(30)
        stalled.close()
    check_still_right(http, stub, tiny_reference)


# -- memory -------------------------------------------------------------------------------------

#: The RSS growth after 1,000 bad and 1,000 good requests, the server warm: measured +5.2 and +6.3 MB
#: (742 -> 748 MB) on the 2-core development machine; the bound leaves room for allocator noise while
#: a leak of a few KB per request (several MB per 1,000) would still show.
RSS_GROWTH_BOUND_MB = 32


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


BAD_BODIES = [b"", b"{", b"[1, 2]", b'{"inputs": NaN}', b'{"inputs": [[[1]]]}', nested(100_000, "[", "]"),
              nested(40, "[", "]"), b'{"signature_name": "nope", "inputs": []}',
              json.dumps({"signature_name": "predict_image_bytes", "instances": [{"b64": "%%%"}]}).encode(),
              json.dumps({"signature_name": "predict_image_bytes",
                          "instances": [{"b64": base64.b64encode(PNG[:60]).decode()}]}).encode(),
              json.dumps({"inputs": np.full((1, SIZE, SIZE, 3), np.inf).tolist()}).encode(),
              json.dumps({"inputs": np.zeros((9, SIZE, SIZE, 3)).tolist()}).encode(),
              padded({"inputs": []}, LIMIT + 10)]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc to read the server's RSS")
def test_memory_is_bounded_after_1000_bad_and_1000_good_requests(tiny_bundle, tiny_reference, request):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    images, _ = tiny_reference
    server = start_server(tiny_bundle, "--max-body-bytes", str(LIMIT))
    channel = grpc.insecure_channel(server.grpc)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    good = predict_pb2.PredictRequest()
    good.model_spec.name = TINY_VARIANT
    good.inputs["image"].CopyFrom(tf.make_tensor_proto(images[:2]))
    bad = predict_pb2.PredictRequest()
    bad.model_spec.name = TINY_VARIANT
    bad.inputs["image"].CopyFrom(tf.make_tensor_proto(np.full((2, SIZE, SIZE, 3), np.nan, np.float32)))
    try:
        with httpx.Client(base_url=server.rest, timeout=60) as http:
            def good_request(i: int) -> None:
                if i % 2:
                    r = http.post(f"/v1/models/{TINY_VARIANT}:predict",
                                  json={"inputs": images[i % 8:i % 8 + 1].tolist()})
                    assert r.status_code == 200
                else:
                    assert stub.Predict(good, timeout=60).outputs["probabilities"].tensor_shape.dim[0].size == 2

            for i in range(100):  # warm: every code path traced and its buffers allocated
                good_request(i)
                http.post(f"/v1/models/{TINY_VARIANT}:predict", content=BAD_BODIES[i % len(BAD_BODIES)])
            before = rss_mb(server.proc.pid)
            codes: Counter = Counter()
            for i in range(1000):
                if i % 4 == 3:
                    try:
                        stub.Predict(bad, timeout=60)
                        codes["gRPC OK"] += 1
                    except grpc.RpcError as e:
                        codes[f"gRPC {e.code().name}"] += 1
                else:
                    r = http.post(f"/v1/models/{TINY_VARIANT}:predict", content=BAD_BODIES[i % len(BAD_BODIES)])
                    codes[f"REST {r.status_code}"] += 1
            for i in range(1000):
                good_request(i)
            after = rss_mb(server.proc.pid)
            check_still_right(http, stub, tiny_reference)
    finally:
        channel.close()
        server.stop()
    line = (f"server RSS before {before:.1f} MB, after 1,000 bad + 1,000 good requests {after:.1f} MB "
            f"(growth {after - before:+.1f} MB, bound {RSS_GROWTH_BOUND_MB} MB); bad answers: {dict(codes)}")
    report(request, line)
    assert set(codes) <= {"REST 400", "REST 413", "gRPC INVALID_ARGUMENT"}, codes
    assert after - before < RSS_GROWTH_BOUND_MB, line


def test_decompression_bomb_is_refused_from_its_header(target, tiny_reference):
    """74 bytes of PNG that declare 60,000 x 60,000 pixels: refused before TensorFlow decodes 10 GB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    _, http, stub = target
    r = http.post(f"/v1/models/{TINY_VARIANT}:predict", json={
        "signature_name": "predict_image_bytes", "instances": [{"b64": base64.b64encode(bomb).decode()}]})
    assert (r.status_code, r.json()) == (400, {"error": "image 0: image declares 3,600,000,000 pixels, more than the "
                                                        "limit of 50,000,000; downscale it before sending"})
    check_still_right(http, stub, tiny_reference)
