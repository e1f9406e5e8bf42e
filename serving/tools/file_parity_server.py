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

import numpy as np

from export.quality.file_parity import PathRow, compare

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


class StartedServer:
    """The bundle's local server, started at once in a thread (TensorFlow's import and the SavedModel's
    load take ~20 s) so that the caller's other work runs meanwhile; `wait()` gives its process and
    ports, or raises the start's error."""

    def __init__(self, bundle: Path) -> None:
        self._result: tuple[subprocess.Popen, int, int] | None = None
        self._error: BaseException | None = None

        def start() -> None:
            try:
                proc, rest, grpc, _ = start_local_server(bundle)
                self._result = (proc, rest, grpc)
            except Exception as e:  # noqa: BLE001  # handed to wait(), raised there in the caller
                self._error = e
        self._thread = threading.Thread(target=start, name="file-parity-server", daemon=True)
        self._thread.start()

    def wait(self) -> tuple[subprocess.Popen, int, int]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def stop(self) -> None:
        """Stop it without using it (the caller failed first)."""
        self._thread.join()
        if self._result is not None:
            stop_local_server(self._result[0])


def stop_local_server(proc: subprocess.Popen) -> None:
    import signal
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def server_rows(bundle: Path, files: list[Path], refs: dict[str, dict[str, np.ndarray]],
                pixels: dict[str, dict[str, np.ndarray]], bad: dict, progress: Callable[[str], None],
                started: StartedServer | None = None) -> list[PathRow]:
    """Rows for REST and gRPC x (predict_image_bytes, serving_default) of every variant in `refs`, on
    the bundle's local server: `started` (a StartedServer, loading while the other paths ran),
    else one started here; stopped either way."""
    from export.core.errors import ServingError
    from serving.client.clients import GrpcClient, RestClient
    proc, rest_port, grpc_port = (started or StartedServer(bundle)).wait()
    rows = []
    try:
        with RestClient(f"http://127.0.0.1:{rest_port}", timeout=300) as rest, \
                GrpcClient(f"127.0.0.1:{grpc_port}", timeout=300) as grpc:
            for variant, ref in sorted(refs.items()):
                for api, client in (("REST", rest), ("gRPC", grpc)):
                    got_bytes, got_pixels = {}, {}
                    for f in files:
                        blob = np.empty(1, dtype=object)
                        blob[0] = f.read_bytes()
                        try:
                            out = client.predict(variant, {"image_bytes": blob}, signature="predict_image_bytes")
                            got_bytes[f.name] = out["probabilities"][0]
                        except ServingError as e:
                            bad.setdefault(f.name, {})[f"server {api} predict_image_bytes"] = str(e)
                    for name, px in pixels[variant].items():
                        got_pixels[name] = client.predict(variant, {"image": px[None]})["probabilities"][0]
                    names = [f.name for f in files]
                    rows.append(compare(variant, "savedmodel fp32", f"server {api} predict_image_bytes", names,
                                        ref, got_bytes))
                    rows.append(compare(variant, "savedmodel fp32", f"server {api} serving_default (client pixels)",
                                        names, ref, got_pixels))
                    progress(f"{variant}: server {api}")
    finally:
        stop_local_server(proc)
    return rows
