"""The TFLite int8 repair on real files of the tiny model: an outlier in the calibration set
stretches the first layers' ranges, the full-integer artifact fails the accuracy gate, and keeping
the most sensitive layers (by tf.lite.experimental.QuantizationDebugger) in float repairs it, with
the uint8 raw-pixel input, uint8 outputs and metadata intact."""
from __future__ import annotations

import numpy as np
import pytest

from export.quality import accuracy
from tests.helpers import TINY_CLASSES, TINY_SIZE, TINY_TFLITE_LABELS

pytestmark = pytest.mark.integration


def _images(n: int, seed: int) -> np.ndarray:
    """Flat colours with pixel noise (integer pixels: the uint8 input takes them exactly)."""
    r = np.random.default_rng(seed)
    base = r.uniform(0, 255, size=(n, 1, 1, 3))
    return np.round(np.clip(base + r.normal(0, 20, size=(n, TINY_SIZE, TINY_SIZE, 3)), 0, 255)).astype(np.float32)


@pytest.fixture(scope="module")
def decided():
    """The tiny model with logits x100 (decided by a margin, as a trained head's are), its eval set
    labeled by its own answers, and its logits."""
    from export.model.build import BuiltModel
    from export.model.variants import VariantSpec
    from tests.helpers import tiny_model
    model = tiny_model(logit_scale=100.0)
    spec = VariantSpec(name="tiny", head=(), num_classes=TINY_CLASSES, input_size=TINY_SIZE, description="tiny")
    built = BuiltModel(model, spec, TINY_CLASSES, TINY_SIZE, {"source": "random:0"}, list(TINY_TFLITE_LABELS))
    images = _images(80, 1)
    ref = np.asarray(model.predict(images, verbose=0)["logits"])
    return built, images, ref


def _judge(art, decided) -> accuracy.AccuracyResult:
    _, images, ref = decided
    (r,) = accuracy.evaluate_artifacts([art], None, images, ref.argmax(1), TINY_TFLITE_LABELS, ref,
                                       accuracy.DEFAULT_MAX_DROP)
    return r


def test_an_outlier_in_the_calibration_set_is_repaired_by_layers_kept_in_float(decided, tmp_path):
    """One hot pixel in 101 calibration images stretches the ranges of the conv and the pooling that
    follows it; int8 fails by > 10 points; the gate (export.pipeline.gate_stage.judge, with the repair make
    export wires in) ranks those layers worst with the debugger, and keeping them in float passes
    the default 2-point gate."""
    from functools import partial

    from export.deploy.tflite_metadata import read_metadata
    from export.formats import Artifact, tflite
    from export.pipeline import gate_stage
    from export.quality import repair_tflite as tflite_repair
    from export.quality.repair_onnx import quantization_markdown
    built, images, ref = decided
    hot = np.zeros((1, TINY_SIZE, TINY_SIZE, 3), np.float32)
    hot[0, 0, 0] = 3e4
    calibration = {"calibration": np.concatenate([_images(100, 2), hot]),
                   "calibration_record": {"count": 101, "source": "test", "path": "-", "sha256": "0"}}
    art = tflite.export(built, tmp_path, "int8", **calibration).relative_to(tmp_path)
    first = _judge(Artifact.from_dict({**art.to_dict(), "path": str(tmp_path / art.path)}), decided)
    assert first.status == "failed" and first.drop_points > 10

    work = tmp_path / "work"
    work.mkdir()
    np.savez(gate_stage._scratch(work), eval_images=images, eval_labels=ref.argmax(1), reference_logits=ref)
    prepared = {"eval_set": {"count": len(images)}, "class_names": TINY_TFLITE_LABELS,
                "max_drop": accuracy.DEFAULT_MAX_DROP}
    repair = partial(tflite_repair.repair_exported, built=built, root=tmp_path,
                     export_options={"saved_model_dir": None}, calibration=calibration)
    artifacts = [art]
    results, quant = gate_stage.judge(artifacts, tmp_path, prepared, 1, work, repair)
    (result,), (art,) = results, artifacts
    record = quant[art.key]["repair"]
    assert result["status"] == "passed" and result["remedy"] == record["fired"], record["tried"]
    assert record["fired"] == "2 most sensitive layer(s) kept in float"  # 1 was not enough; 4 capped at the 2 inner ones
    assert [t["passed"] for t in record["tried"]] == [False, False, True]
    assert art.details["repair"]["fired"] == record["fired"] and "layer_errors" not in art.details["repair"]
    assert art.details["keep_float"] == record["excluded"] and len(record["excluded"]) == 2
    assert quant[art.key]["scheme"].endswith("; 2 layer(s) kept in float") and quant[art.key]["gate"] == "passed"
    errors = record["layer_errors"]
    assert [e["rmse_scale"] for e in errors] == sorted((e["rmse_scale"] for e in errors), reverse=True)
    assert {e["op"] for e in errors if not e["output"]} >= {"CONV_2D", "MEAN"}
    assert {e["op"] for e in errors if e["output"]} == {"FULLY_CONNECTED", "SOFTMAX"}
    # The contract of the int8 file stands: uint8 raw pixels in, uint8 out, metadata inside.
    (image,) = art.inputs
    assert image["name"] == "image" and image["dtype"] == "uint8"
    assert image["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert {o["name"]: o["dtype"] for o in art.outputs} == {"logits": "uint8", "probabilities": "uint8"}
    model = (tmp_path / art.path).read_bytes()
    assert read_metadata(model).input_name == "image" and "DEQUANTIZE" in tflite.op_names(model)
    md = quantization_markdown(quant)
    assert "Remedy that fired: **2 most sensitive layer(s) kept in float**" in md
    assert "| calibration MinMax (TFLite converter default) | " in md and "| rmse/scale |" in md


def test_keep_float_naming_no_tensor_leaves_the_plain_int8(decided, tmp_path):
    """A denylisted name that matches nothing leaves every layer quantized (mlir_quantize ignores it):
    the file is then the plain int8 one, with the same contract."""
    from export.formats import tflite
    built = decided[0]
    art = tflite.export(built, tmp_path, "int8", calibration=_images(20, 3), keep_float=("no/such/tensor",))
    assert art.inputs[0]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert "DEQUANTIZE" not in tflite.op_names(open(art.path, "rb").read())
