"""Serving fixtures: one small bundle (dense variant) per session, and local servers started with
`resnet-deploy serve` in subprocesses on free loopback ports (port 0; the `ready:` line says which)."""
from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, link_tree

VARIANT = "dense"
#: Batching for the test bundle: small enough that a 9-image request is refused.
BATCHING = {"max_batch_size": 8, "batch_timeout_micros": 2000, "num_batch_threads": 2, "max_enqueued_batches": 16}
MAX_BODY_BYTES = 6_000_000
READY_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def built(built_model):
    return built_model(VARIANT)


@pytest.fixture(scope="session")
def bundle(exported, tmp_path_factory) -> Path:
    """A bundle directory: tfserving/dense/1 (SavedModel with warmup requests), onnx fp32, tflite
    fp32, the OpenVINO IR (openvino/dense/1), and the three TF Serving config files: the artifacts
    are the session's dense export (tests/conftest.py `exported`, the project's exporters),
    hard-linked; the configs are written by export.deploy."""
    from export.core.registry import FORMATS
    from export.deploy import tfserving as config
    _, src, _ = exported(VARIANT)
    out = tmp_path_factory.mktemp("bundle")
    for fmt in ("savedmodel", "onnx", "tflite"):
        path = FORMATS[fmt].target_path(src, VARIANT, "fp32")
        link_tree(path, out / path.relative_to(src))
    link_tree(src / "tflite" / VARIANT / "labels.txt", out / "tflite" / VARIANT / "labels.txt")
    ir = FORMATS["openvino"].target_path(src, VARIANT, "fp16").parent
    link_tree(ir, out / ir.relative_to(src))
    (out / "models.config").write_text(config.bundle_models_config({VARIANT: [1]}))
    (out / "batching.config").write_text(config.batching_config(**BATCHING))
    (out / "monitoring.config").write_text(config.monitoring_config())
    return out


@pytest.fixture(scope="session")
def tiny_scoring_bundle(tmp_path_factory) -> Path:
    """tests/serving/scoring_bundle.py's tiny real bundle (SavedModel, TFLite fp32/int8, ONNX, OpenVINO
    IR: ~10 s of exports), once per test process; read-only: a test that changes it copies it."""
    from tests.serving.scoring_bundle import make_bundle
    return make_bundle(tmp_path_factory.mktemp("tiny-scoring-bundle"))


@pytest.fixture(scope="session")
def photos4():
    from export.model import samples
    return samples.photos()[:4]


@pytest.fixture(scope="session")
def reference(built, photos4) -> dict[str, np.ndarray]:
    """The Keras model's answers for the four test photos (the parity reference)."""
    out = built.model.predict(photos4, verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    rest_port: int
    grpc_port: int
    lines: list[str] = field(default_factory=list)

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def output(self) -> str:
        return "".join(self.lines)


def start_server(bundle: Path, *args: str) -> ServerProcess:
    """`resnet-deploy serve BUNDLE --rest-port 0 --grpc-port 0 --local ARGS`, once it says `ready:`
    (the tool's own start: serving.tools.file_parity_server.start_local_server)."""
    from serving.tools.file_parity_server import start_local_server
    proc, rest, grpc, lines = start_local_server(bundle, "--max-body-bytes", str(MAX_BODY_BYTES), *args, cwd=ROOT,
                                                 timeout_s=READY_TIMEOUT_S)
    return ServerProcess(proc, rest, grpc, lines=lines)


@pytest.fixture(scope="session")
def server(bundle):
    """The local server for the bundle, SavedModel backend, batching from batching.config."""
    s = start_server(bundle)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def rest(server):
    from serving.client.clients import RestClient
    with RestClient(server.rest, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def grpc_client(server):
    from serving.client.clients import GrpcClient
    with GrpcClient(server.grpc, timeout=120) as c:
        yield c


def wait_until(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


# -- the tiny model behind the same server: for tests that send many requests ------------------

TINY_VARIANT = "tiny"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle of the tiny model (tests/helpers.tiny_model: 32x32 input, 10 classes): its
    SavedModel with both serving signatures under tfserving/tiny/1/, and the three config files."""
    from export.deploy import tfserving as config
    from export.formats.savedmodel import write_saved_model
    from tests.helpers import TINY_SIZE, tiny_model
    out = tmp_path_factory.mktemp("tiny-bundle")
    write_saved_model(tiny_model(), out / "tfserving" / TINY_VARIANT / "1", TINY_SIZE)
    (out / "models.config").write_text(config.bundle_models_config({TINY_VARIANT: [1]}))
    (out / "batching.config").write_text(config.batching_config(**BATCHING))
    (out / "monitoring.config").write_text(config.monitoring_config())
    return out


@pytest.fixture(scope="session")
def tiny_reference():
    """(images, {output: array}): eight seeded 32x32 images and the tiny Keras model's answers."""
    from tests.helpers import TINY_SIZE, tiny_model
    images = np.random.default_rng(0).uniform(0, 255, (8, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
    out = tiny_model().predict(images, verbose=0)
    return images, {k: np.asarray(v) for k, v in out.items()}
