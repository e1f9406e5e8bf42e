"""A training run as the input of what follows: `export --run` / `--weights RUN/model.keras` without
--variant or --num-classes, `parity --run` with labels from the run, the bad runs they refuse, and
two `train` runs started at once into one RUN_DIR.

Real ResNet50 backbones (random:0) at 32x32 pixels on a small three-colour folder (e2e); the bad-input
tests read a tiny saved Keras model and no backbone (integration).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.cli.app import main
from export.training.settings import RUN_FILES
from tests.export.test_train import BASE, SIZE, _colour_folder
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("from-run")
    data = _colour_folder(work / "data", per_class=8)
    assert main(["train", "--variant", "dense", "--data", str(data), "--out", str(work / "run"), *BASE,
                 "--cache-dir", str(work / "cache"), "--json"]) == 0
    return data, work / "run"


@pytest.mark.e2e
def test_export_and_parity_from_a_run_take_classes_labels_and_variant_from_it(run_dir, tmp_path, capsys):
    data, run = run_dir
    out = tmp_path / "export"
    assert main(["export", "--run", str(run), "--format", "tflite", "--precision", "fp32", "--out", str(out),
                 "--json"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert (out / "tflite" / "dense" / "labels.txt").read_text().splitlines() == ["blue", "green", "red"]
    meta = json.loads((out / "golden" / "dense" / "meta.json").read_text())
    assert meta["num_classes"] == 3 and meta["labels"] == ["blue", "green", "red"]
    (artifact,) = json.loads((out / "artifacts.json").read_text())["artifacts"]
    assert artifact["inputs"][0]["shape"][1:] == [SIZE, SIZE, 3] and artifact["outputs"][0]["shape"][-1] == 3

    again = tmp_path / "again"  # the same through --weights RUN/model.keras, still without --variant
    assert main(["export", "--weights", str(run / "model.keras"), "--format", "tflite", "--precision", "fp32",
                 "--out", str(again), "--json"]) == 0
    capsys.readouterr()
    assert (again / "tflite" / "dense" / "labels.txt").read_text() == (out / "tflite/dense/labels.txt").read_text()

    # What this test is about: parity takes the reference's weights and the eval labels from the run. Its
    # verdict is not asserted here: measured on this 32x32 colour run, TFLite fp32 logits drifted 2.8e-3 from
    # Keras (tolerance 5e-4 + 1e-4|ref|), the folded Dense's large weights with a cancelling bias (see report).
    main(["parity", "--artifacts", str(out), "--run", str(run), "--eval-data", str(data), "--json"])
    report = json.loads(capsys.readouterr().out)
    (section,) = report["accuracy"]
    assert section["variant"] == "dense" and section["eval_set"]["count"] == 24


@pytest.mark.e2e
def test_export_refuses_a_variant_that_is_not_the_runs(run_dir, tmp_path, capsys):
    _, run = run_dir
    assert main(["export", "--run", str(run), "--variant", "conv", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --variant conv but {run / 'config.json'} trained 'dense'; drop --variant or give " \
                  "--variant dense"
    # Without the run's config.json the loaded weights still have to fit the variant: both shapes named.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.keras").write_bytes((run / "model.keras").read_bytes())
    assert main(["export", "--weights", str(alone / "model.keras"), "--variant", "conv", "--format", "tflite",
                 "--precision", "fp32", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this variant" in err[0] and "(last: (3,))" in err[0], err


def _tiny_keras(path: Path, k: int) -> Path:
    import keras
    x = keras.Input((8, 8, 3), name="image")
    logits = keras.layers.Dense(k, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    path.mkdir(parents=True, exist_ok=True)
    keras.Model(x, {"logits": logits}).save(path / "model.keras")
    return path


@pytest.mark.integration
@pytest.mark.parametrize("command", ["export", "parity"])
def test_bad_runs_are_one_line_naming_both(tmp_path, capsys, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "art").mkdir()
    tail = ["--out", str(tmp_path / "out")] if command == "export" else ["--artifacts", str(tmp_path / "art")]
    if command == "parity":
        (tmp_path / "art" / "artifacts.json").write_text(json.dumps({"artifacts": []}))
    assert main([command, "--run", str(empty), *tail]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --run {empty} has no model.keras ({empty / 'model.keras'}); give a RUN_DIR written by " \
                  "resnet-deploy train\n"
    run = _tiny_keras(tmp_path / "run", 3)
    (run / "labels.txt").write_text("cat\ndog\n")
    assert main([command, "--run", str(run), *tail]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {run / 'labels.txt'} has 2 lines but {run / 'model.keras'} has 3 outputs; give one " \
                  "label per output (the run's labels.txt)\n"
    assert main([command, "--run", str(run), "--weights", "random:0", *tail]) == 2
    assert "error: give --run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_two_runs_into_one_run_dir_one_refuses_the_other_is_untouched(tmp_path):
    """Both wait for the lock; the second to get it finds RUN_DIR there and refuses (it used to replace it)."""
    data = _colour_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "runs" / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "export.cli", "train", "--variant", "dense", "--data", str(data),
                               "--out", str(out), *BASE, "--seed", str(seed), "--wait",
                               "--cache-dir", str(tmp_path / f"cache{seed}")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (0, 1)]
    results = [(p.wait(timeout=600), p.stdout.read() if p.stdout else "", p.stderr.read() if p.stderr else "")
               for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    (winner,) = [i for i, (code, _, _) in enumerate(results) if code == 0]
    loser_err = results[1 - winner][2].strip().splitlines()[-1]
    assert loser_err == f"error: RUN_DIR {out} already exists; pass --overwrite to replace it or choose another --out"
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["seed"] == winner  # the winner's run, complete, not the loser's
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".") and p.name.endswith(".partial")] == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.array(metrics["val"]["confusion_matrix"]).sum() == metrics["val"]["images"]


@pytest.mark.unit
def test_a_pooling_head_shares_its_maps_only_with_a_conv_head_training_after_it_on_the_same_data():
    """make export and `make train` (runs.maps_sharers): dense caches the backbone's maps only when a conv
    head trains after it on the same data and weights; else it caches its pooled vectors alone."""
    from export.training.runs import maps_sharers
    d = {"data": "demo:lfw_subset", "weights": "random:0"}
    dense, conv, dropout = ({"name": n, **d} for n in ("dense", "conv", "dropout"))
    assert maps_sharers([dense, conv, dropout]) == [True, False, False]
    assert maps_sharers([conv, dense]) == [False, False]  # conv first caches the maps; dense pools them
    assert maps_sharers([dense]) == [False]
    assert maps_sharers([dense, {**conv, "data": "demo:digits"}]) == [False, False]
    assert maps_sharers([dense, {**conv, "weights": "random:1"}]) == [False, False]
