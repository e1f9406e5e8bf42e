"""A local TF Serving-compatible server for a bundle (development and tests; production is TF Serving).

REST (FastAPI on uvicorn) and gRPC (grpcio with tensorflow-serving-api's services) on the
ports TF Serving uses, answering TF Serving's API for the bundle's models: model status,
metadata, and Predict in row, columnar and `{"b64"}` forms, with its error codes. Requests go
through server-side batching read from the bundle's batching.config. SIGTERM (or Ctrl-C)
stops taking requests, lets the ones in flight finish, then exits 0.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import (
    Request,  # module level: FastAPI resolves the handlers' annotations here
)

from export.core.errors import BundleError, ServingError
from export.deploy import tfserving as config_mod
from serving.api import tensors
from serving.api.core import ServingCore
from serving.api.protos import to_dict
from serving.api.status import ServingStatus
from serving.backends.batching import BatchingOptions
from serving.backends.registry import ModelRegistry
from serving.backends.servables import Servable
from serving.frontends.grpc_service import create_grpc_server

log = logging.getLogger("resnet_deploy.serving")

DEFAULT_MAX_BODY_BYTES = 32 << 20
SHUTDOWN_GRACE_SECONDS = 30.0
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<suffix>/metadata|:[A-Za-z]+)?$")


# -- REST -------------------------------------------------------------------------------------

def _json_response(body: dict, status: int = 200):
    from starlette.responses import Response
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _error(e: ServingStatus):
    response = _json_response({"error": e.message}, e.http_status)
    if e.close_connection:
        # Close after answering, so the rest of the body is never read: uvicorn would otherwise read
        # (and discard) it to the end to keep the connection open for the next request.
        response.headers["Connection"] = "close"
    return response


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise ServingStatus.invalid(f"Failed to convert version: {text} to numeric.")
    return int(text)


#: A declared body up to this many times the limit is drained after its 413 (see _read_body).
DRAIN_FACTOR = 16


async def _read_body(request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to pass `limit` bytes: from its Content-Length before
    anything is read, else (chunked) once the bytes read pass it. The rest is never read: a client
    sending gigabytes costs the server no more than the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        err = ServingStatus.too_large(f"request body of {int(declared)} bytes is larger than the limit of {limit} bytes")
        # Up to DRAIN_FACTOR x the limit the rest is read and discarded, so that a client still writing
        # its body gets the 413 instead of a reset connection; past it the connection is closed.
        err.close_connection = int(declared) > DRAIN_FACTOR * limit
        raise err
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            err = ServingStatus.too_large(f"request body is larger than the limit of {limit} bytes "
                                          f"({total} bytes read before it was refused)")
            err.close_connection = True
            raise err
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(core: ServingCore, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               prometheus_path: str = config_mod.DEFAULT_PROMETHEUS_PATH):
    """The FastAPI app answering TF Serving's REST API (`/v1/models/...`)."""
    import anyio
    from fastapi import FastAPI
    from starlette.exceptions import HTTPException
    from starlette.responses import PlainTextResponse

    from serving.api import tf_protos
    tf_protos.load()  # without TensorFlow, which only the SavedModel backend needs
    from tensorflow_serving.apis import get_model_metadata_pb2

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)

    def predict_sync(name: str, version: int | None, label: str | None, body: bytes) -> dict:
        doc = tensors.parse_json_body(body)
        signature = tensors.signature_name_of(doc)
        servable = core.registry.resolve(name, version, label)
        sig = core.signature(servable, signature)
        inputs, form = tensors.json_to_inputs(doc, sig)
        return tensors.outputs_to_json(core.predict(servable, sig.name, inputs), form)

    def metadata_sync(name: str, version: int | None, label: str | None) -> dict:
        response = core.metadata_response(name, version, label)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        spec = to_dict(response.model_spec)
        spec.setdefault("signature_name", "")
        return {"model_spec": {"name": spec["name"], "signature_name": spec["signature_name"],
                               "version": spec["version"]},
                "metadata": {"signature_def": to_dict(sig_map)}}

    @app.api_route("/v1/models/{rest:path}", methods=["GET", "POST"])
    async def models(rest: str, request: Request):
        start = time.perf_counter()
        m = _PATH.match(request.url.path)
        api, model = "rest", "?"
        try:
            if m is None:
                raise ServingStatus.invalid(f"Malformed request: {request.method} {request.url.path}")
            model, suffix = m["name"], m["suffix"]
            version, label = _version(m["version"]), m["label"]
            if request.method == "GET" and suffix is None:
                api = "status"
                body = to_dict(core.status_response(model, version, label))
            elif request.method == "GET" and suffix == "/metadata":
                api = "metadata"
                body = await anyio.to_thread.run_sync(metadata_sync, model, version, label)
            elif request.method == "POST" and suffix == ":predict":
                api = "predict"
                data = await _read_body(request, max_body_bytes)
                body = await anyio.to_thread.run_sync(predict_sync, model, version, label, data)
            elif request.method == "POST" and suffix in (":classify", ":regress"):
                raise ServingStatus.invalid(f"{suffix[1:]} is not supported: this model's signatures are "
                                            "predict signatures (tensorflow/serving/predict); use :predict")
            else:
                raise ServingStatus.invalid(f"Malformed request: {request.method} {request.url.path}")
            core.record(model, api, "OK", time.perf_counter() - start)
            return _json_response(body)
        except ServingStatus as e:
            core.record(model, api, e.code, time.perf_counter() - start)
            return _error(e)
        except Exception as e:  # a bug here must not take the server down
            log.exception("internal error answering %s %s", request.method, request.url.path)
            core.record(model, api, "INTERNAL", time.perf_counter() - start)
            return _error(ServingStatus("INTERNAL", f"internal error: {type(e).__name__}: {e}"))

    @app.get(prometheus_path)
    async def metrics():
        return PlainTextResponse(core.prometheus_text())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(ServingStatus("NOT_FOUND" if exc.status_code == 404 else "INVALID_ARGUMENT",
                                    f"Malformed request: {request.method} {request.url.path}"))

    return app


# -- running both -----------------------------------------------------------------------------

def _listen(host: str, port: int) -> socket.socket:
    """The REST listening socket. Its protocol is named (IPPROTO_TCP, not 0): the connections it
    accepts inherit it, and asyncio sets TCP_NODELAY only on sockets that say they are TCP. Without
    it, every answer on a kept-alive connection waited ~40 ms: Nagle held its first segment until the
    client's delayed ACK of the previous answer (measured 43 ms per GET, 0.8 ms with it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServingError(f"cannot listen on {host}:{port} for REST: {e.strerror}; "
                           "choose another --rest-port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def load_core(bundle: str | Path, backend: str = "savedmodel", batching: bool = True,
              models: list[str] | None = None) -> ServingCore:
    """The bundle's models (or only `models`) behind `backend`, with the bundle's batching.config
    (or our defaults)."""
    bundle = Path(bundle)
    cfg = bundle / "batching.config"
    settings = config_mod.batching_settings(cfg.read_text()) if cfg.is_file() else dict(config_mod.BATCHING_DEFAULTS)
    settings["num_batch_threads"] = local_batch_threads(settings["num_batch_threads"])
    registry = ModelRegistry.from_bundle(bundle, backend, models)
    return ServingCore(registry, BatchingOptions.from_settings(settings, enabled=batching))


def local_batch_threads(configured: int, cpus: int | None = None) -> int:
    """The batch threads this machine can use: at most one per two cores. Every runner here uses
    all the cores for one call (intra-op threads), so batches running side by side only split the
    cores between them, and each gets smaller: on 2 cores the bundle's 4 (sized for a 4-core TF
    Serving pod) gave a mean batch of 1.6 for 8 clients and no throughput over batching off."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(configured, cpus // 2))


def warm_up(core: ServingCore) -> int:
    """Replay each SavedModel version's `assets.extra/tf_serving_warmup_requests` as TF Serving does
    at load (a record that fails fails the load: BundleError); without one, send one dummy request
    per signature, so the first client doesn't pay for tracing. Returns the records replayed."""
    from export.deploy.warmup import MAX_WARMUP_RECORDS, WARMUP_FILE, read_warmup_requests
    from export.model.samples import encode_jpeg
    from serving.backends.servables import IMAGE_BYTES_SIGNATURE
    replayed = 0
    for model in core.registry.models.values():
        for servable in model.versions.values():
            path = servable.path / "assets.extra" / WARMUP_FILE
            if servable.backend == "savedmodel" and path.is_file():
                replayed += _replay_warmup(servable, path, read_warmup_requests(path), MAX_WARMUP_RECORDS)
                continue
            for sig in servable.signatures.values():
                if len(sig.inputs) != 1:
                    continue
                ((name, info),) = sig.inputs.items()
                if sig.name == IMAGE_BYTES_SIGNATURE:
                    value = np.array([encode_jpeg(np.zeros((8, 8, 3)))], dtype=object)
                elif info.dtype == np.float32 and None not in info.shape[1:]:
                    value = np.zeros((1, *(int(d) for d in info.shape[1:] if d is not None)), np.float32)
                else:
                    continue
                with contextlib.suppress(ServingStatus):
                    servable.run(sig.name, {name: value})
    return replayed


def _replay_warmup(servable: Servable, path: Path, logs: list, limit: int) -> int:
    where = f"model {servable.name} version {servable.version}: warmup file {path}"
    if len(logs) > limit:
        raise BundleError(f"{where} has {len(logs)} records; TF Serving accepts at most {limit}")
    for i, log_record in enumerate(logs):
        if log_record.WhichOneof("log_type") != "predict_log":
            raise BundleError(f"{where}: record {i} is a {log_record.WhichOneof('log_type')}, "
                              "but these models only have predict signatures")
        request = log_record.predict_log.request
        try:
            sig = ServingCore.signature(servable, request.model_spec.signature_name)
            inputs = {k: tensors.proto_to_array(k, v) for k, v in request.inputs.items()}
            tensors.check_inputs(sig, inputs)
            servable.run(sig.name, inputs)
        except ServingStatus as e:
            raise BundleError(f"{where}: record {i} fails ({e.message}); TF Serving would not load this version") from None
    return len(logs)


def serve(bundle: str | Path, rest_port: int = 8501, grpc_port: int = 8500, host: str = "127.0.0.1",
          backend: str = "savedmodel", batching: bool = True, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          grace_seconds: float = SHUTDOWN_GRACE_SECONDS, out=sys.stdout, models: list[str] | None = None) -> int:
    """Serve `bundle` (every model, or only `models`) until SIGTERM/SIGINT; in-flight requests
    finish before it returns 0.

    Port 0 picks a free port; the `ready:` line says which were bound.
    """
    import uvicorn

    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"{bundle} is not a bundle directory")
    core = load_core(bundle, backend, batching, models)
    replayed = warm_up(core)
    # Everything loaded so far (TF, the models) is long-lived: keep it out of the cyclic GC's
    # scans, which otherwise make parsing a pixel JSON body (~1M objects) several times slower.
    gc.freeze()
    sock = _listen(host, rest_port)
    rest_port = sock.getsockname()[1]
    grpc_server = create_grpc_server(core, max_body_bytes)
    target = f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"
    try:
        bound = grpc_server.add_insecure_port(target)
    except RuntimeError:
        bound = 0
    if not bound:
        sock.close()
        raise ServingError(f"cannot listen on {host}:{grpc_port} for gRPC (in use?); choose another --grpc-port")
    grpc_stopped = threading.Event()
    grpc_stopped_set = False

    def stop_grpc() -> None:
        nonlocal grpc_stopped_set
        if not grpc_stopped_set:
            grpc_stopped_set = True
            threading.Thread(target=lambda: (grpc_server.stop(grace_seconds).wait(), grpc_stopped.set()),  # type: ignore[func-returns-value]
                             daemon=True).start()

    served = ", ".join(f"{m.name} v{','.join(map(str, sorted(m.versions)))}" for m in core.registry.models.values())
    b = core.batching
    batching_text = (f"batching max_batch_size={b.max_batch_size} batch_timeout_micros={b.batch_timeout_micros} "
                     f"num_batch_threads={b.num_batch_threads}" if b.enabled else "batching off")

    def ready() -> None:
        print(f"local TF Serving-compatible server: {served} ({backend}); {batching_text}", file=out)
        if replayed:
            print(f"warmup: replayed {replayed} requests from assets.extra/tf_serving_warmup_requests", file=out)
        print(f"REST http://{host}:{rest_port}/v1/models/<name>  gRPC {host}:{bound}", file=out)
        print(f"ready: rest_port={rest_port} grpc_port={bound}", file=out, flush=True)

    try:  # from gRPC's start on: a REST app that fails to start must not leave gRPC serving
        grpc_server.start()
        server: Any = _UvicornServer(
            uvicorn.Config(create_app(core, max_body_bytes), log_level="warning", access_log=False, lifespan="off",
                           timeout_graceful_shutdown=int(grace_seconds)),
            on_signal=stop_grpc, on_started=ready)
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        stop_grpc()
        grpc_stopped.wait(grace_seconds + 5)
        core.close()
        sock.close()
    print("stopped: in-flight requests finished", file=out, flush=True)
    return 0


class _UvicornServer:
    """uvicorn.Server that hands SIGTERM/SIGINT to us (stop gRPC too) and does not re-raise the
    signal after its graceful shutdown, so the process can finish its own cleanup and exit 0."""

    def __new__(cls, config, on_signal: Callable[[], None], on_started: Callable[[], None]):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                sigs = (signal.SIGINT, signal.SIGTERM)
                original = {s: signal.signal(s, self._on_signal) for s in sigs}
                try:
                    yield
                finally:
                    for s, h in original.items():
                        signal.signal(s, h)

            def _on_signal(self, sig, frame) -> None:
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True
                self.should_exit = True
                on_signal()

            async def startup(self, sockets=None) -> None:
                await super().startup(sockets=sockets)
                if self.started:
                    on_started()

        return Server(config)
