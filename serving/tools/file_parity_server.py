"""The server rows of `parity --files`: the bundle's local server (a child process, SavedModel
backend) queried over REST and gRPC with both signatures, one file per request, compared with
the in-process `predict_image_bytes`. Bad files must come back as HTTP 400 / INVALID_ARGUMENT."""
from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from export.quality.file_parity import PathRow, compare

T = TypeVar("T")
READY_TIMEOUT_S = 600


def start_local_server(bundle: Path, *args: str, cwd: Path | None = None,
                       timeout_s: float = READY_TIMEOUT_S) -> tuple[subprocess.Popen, int, int, list[str]]:
    """`resnet-deploy serve BUNDLE --local ARGS` on free ports, once it says `ready:`: the process,
    its REST and gRPC ports and the lines it printed (still growing: a thread keeps reading them)."""
    import os
    cmd = [sys.executable, "-m", "export.cli", "serve", str(bundle), "--rest-port", "0", "--grpc-port", "0", "--local",
           *args]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    ready: queue.Queue = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.match(r"ready: rest_port=(\d+) grpc_port=(\d+)", line)
            if m:
                ready.put((int(m[1]), int(m[2])))
        ready.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        ports = ready.get(timeout=timeout_s)
    except queue.Empty:
        ports = None
    if ports is None:
        proc.kill()
        proc.wait(10)
        from export.core.errors import ServingError
        raise ServingError("the local server did not start: " + "".join(lines[-5:]).strip())
    return proc, ports[0], ports[1], lines


class _InThread(Generic[T]):
    """`fn()` run at once in a daemon thread; `join()` gives what it returned, or raises what it raised."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._result: T | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._result = fn()
            except BaseException as e:  # noqa: BLE001  # handed to join(), raised there in the caller
                self._error = e
        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> T:
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def finished_result(self) -> T | None:
        """Wait, then what `fn` returned, or None if it raised."""
        self._thread.join()
        return self._result


class StartedServer:
    """The bundle's local server, started at once in a thread (TensorFlow's import and the SavedModel's
    load take ~20 s) so that the caller's other work runs meanwhile; `wait()` gives its process and
    ports, or raises the start's error."""

    def __init__(self, bundle: Path) -> None:
        self._start = _InThread(lambda: start_local_server(bundle)[:3], "file-parity-server")

    def wait(self) -> tuple[subprocess.Popen, int, int]:
        return self._start.join()

    def stop(self) -> None:
        """Stop it, whether it was used or not (the caller may have failed first)."""
        started = self._start.finished_result()
        if started is not None:
            stop_local_server(started[0])


def stop_local_server(proc: subprocess.Popen) -> None:
    import signal
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


ServerAnswers = dict[tuple[str, str], tuple[dict, dict, dict]]  # (variant, api) -> (bytes, pixels, refused)


def query_server(rest_port: int, grpc_port: int, files: list[Path],
                 pixels: dict[str, dict[str, np.ndarray]]) -> ServerAnswers:
    """Every file of every variant in `pixels` to the local server at these ports, over REST and gRPC,
    with both signatures, one request at once (they run beside the caller's other paths): what came
    back, per (variant, api)."""
    from export.core.errors import ServingError
    from serving.client.clients import GrpcClient, RestClient
    answers: ServerAnswers = {}
    with RestClient(f"http://127.0.0.1:{rest_port}", timeout=300) as rest, \
            GrpcClient(f"127.0.0.1:{grpc_port}", timeout=300) as grpc:
        for api, client in (("REST", rest), ("gRPC", grpc)):
            for variant in sorted(pixels):
                got_bytes, got_pixels, refused = {}, {}, {}
                for f in files:
                    blob = np.empty(1, dtype=object)
                    blob[0] = f.read_bytes()
                    try:
                        out = client.predict(variant, {"image_bytes": blob}, signature="predict_image_bytes")
                        got_bytes[f.name] = out["probabilities"][0]
                    except ServingError as e:
                        refused[f.name] = str(e)
                for name, px in pixels[variant].items():
                    got_pixels[name] = client.predict(variant, {"image": px[None]})["probabilities"][0]
                answers[variant, api] = (got_bytes, got_pixels, refused)
    return answers


def rows_from(answers: ServerAnswers, files: list[Path], refs: dict[str, dict[str, np.ndarray]], bad: dict,
              progress: Callable[[str], None]) -> list[PathRow]:
    """The server's rows and refusals from `query_server`'s answers, in a fixed order (so the report is
    the same whichever query finished first)."""
    rows = []
    names = [f.name for f in files]
    for variant in sorted(refs):
        for api in ("REST", "gRPC"):
            got_bytes, got_pixels, refused = answers[variant, api]
            for name, message in refused.items():
                bad.setdefault(name, {})[f"server {api} predict_image_bytes"] = message
            rows.append(compare(variant, "savedmodel fp32", f"server {api} predict_image_bytes", names,
                                refs[variant], got_bytes))
            rows.append(compare(variant, "savedmodel fp32", f"server {api} serving_default (client pixels)",
                                names, refs[variant], got_pixels))
            progress(f"{variant}: server {api}")
    return rows


class BackgroundQueries:
    """`query_server` in a thread, started with the server, so the requests run while the caller's
    other paths do (make export: the variants' pool tasks) rather than after them. `pixels()` gives
    the client-decoded pixels per variant (decoded in the thread too); `result()` waits, stops the
    server, and gives the answers or raises the thread's error.

    The clients import no TensorFlow (serving.api.tf_protos), so make export's parent, which runs this
    thread, stays free of it. Until they did, the queries ran as a pool task forked from the fork server
    (4.2 s and ~670 MB in the parent otherwise). TF Serving's protos are loaded here, before the thread
    starts: the caller may import TensorFlow meanwhile (file_parity.run with one worker)."""

    def __init__(self, started: StartedServer, files: list[Path],
                 pixels: Callable[[], dict[str, dict[str, np.ndarray]]]) -> None:
        from serving.api import tf_protos
        tf_protos.load()
        self._started = started

        def work() -> ServerAnswers:
            _, rest_port, grpc_port = started.wait()
            return query_server(rest_port, grpc_port, files, pixels())
        self._queries = _InThread(work, "file-parity-queries")

    def result(self) -> ServerAnswers:
        try:
            return self._queries.join()
        finally:
            self._started.stop()

    def abandon(self) -> None:
        """The caller failed: stop the server (the queries in flight then fail) and let the thread end."""
        self._started.stop()
        try:
            self._queries.join(timeout=60)
        except Exception:  # noqa: BLE001 -- the queries fail once the server is gone; the caller's error is the one raised
            pass
