"""The CLI as a user runs it: subprocesses, exit codes, one-line errors."""
from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli, run_main


@pytest.mark.e2e
def test_variants_lists_the_three_heads():
    r = run_cli("variants")
    assert r.returncode == 0
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["conv", "dense", "dropout"]


@pytest.mark.e2e
def test_build_json():
    r = run_cli("build", "--variant", "conv", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["variant"] == "conv" and rec["num_classes"] == 5
    # ResNet50 notop's 23,587,712 frozen parameters + the frozen 1x1 preprocessing conv's 12
    assert rec["params"] == {"trainable": 5_014_533, "non_trainable": 23_587_724, "total": 28_602_257}
    assert rec["inputs"] == {"image": {"dtype": "float32", "shape": [None, 224, 224, 3]}}
    assert set(rec["outputs"]) == {"logits", "probabilities"}
    assert rec["weights"]["source"] == "random:0"


def _one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0], lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.integration
def test_unknown_variant():
    _one_line_error(run_main("build", "--variant", "resnet9000"), "unknown variant 'resnet9000'", "dense")


@pytest.mark.integration
def test_num_classes_below_one():
    _one_line_error(run_main("build", "--variant", "dense", "--num-classes", "0"), "--num-classes", ">= 1")


@pytest.mark.integration
def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    _one_line_error(run_main("build", "--variant", "dense", "--weights", str(missing)),
                    f"weights file not found: {missing}")


@pytest.mark.integration
def test_corrupt_weights_file(tmp_path):
    bad = tmp_path / "corrupt.weights.h5"
    bad.write_bytes(b"this is not hdf5")
    _one_line_error(run_main("build", "--variant", "dense", "--weights", str(bad)),
                    "cannot load weights file", "corrupt.weights.h5")


@pytest.mark.e2e
def test_imagenet_offline_says_what_to_do(tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-m", "export.cli", "build", "--variant", "dense", "--weights", "imagenet"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    _one_line_error(r, "cannot get the ImageNet weights", "random", ".weights.h5")


@pytest.mark.e2e
def test_save_keras(tmp_path):
    out = tmp_path / "m.keras"
    r = run_cli("build", "--variant", "dense", "--save", str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 1_000_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.integration
def test_debug_prints_the_chained_traceback(tmp_path):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an hdf5 file")
    plain = run_main("build", "--variant", "dense", "--weights", str(bad))
    debug = run_main("--debug", "build", "--variant", "dense", "--weights", str(bad))
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and plain.stderr.count("\n") == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "During handling of the above exception" in debug.stderr  # the hidden cause is shown
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


@pytest.mark.integration
def test_export_checks_out_and_conflicts_before_building(tmp_path, monkeypatch):
    """A bad --out or an artifact in the way is reported before the model is built."""
    import export.model.build

    def no_build(*args, **kwargs):
        raise AssertionError("built the model before checking --out")
    monkeypatch.setattr(export.model.build, "build", no_build)
    existing = tmp_path / "out" / "tflite" / "dense" / "model_fp32.tflite"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"keep me")
    r = run_main("export", "--variant", "dense", "--format", "tflite", "--precision", "fp32",
                 "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "already exists; pass --overwrite" in r.stderr, r.stderr
    assert existing.read_bytes() == b"keep me"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = run_main("export", "--variant", "dense", "--format", "tflite", "--out", str(blocker / "sub"))
    assert r.returncode == 2 and "--out" in r.stderr, r.stderr
