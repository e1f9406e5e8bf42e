"""`resnet-deploy score`: Apache Beam RunInference on the DirectRunner over a real image folder,
with a tiny real bundle (SavedModel, ONNX, TFLite fp32/int8 from the project's exporters).
Equality with `resnet-deploy predict` is in test_scoring_predict.py (it starts servers)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from export.core.errors import BundleError, UsageError
from export.core.registry import FORMATS
from tests.helpers import run_cli, run_main
from tests.serving.scoring_bundle import LABELS, MODEL, make_images, rows_by_path, top_k_arrays

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_bundle(tiny_scoring_bundle):
    return tiny_scoring_bundle


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("scoring-images"))


def test_score_cli_writes_rows_for_images_and_dead_letters_for_the_rest(tiny_bundle, images, tmp_path):
    folder, good, bad = images
    r = run_cli("score", str(tiny_bundle), "--model", MODEL, "--input", str(folder), "--output",
                str(tmp_path / "out" / "scores"), "--top-k", "3", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["scored"] == len(good) and summary["dead_letter"] == len(bad)
    assert summary["outputs"] == [str(tmp_path / "out" / "scores-00000-of-00001.jsonl")]
    rows = rows_by_path(summary["outputs"])
    assert sorted(rows) == [str(p) for p in good]  # the nested folder is scored too
    for row in rows.values():
        assert (row["model"], row["version"], row["format"], row["precision"]) == (MODEL, 1, "savedmodel", "fp32")
        indices, probs = top_k_arrays(row["top_k"])
        assert len(indices) == 3 and [t["label"] for t in row["top_k"]] == [LABELS[i] for i in indices]
        assert np.all(np.diff(probs) <= 0) and 0 < probs.sum() <= 1 + 1e-6
    dead = rows_by_path(summary["dead_letter_outputs"])
    assert sorted(dead) == sorted(str(p) for p in bad)
    assert dead[str(bad[0])]["stage"] == "decode" and dead[str(bad[0])]["reason"] == "not a JPEG, PNG, GIF, BMP or WebP file"
    assert dead[str(bad[1])]["reason"] == "corrupt or truncated JPEG data"
    assert all(d["model"] == MODEL and d["version"] == 1 for d in dead.values())


#: What `--format F` scores without `--precision`: the OpenVINO IR is fp16 (issue 23: it asked for fp32).
DEFAULT_PRECISION = {"onnx": "fp32", "tflite": "fp32", "openvino": "fp16"}


@pytest.mark.parametrize("fmt,precision", [("onnx", None), ("tflite", None), ("tflite", "int8"),
                                           ("openvino", None)])
def test_every_format_scores_the_folder_and_agrees_with_the_savedmodel(tiny_bundle, images, tmp_path, fmt, precision):
    from serving.scoring import pipeline as scoring
    folder, good, bad = images
    reference = scoring.run(scoring.plan(str(tiny_bundle), MODEL, str(folder), str(tmp_path / "sm"), top_k=10))
    job = scoring.plan(str(tiny_bundle), MODEL, str(folder), str(tmp_path / fmt), fmt, precision, top_k=10,
                       num_shards=2)
    summary = scoring.run(job)
    assert (summary.scored, summary.dead_letter) == (len(good), len(bad))
    assert len(summary.outputs) == 2 and len(summary.dead_letter_outputs) == 2  # --num-shards 2
    ref, got = rows_by_path(reference.outputs), rows_by_path(summary.outputs)
    again = scoring.run(dataclasses.replace(job, num_shards=1))  # same prefix, fewer shards
    assert again.outputs == [f"{job.output}-00000-of-00001.jsonl"], "older shards are not this run's"
    assert sorted(got) == sorted(ref)
    for path in ref:
        (ri, rp), (gi, gp) = top_k_arrays(ref[path]["top_k"]), top_k_arrays(got[path]["top_k"])
        assert got[path]["format"] == fmt and got[path]["precision"] == (precision or DEFAULT_PRECISION[fmt])
        assert sorted(gi) == list(range(10)) and abs(gp.sum() - 1) < 0.05, path
        if job.precision == "fp32":  # fp32 artifacts answer like the SavedModel (int8, fp16: parity's own gates)
            assert gi[0] == ri[0], path
            np.testing.assert_allclose(gp[np.argsort(gi)], rp[np.argsort(ri)], atol=1e-5)


def test_a_batch_that_fails_inference_goes_to_the_dead_letter_output(tiny_bundle, images, tmp_path):
    """Beam's ONNX Runtime handler refuses 16x16 pixels for a 32x32 model: every image lands in
    the dead-letter output with ONNX Runtime's reason, and the pipeline still succeeds."""
    from serving.scoring import pipeline as scoring
    folder, good, bad = images
    job = scoring.plan(str(tiny_bundle), MODEL, str(folder), str(tmp_path / "scores"), "onnx")
    summary = scoring.run(dataclasses.replace(job, input_size=16))
    assert (summary.scored, summary.dead_letter) == (0, len(good) + len(bad))
    dead = rows_by_path(summary.dead_letter_outputs)
    failed = [d for d in dead.values() if d["stage"] == "inference"]
    assert len(failed) == len(good)
    assert all("inference failed" in d["reason"] and "invalid dimensions" in d["reason"].lower() for d in failed)
    assert rows_by_path(summary.outputs) == {}


def test_output_folder_means_prefix_scores_and_a_glob_selects_files(tiny_bundle, images, tmp_path):
    from serving.scoring import pipeline as scoring
    folder, good, _ = images
    out = tmp_path / "results"
    out.mkdir()
    job = scoring.plan(str(tiny_bundle), MODEL, str(folder / "*.png"), str(out), "tflite")
    assert job.output == str(out / "scores") and job.files_matched == 3
    summary = scoring.run(job)
    assert sorted(rows_by_path(summary.outputs)) == sorted(str(p) for p in good if p.parent == folder
                                                          and p.suffix == ".png")
    assert summary.dead_letter == 0


@pytest.mark.parametrize("kwargs,error,message", [
    ({"inputs": "{folder}/*.webp"}, UsageError, "matches no file"),
    ({"model": "nope"}, UsageError, "unknown model 'nope': bundle {bundle} has tiny"),
    ({"fmt": "torchscript"}, UsageError, "unknown format 'torchscript'; choose one of: " + ", ".join(FORMATS)),
    ({"fmt": "onnx", "precision": "int8"}, UsageError,
     "has no onnx int8 artifact of 'tiny' (onnx precisions there: fp32)"),
    ({"output": "{file}/scores"}, UsageError, "cannot write there"),
    ({"bundle": "{folder}"}, BundleError, "manifest.json"),
])
def test_bad_input_is_one_clear_error(tiny_bundle, images, tmp_path, kwargs, error, message):
    from serving.scoring import pipeline as scoring
    folder, good, _ = images
    subst = {"folder": str(folder), "file": str(good[0]), "bundle": str(tiny_bundle)}
    args = {"bundle": str(tiny_bundle), "model": MODEL, "inputs": str(folder), "output": str(tmp_path / "s"),
            **{k: v.format(**subst) if isinstance(v, str) else v for k, v in kwargs.items()}}
    with pytest.raises(error) as e:
        scoring.plan(**args)
    assert message.format(**subst) in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("extra,message,fresh_process", [
    (["--runner", "NoSuchRunner"], "--runner NoSuchRunner: Unexpected pipeline runner: NoSuchRunner", False),
    (["--input", "/nonexistent/*.jpg"], "--input /nonexistent/*.jpg matches no file", False),
    # in a fresh process, as a user runs it: Beam's own logging must not add lines to the error
    (["--bogus_option=1"], "unknown option(s) --bogus_option", True),
])
def test_cli_errors_are_one_line_exit_2(tiny_bundle, images, tmp_path, extra, message, fresh_process):
    folder, _, _ = images
    args = ["score", str(tiny_bundle), "--model", MODEL, "--input", str(folder), "--output", str(tmp_path / "s")]
    if extra[0] == "--input":
        args[args.index("--input") + 1] = extra[1]
        extra = []
    r = (run_cli if fresh_process else run_main)(*args, *extra)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {message}") and r.stderr.count("\n") == 1, r.stderr
    assert not list(tmp_path.iterdir())


def test_bad_options_are_said_before_tensorflow_is_imported(tiny_bundle, images, tmp_path):
    """A bad Beam option or --input costs no TensorFlow import (~5 s): score imports it only once
    the job is planned (export.cli.app TENSORFLOW_AFTER_CHECKS)."""
    import subprocess
    import sys

    from tests.helpers import ROOT
    folder, _, _ = images
    code = ("import sys\nfrom export.cli.app import main\n"
            "args = ['score', sys.argv[1], '--model', sys.argv[2], '--input', sys.argv[3], '--output', sys.argv[4]]\n"
            "rcs = [main(args + ['--bogus_option=1']), main(args[:5] + ['/nonexistent/*.jpg'] + args[6:])]\n"
            "print('RCS', rcs, 'TENSORFLOW', 'tensorflow' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_bundle), MODEL, str(folder), str(tmp_path / "s")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "RCS [2, 2] TENSORFLOW False" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert not list(tmp_path.iterdir())


def test_other_commands_still_refuse_unknown_arguments():
    r = run_main("variants", "--runner=DirectRunner")
    assert r.returncode == 2 and "unrecognized arguments: --runner=DirectRunner" in r.stderr
