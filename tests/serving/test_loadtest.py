"""The loopback load run (python -m serving.tools.loadtest): every backend given, batching on and off,
the batch-1 gRPC overhead against the raw runner with the client's encoding apart, `--model`
serving one model. Numbers are reported, never asserted."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.e2e


def test_load_run_reports_each_backend_and_the_overhead(bundle, tmp_path):
    out = tmp_path / "load.json"
    r = subprocess.run([sys.executable, "-m", "serving.tools.loadtest", str(bundle), "--backend", "onnx",
                        "--backend", "tflite", "--clients", "2", "--seconds", "1", "--overhead", "--threads", "1",
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(out.read_text())
    rows = {(row["backend"], row["batching"]) for row in doc["load"]}
    assert rows == {("onnx", True), ("onnx", False), ("tflite", True), ("tflite", False)}
    for row in doc["load"]:
        assert row["errors"] == 0 and row["requests"] > 0 and row["clients"] == 2
    assert all(row["mean_batch_size"] == 1.0 for row in doc["load"] if not row["batching"])
    o = doc["grpc_overhead"]
    assert o["backend"] == "savedmodel" and o["model"] == "dense" and o["rounds"] == 20
    assert o["raw_p50_ms"] > 0 and o["grpc_p50_ms"] > 0 and 0 < o["encode_p50_ms"] < o["grpc_p50_ms"]
    assert o["added_pct"] == pytest.approx(100 * (o["grpc_p50_ms"] / o["raw_p50_ms"] - 1), abs=0.2)
    assert "gRPC batch 1 (savedmodel dense)" in r.stdout and "onnx" in r.stdout and "tflite" in r.stdout


SERVE_THEN_SAY_TF = "import sys; from export.cli.app import main; rc = main(sys.argv[1:]); " \
                    "print('tensorflow imported:', 'tensorflow' in sys.modules); sys.exit(rc)"


def test_serving_an_unknown_model_is_one_line(bundle):
    """Said before the SavedModel backend imports TensorFlow (~5 s)."""
    r = subprocess.run([sys.executable, "-c", SERVE_THEN_SAY_TF, "serve", str(bundle), "--local", "--model", "nope",
                        "--rest-port", "0", "--grpc-port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: --model nope: not in {bundle} (it has dense)"]
    assert r.stdout.strip().splitlines()[-1] == "tensorflow imported: False"
