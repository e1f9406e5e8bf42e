"""The local server's seams (tiny model, real loopback HTTP and gRPC): the Prometheus page after
hostile model names (it must still parse with prometheus_client's own parser, forge no metric, and
count every model the server does not serve under one label value, however many names clients
invent); a body over the limit refused without being read to its end; gRPC stopped when the REST
app fails to start; SIGTERM letting a request in flight finish."""
from __future__ import annotations

import urllib.parse

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.api.metrics import BATCH_SIZE, REQUEST_COUNT, REQUEST_LATENCY, UNKNOWN_MODEL
from tests.serving.conftest import TINY_VARIANT, start_server, wait_until

pytestmark = pytest.mark.integration

HOSTILE = ['evil"} 1\nforged_metric{a="b"} 999\n# TYPE forged_metric counter', 'back\\slash', "new\nline",
           '"', "}", "\\n", "é ünïcode"]
#: A URL path cannot hold a newline (Starlette answers 404 before routing); gRPC names can.
REST_HOSTILE = [name for name in HOSTILE if "\n" not in name]
UNKNOWN = [f"made-up-{i}" for i in range(500)]
#: Every request the fixture sends for a model the server does not serve.
REFUSED = len(UNKNOWN) + len(REST_HOSTILE) + len(HOSTILE)


@pytest.fixture(scope="module")
def server(tiny_bundle):
    server = start_server(tiny_bundle)
    yield server
    assert server.stop() == 0, server.output()[-3000:]


@pytest.fixture(scope="module")
def scraped(server):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
    with httpx.Client(base_url=server.rest, timeout=60) as http:
        assert http.get(f"/v1/models/{TINY_VARIANT}").status_code == 200
        for name in UNKNOWN + REST_HOSTILE:
            r = http.get("/v1/models/" + urllib.parse.quote(name, safe=""))
            assert r.status_code in (400, 404), (name, r.status_code)
        with grpc.insecure_channel(server.grpc) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            for name in HOSTILE:
                request = get_model_status_pb2.GetModelStatusRequest()
                request.model_spec.name = name
                with pytest.raises(grpc.RpcError) as e:
                    stub.GetModelStatus(request, timeout=30)
                assert e.value.code() == grpc.StatusCode.NOT_FOUND
        return http.get("/monitoring/prometheus/metrics").text


def test_metrics_page_parses_after_hostile_and_500_unknown_model_names(scraped):
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    # Nothing forged: only the server's three families (a summary parses under its own name).
    assert set(families) == {REQUEST_COUNT, REQUEST_LATENCY, BATCH_SIZE}, sorted(families)
    samples = families[REQUEST_COUNT].samples
    assert {s.labels["model_name"] for s in samples} == {TINY_VARIANT, UNKNOWN_MODEL}
    by_key = {(s.labels["model_name"], s.labels["api"], s.labels["status"]): s.value for s in samples}
    assert by_key[(TINY_VARIANT, "status", "OK")] == 1
    refused = sum(v for (model, _, _), v in by_key.items() if model == UNKNOWN_MODEL)
    assert refused == REFUSED
    # The page stays small: one line per (model, api, status), not one per name a client invented.
    assert len(samples) <= 8 and len(scraped.splitlines()) < 40


def test_latency_summary_counts_every_request(scraped):
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    counts = {s.labels["api"]: s.value for s in families[REQUEST_LATENCY].samples
              if s.name == REQUEST_LATENCY + "_count"}
    assert counts["status"] == 1 + REFUSED  # every request the fixture sent asked for a model's status


class _Sender:
    """A request body of `chunks` MB handed to httpx one MB at a time, counting what was taken."""

    def __init__(self, chunks: int) -> None:
        self.chunks, self.taken = chunks, 0

    def __iter__(self):
        for _ in range(self.chunks):
            self.taken += 1
            yield b" " * 1_000_000


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_without_reading_it_to_the_end(server, declared):
    """200 MB against the 6 MB limit: 413, and the client could hand over only what socket buffers
    hold before the answer came (the server used to read all of it, to throw it away)."""
    body = _Sender(200)
    headers = {"Content-Length": str(200 * 1_000_000)} if declared else {}
    with httpx.Client(base_url=server.rest, timeout=60) as http:
        r = http.post(f"/v1/models/{TINY_VARIANT}:predict", content=body, headers=headers)
        assert r.status_code == 413, r.text
        assert r.json()["error"].startswith("request body of 200000000 bytes is larger than the limit of 6000000"
                                            if declared else "request body is larger than the limit of 6000000")
        assert body.taken < 60, f"the client sent {body.taken} of 200 MB"
        assert http.get(f"/v1/models/{TINY_VARIANT}").status_code == 200  # and the server still answers


def test_grpc_is_stopped_when_the_rest_app_fails_to_start(tiny_bundle, monkeypatch):
    """serve() in this process with a REST app that cannot be built: the error comes through and
    the gRPC server it had started is stopped (its port is free again), not left serving."""
    import io
    import socket

    from serving.frontends import server as server_module
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def broken_app(*args, **kwargs):
        raise RuntimeError("the REST app failed to start")

    monkeypatch.setattr(server_module, "create_app", broken_app)
    with pytest.raises(RuntimeError, match="the REST app failed to start"):
        server_module.serve(tiny_bundle, rest_port=0, grpc_port=port, out=io.StringIO(), grace_seconds=1)

    def port_free() -> bool:
        with socket.socket() as s:  # no SO_REUSEPORT: fails while gRPC (which sets it) still listens
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False
    assert wait_until(port_free, timeout=30), f"gRPC still holds port {port}"


def _http_answer(sock) -> tuple[int, dict]:
    """Status and JSON body of the HTTP/1.1 answer on `sock`, read until the server closes it."""
    import json
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_sigterm_lets_the_request_in_flight_finish(tiny_bundle, tiny_reference):
    """A predict request whose headers the server has taken (it answered `100 Continue`: the app is
    reading the body) when SIGTERM arrives; the body is sent only once the server stopped taking
    new connections. The request still gets its answer, and the server exits 0. No sleeps: each
    step waits for the one before it."""
    import json
    import signal
    import socket

    import numpy as np
    images, expected = tiny_reference
    body = json.dumps({"inputs": images[:1].tolist()}).encode()
    s = start_server(tiny_bundle, "--no-batching")
    try:
        with socket.create_connection(("127.0.0.1", s.rest_port), timeout=60) as sock:
            sock.sendall(f"POST /v1/models/{TINY_VARIANT}:predict HTTP/1.1\r\nHost: x\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Expect: 100-continue\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue"), "the app never asked for the body"
            s.proc.send_signal(signal.SIGTERM)

            def refusing() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", s.rest_port), timeout=5).close()
                    return False
                except OSError:
                    return True
            assert wait_until(refusing, timeout=60), "the server kept taking connections after SIGTERM"
            sock.sendall(body)
            status, answer = _http_answer(sock)
        assert status == 200, answer
        np.testing.assert_allclose(answer["outputs"]["probabilities"], expected["probabilities"][:1], atol=1e-5)
        assert s.proc.wait(60) == 0
        assert "stopped: in-flight requests finished" in s.output()
    finally:
        s.stop()


def test_rest_connections_are_accepted_with_tcp_nodelay():
    """The REST socket's accepted connections have TCP_NODELAY: asyncio sets it only on sockets that
    say they are TCP, and without it every answer on a kept-alive connection waited ~40 ms for the
    client's delayed ACK of the previous one (Nagle)."""
    import asyncio
    import socket

    from serving.frontends.server import _listen
    sock = _listen("127.0.0.1", 0)
    seen = []

    async def main() -> None:
        async def handle(reader, writer) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
        server = await asyncio.start_server(handle, sock=sock)
        reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()
    asyncio.run(main())
    assert seen == [1]
