"""`resnet-deploy predict | status | metadata | serve` as a user runs them (subprocesses)."""
from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli, run_main

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def image_files(tmp_path_factory, photos4):
    from export.model import samples
    d = tmp_path_factory.mktemp("images")
    paths = []
    for name in ("chelsea", "rocket"):
        p = d / f"{name}.jpg"
        p.write_bytes(samples.encode_jpeg(samples.load_photo(name, 256)))
        paths.append(str(p))
    labels = d / "labels.txt"
    labels.write_text("\n".join(f"label_{i}" for i in range(10)) + "\n")
    return paths, str(labels)


def test_predict_rest_json_top_k_with_labels(server, image_files):
    paths, labels = image_files
    r = run_cli("predict", "--rest", server.rest, "--model", "dense", "--labels", labels, "--top-k", "3", "--json", *paths)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["signature"] == "predict_image_bytes" and [p["image"] for p in doc["predictions"]] == paths
    top = doc["predictions"][0]["top_k"]
    assert len(top) == 3 and all(t["label"].startswith("label_") for t in top)
    assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]


def test_predict_grpc_pixels_matches_rest_pixels(server, image_files):
    paths, _ = image_files
    outs = []
    for where in (["--grpc", server.grpc], ["--rest", server.rest]):
        r = run_cli("predict", *where, "--model", "dense", "--pixels", "--label", "stable", "--json", paths[0])
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout)["predictions"][0]["top_k"])
    assert [t["index"] for t in outs[0]] == [t["index"] for t in outs[1]]
    assert abs(outs[0][0]["probability"] - outs[1][0]["probability"]) < 1e-5


def test_predict_prints_top_k_lines(server, image_files):
    paths, _ = image_files
    r = run_cli("predict", "--rest", server.rest, "--model", "dense", "--top-k", "2", paths[1])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == paths[1] and lines[1].lstrip().startswith("1. ") and lines[2].lstrip().startswith("2. ")


def test_status_and_metadata(server):
    r = run_cli("status", "--grpc", server.grpc, "--model", "dense")
    assert (r.returncode, r.stdout) == (0, "dense version 1: AVAILABLE\n")
    r = run_cli("metadata", "--rest", server.rest, "--model", "dense", "--version", "1")
    assert r.returncode == 0, r.stderr
    assert "serving_default: image DT_FLOAT[-1,224,224,3] -> logits DT_FLOAT[-1,10], probabilities DT_FLOAT[-1,10]" in r.stdout
    assert "predict_image_bytes: image_bytes DT_STRING[-1]" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["status", "--model", "nope"], "error: gRPC NOT_FOUND: Could not find any versions of model nope"),
    (["predict", "--model", "dense", "/no/such.jpg"], "error: cannot read image /no/such.jpg"),
])
def test_client_errors_are_one_line_exit_2(server, args, message):
    r = run_cli(args[0], "--grpc", server.grpc, *args[1:])
    assert r.returncode == 2 and r.stderr.strip() == r.stderr.strip().splitlines()[0]
    assert r.stderr.startswith(message), r.stderr


def test_unreachable_server_is_one_line(free_port=1):
    r = run_cli("status", "--rest", f"http://127.0.0.1:{free_port}", "--model", "dense", "--timeout", "5")
    assert r.returncode == 2
    assert r.stderr.startswith("error: cannot reach the REST API at http://127.0.0.1:1") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["serve", "/no/such/bundle"], "error: no such bundle: /no/such/bundle"),
    (["serve", "/tmp"], "error: /tmp is not a bundle: no models.config and no tfserving/ directory"),
    (["serve", "x", "--backend", "tensorrt"], "error: argument --backend: choose one of savedmodel, tflite, onnx"),
])
def test_serve_errors(args, message):
    r = run_main(*args)
    assert r.returncode == 2 and r.stderr.startswith(message), r.stderr


def test_serve_refuses_a_port_in_use(bundle, server):
    r = run_cli("serve", str(bundle), "--local", "--rest-port", str(server.rest_port), "--grpc-port", "0")
    assert r.returncode == 2
    assert f"error: cannot listen on 127.0.0.1:{server.rest_port} for REST" in r.stderr


def test_rest_client_commands_do_not_import_tensorflow(server, image_files):
    """REST predict, status and metadata cost no TensorFlow import (seconds per call)."""
    import subprocess
    import sys

    from tests.helpers import ROOT
    paths, _ = image_files
    code = ("import sys\nfrom export.cli.app import main\n"
            "rcs = [main(a) for a in sys.argv[1:2] and [\n"
            f"    ['status', '--rest', {server.rest!r}, '--model', 'dense'],\n"
            f"    ['metadata', '--rest', {server.rest!r}, '--model', 'dense'],\n"
            f"    ['predict', '--rest', {server.rest!r}, '--model', 'dense', {paths[0]!r}],\n"
            f"    ['predict', '--rest', {server.rest!r}, '--model', 'dense', '--pixels', {paths[0]!r}]]]\n"
            "print('RCS', rcs, 'TENSORFLOW', 'tensorflow' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code, "go"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "RCS [0, 0, 0, 0] TENSORFLOW False" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
