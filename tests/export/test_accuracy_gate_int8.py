"""The accuracy gate on real artifacts of the tiny model (ONNX Runtime, TensorFlow): int8 calibrated on
noise is caught, a perturbed weight is caught, an outlier in the calibration set is repaired by the
first remedy (Percentile calibration), and `parity --eval-data` reports every artifact's accuracy."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from export.formats import Artifact, write_index
from export.formats.quantize import quantize_int8
from export.model import samples
from export.quality import accuracy, golden
from tests.helpers import TINY_SIZE, TINY_TFLITE_LABELS, run_main

pytestmark = pytest.mark.integration


def _images(n: int, seed: int) -> np.ndarray:
    """Flat colours with pixel noise: the tiny model gives them many different classes."""
    r = np.random.default_rng(seed)
    base = r.uniform(0, 255, size=(n, 1, 1, 3))
    return np.clip(base + r.normal(0, 20, size=(n, TINY_SIZE, TINY_SIZE, 3)), 0, 255).astype(np.float32)


def _artifact(path, fmt: str = "onnx", precision: str = "int8", variant: str = "tiny") -> Artifact:
    return Artifact(str(path), fmt, precision, variant, "0" * 64, 0,
                    [{"name": "image", "dtype": "float32", "shape": [None, TINY_SIZE, TINY_SIZE, 3]}],
                    [{"name": "logits", "dtype": "float32", "shape": [None, 10]}], {}, 0.0)


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    """The tiny model with logits x100 as ONNX: its answers are the tiny model's, but decided by
    median 4 logits (instead of 0.04), as a trained head's are, so int8's 1-logit noise margin
    (export.quality.accuracy.NOISE_MARGIN) leaves most images charged."""
    import tensorflow as tf
    import tf2onnx

    from tests.helpers import tiny_model
    model = tiny_model(logit_scale=100.0)
    path = tmp_path_factory.mktemp("decided") / "model.onnx"
    spec = (tf.TensorSpec((None, TINY_SIZE, TINY_SIZE, 3), tf.float32, name="image"),)
    fn = tf.function(lambda image: model(image, training=False), input_signature=spec)
    tf2onnx.convert.from_function(fn, input_signature=spec, output_path=str(path), opset=17)
    return path


@pytest.fixture(scope="module")
def gate_data(decided):
    """Eval images labeled by the reference (so it scores 1.0), its logits, and a calibration set of the same kind."""
    import onnxruntime as ort
    images = _images(80, 1)
    ref = ort.InferenceSession(str(decided), providers=["CPUExecutionProvider"]).run(["logits"], {"image": images})[0]
    return images, ref.argmax(1), ref, _images(100, 2)


def _judge(path, gate_data, precision: str = "int8", max_drop=accuracy.DEFAULT_MAX_DROP) -> accuracy.AccuracyResult:
    images, labels, ref, _ = gate_data
    (r,) = accuracy.evaluate_artifacts([_artifact(path, precision=precision)], None, images, labels,
                                       TINY_TFLITE_LABELS, ref, max_drop)
    return r


def test_int8_calibrated_on_noise_is_caught(decided, gate_data, tmp_path):
    calibration = gate_data[3]
    good, noisy = tmp_path / "data.onnx", tmp_path / "noise.onnx"
    quantize_int8(decided, good, calibration)
    quantize_int8(decided, noisy, samples.noise(100, TINY_SIZE, seed=3))
    assert _judge(good, gate_data).status == "passed"
    r = _judge(noisy, gate_data)
    assert r.status == "failed" and r.drop_points > 10
    assert r.failure.startswith(f"accuracy {r.scored.accuracy:.3f} is {r.drop_points:g} points below the reference's "
                                "1.000 on 80 eval images")


def test_a_perturbed_weight_is_caught_at_fp32(decided, gate_data, tmp_path):
    import onnx
    from onnx import numpy_helper
    assert _judge(decided, gate_data, "fp32").status == "passed"
    model = onnx.load(str(decided))
    conv = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 4)
    kernel = numpy_helper.to_array(conv).copy()
    kernel[0] += np.random.default_rng(0).normal(0, 3 * np.abs(kernel).max(), kernel[0].shape)  # one filter
    conv.CopyFrom(numpy_helper.from_array(kernel.astype(np.float32), conv.name))
    onnx.save(model, str(tmp_path / "perturbed.onnx"))
    r = _judge(tmp_path / "perturbed.onnx", gate_data, "fp32")
    assert r.status == "failed" and r.flips_to_wrong > 0 and "fp32 may lose at most 0" in r.failure


def test_an_outlier_in_the_calibration_set_is_repaired_by_percentile_calibration(decided, gate_data, tmp_path):
    """One hot pixel in 101 calibration images stretches MinMax's input range ~100x; the first remedy,
    Percentile calibration, clips it, and the repair stops there. (Percentile clipping alone may flip
    an image or two of 80, so this gate allows 5 points.)"""
    from export.quality.repair_onnx import quantization_markdown, repair_onnx
    hot = np.zeros((1, TINY_SIZE, TINY_SIZE, 3), np.float32)
    hot[0, 0, 0] = 3e4
    calibration = np.concatenate([gate_data[3], hot])
    path = tmp_path / "int8.onnx"
    scheme = quantize_int8(decided, path, calibration)
    max_drop = {**accuracy.DEFAULT_MAX_DROP, "int8": 5.0}
    first = _judge(path, gate_data, max_drop=max_drop)
    assert first.status == "failed" and first.drop_points > 10

    def requantize(s):
        quantize_int8(decided, path, calibration, s)
        return _artifact(path)

    _, result, record = repair_onnx(_artifact(path), first, requantize=requantize,
                                      evaluate=lambda a: _judge(a.path, gate_data, max_drop=max_drop),
                                      fp32_path=decided,
                                      root=tmp_path, calibration=calibration, scheme=scheme)
    assert record["fired"] == "calibration Percentile" and result.status == "passed", record["tried"]
    assert result.remedy == "calibration Percentile"
    assert [t["remedy"] for t in record["tried"]] == ["calibration MinMax (default)", "calibration Percentile"]
    md = quantization_markdown({"tiny/onnx_int8": {"calibration_data": {"count": 101, "source": "test"},
                                                   "repair": record}})
    assert "Remedy that fired: **calibration Percentile**" in md and "| calibration MinMax (default) |" in md


def test_per_layer_errors_rank_the_quantized_activations(tiny, gate_data, tmp_path):
    from export.quality.repair_onnx import onnx_layer_errors
    path = tmp_path / "int8.onnx"
    quantize_int8(tiny["onnx"], path, gate_data[3])
    errors = onnx_layer_errors(tiny["onnx"], path, gate_data[3])
    assert errors and all(e["node"] for e in errors if e["tensor"] != "image")  # the graph input has no producer
    assert [e["qdq_sqnr_db"] for e in errors] == sorted(e["qdq_sqnr_db"] for e in errors)


@pytest.fixture(scope="module")
def tiny_export(tiny, gate_data, tmp_path_factory):
    """An export directory of the tiny model: SavedModel, ONNX fp32 and int8, golden files, and a
    labeled eval tree (PNG) with a folder per label."""
    from export.model.build import BuiltModel
    from export.model.variants import VariantSpec
    root = tmp_path_factory.mktemp("tiny-export")
    shutil.copytree(tiny["savedmodel"], root / "savedmodel")
    shutil.copy(tiny["onnx"], root / "model.onnx")
    quantize_int8(tiny["onnx"], root / "model_int8.onnx", gate_data[3])
    write_index(root, [_artifact(root / "savedmodel", "savedmodel", "fp32"),
                       _artifact(root / "model.onnx", "onnx", "fp32"), _artifact(root / "model_int8.onnx")])
    spec = VariantSpec(name="tiny", head=(), num_classes=10, input_size=TINY_SIZE, description="tiny")
    built = BuiltModel(tiny["model"], spec, 10, TINY_SIZE, {"source": "random:0"}, list(TINY_TFLITE_LABELS))
    golden.save(root, golden.make(built))
    images, labels = gate_data[0][:40], gate_data[1][:40]
    evaldir = root.parent / "eval"
    for c, name in enumerate(TINY_TFLITE_LABELS):
        (evaldir / name).mkdir(parents=True)
        mine = np.flatnonzero(labels == c)
        for i in mine:
            Image.fromarray(images[i].astype(np.uint8)).save(evaldir / name / f"{i}.png")
        if not len(mine):  # a class the reference never predicts here: an image it gets wrong
            Image.fromarray(images[c].astype(np.uint8)).save(evaldir / name / "other.png")
    return root, evaldir


def test_parity_eval_data_reports_every_artifact(tiny_export, tmp_path):
    root, evaldir = tiny_export
    r = run_main("parity", "--artifacts", str(root), "--eval-data", str(evaldir), "--report", str(tmp_path),
                 "--max-accuracy-drop", "int8=100")
    report = json.loads((tmp_path / "parity.json").read_text())
    (section,) = report["accuracy"]
    assert section["eval_set"]["count"] == sum(1 for _ in evaldir.rglob("*.png"))
    assert section["eval_set"]["reference"].startswith("the SavedModel")
    assert section["max_drop"]["int8"] == 100.0
    rows = {x["label"]: x for x in section["results"]}
    assert set(rows) == {"tiny/savedmodel_fp32", "tiny/onnx_fp32", "tiny/onnx_int8"}
    assert rows["tiny/onnx_fp32"]["drop_points"] == 0 and rows["tiny/onnx_fp32"]["status"] == "passed"
    assert rows["tiny/savedmodel_fp32"]["agreement"] == 1.0
    md = (tmp_path / "parity.md").read_text()
    assert "## Accuracy on labeled images (the accuracy gate)" in md and "**Small eval sets are noisy**" in md
    assert "| tiny/onnx_int8 |" in md
    assert r.returncode == (0 if report["passed"] else 1)


def test_parity_eval_data_bad_input_is_one_line(tiny_export, tmp_path):
    root, evaldir = tiny_export
    wrong = tmp_path / "wrong"
    shutil.copytree(evaldir, wrong)
    shutil.move(wrong / "kind_3", wrong / "kind_x")
    r = run_main("parity", "--artifacts", str(root), "--eval-data", str(wrong))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"error: --eval-data {wrong}: its classes don't match the model's labels (no folder "
                               "for label(s) kind_3; folder(s) kind_x not among the labels)")
    r = run_main("parity", "--artifacts", str(root), "--eval-data", str(evaldir), "--max-accuracy-drop", "int8=lots")
    assert r.returncode == 2 and r.stderr == ("error: --max-accuracy-drop 'int8=lots': 'lots' is not a number of "
                                              "accuracy points; write e.g. int8=2 (points, >= 0)\n")


def test_the_gate_rides_on_the_parity_runners_and_skips_a_bit_close_fp32(decided, gate_data, tmp_path):
    """make export's converter tasks: the eval set runs on the runner the parity check loaded
    (gate_stage.Measured), an fp32 bit-close to the reference is not run on it again (and the report
    says so), and what was measured judges exactly as a fresh evaluation does."""
    import onnxruntime as ort

    from export.pipeline import gate_stage
    from export.quality import parity
    images, labels, ref, calibration = gate_data
    int8 = tmp_path / "int8.onnx"
    quantize_int8(decided, int8, calibration)
    arts = [_artifact(decided, precision="fp32"), _artifact(int8)]
    inputs = _images(8, 5)
    outputs = dict(zip(("logits", "probabilities"), ort.InferenceSession(str(decided)).run(
        ["logits", "probabilities"], {"image": inputs}), strict=True))
    reference = golden.Golden("tiny", inputs, [f"x{i}" for i in range(8)], outputs)
    work = tmp_path / "work"
    work.mkdir()
    np.savez(work / "gate.npz", eval_images=images, eval_labels=labels, reference_logits=ref)
    prepared = {"eval_set": {"count": len(images)}, "class_names": TINY_TFLITE_LABELS,
                "max_drop": dict(accuracy.DEFAULT_MAX_DROP)}
    measured = gate_stage.Measured(prepared, work)
    _, rows = parity.check_artifacts(reference, arts, None, source="golden", while_loaded=measured.take)
    assert [r.status for r in rows if r.device_requested == "CPU"] == ["passed", "passed"]
    assert list(measured.bit_close) == [("tiny/onnx_fp32", "0" * 64)] and measured.bit_close[
        "tiny/onnx_fp32", "0" * 64] <= accuracy.BIT_CLOSE_LOGITS
    assert list(measured.logits) == [("tiny/onnx_int8", "0" * 64)] and measured.seconds > 0

    results, _ = gate_stage.judge(arts, None, prepared, 1, work, measured=measured)
    fp32, q = (accuracy.result_from_dict(r) for r in results)
    assert fp32.status == "passed" and fp32.agreement == 1.0 and fp32.note.startswith("not re-evaluated: parity max ")
    fresh = _judge(int8, gate_data)
    assert (q.agreement, q.drop_points, q.flips_to_wrong, q.note) == (fresh.agreement, fresh.drop_points,
                                                                     fresh.flips_to_wrong, "")
    section = accuracy.AccuracySection("tiny", {"count": len(images)}, accuracy.score(ref, labels, TINY_TFLITE_LABELS),
                                       prepared["max_drop"], [fp32, q])
    md = "\n".join(accuracy.render_accuracy([section]))
    assert "Not run on the eval set again: `tiny/onnx_fp32` (not re-evaluated: parity max |logit error|" in md
