"""The accuracy gate without a model: thresholds, the paired drop and its ties, the intervals, the
eval and calibration trees' bad input by message, and the config keys."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from export.core.errors import DataError, UsageError
from export.quality import accuracy
from export.training import labeled_sets

pytestmark = pytest.mark.unit

NAMES = ["cat", "dog"]


def _tree(root, counts: dict[str, int], size: int = 8):
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _logits(classes: list[int], margin: float = 5.0) -> np.ndarray:
    out = np.zeros((len(classes), 2), np.float32)
    out[np.arange(len(classes)), classes] = margin
    return out


def test_thresholds_default_config_and_flag():
    assert accuracy.parse_max_drop(None) == {"fp32": 0.0, "fp16": 0.5, "dynamic": 1.0, "int8": 2.0}
    assert accuracy.parse_max_drop(["int8=5", "fp16 = 1.5"])["int8"] == 5.0
    cfg = accuracy.max_drop_from_table({"int8": 3, "fp32": 0.5}, "v.toml")
    assert cfg["int8"] == 3.0 and cfg["fp32"] == 0.5 and cfg["dynamic"] == 1.0
    assert accuracy.parse_max_drop(["int8=1"], base=cfg) == {**cfg, "int8": 1.0}


@pytest.mark.parametrize("item, message", [
    ("int8", "--max-accuracy-drop 'int8': write PRECISION=POINTS, e.g. int8=2"),
    ("int8=two", "--max-accuracy-drop 'int8=two': 'two' is not a number of accuracy points"),
    ("int4=2", "--max-accuracy-drop 'int4=2': unknown precision 'int4'; choose from fp32, fp16, dynamic, int8"),
    ("int8=-1", "--max-accuracy-drop 'int8=-1': '-1' must be between 0 and 100 accuracy points"),
])
def test_a_threshold_that_does_not_parse(item, message):
    with pytest.raises(UsageError) as e:
        accuracy.parse_max_drop([item])
    assert str(e.value).startswith(message)


def test_config_threshold_errors_name_the_file_and_key():
    with pytest.raises(UsageError, match=r"^v.toml: max_accuracy_drop.int8: 'x' is not a number"):
        accuracy.max_drop_from_table({"int8": "x"}, "v.toml")
    with pytest.raises(UsageError, match=r"^v.toml: max_accuracy_drop must be a table"):
        accuracy.max_drop_from_table(2, "v.toml")
    with pytest.raises(UsageError, match=r"on_accuracy_fail must be \"fail\" .* or \"drop\" .*, got 'skip'"):
        accuracy.check_on_fail("skip", "v.toml")


def test_the_drop_is_paired_and_ties_are_not_charged():
    labels = np.array([0] * 20 + [1] * 20)
    ref = _logits(list(labels))
    ref[0] = [0.0004, 0.0]        # a tie the reference happens to get right
    got = ref.copy()
    got[0] = [0.0, 0.0004]        # flipped to wrong by fp32 summation noise: not charged
    r = accuracy.judge("v/onnx_fp32", "v/onnx_fp32", "v", "onnx", "fp32", got, ref, labels, NAMES,
                       accuracy.DEFAULT_MAX_DROP)
    assert r.status == "passed" and r.drop_points == 0 and r.ties == 1 and r.flips_to_wrong == 1
    assert r.scored.accuracy == 0.975 and r.reference_accuracy == 1.0 and r.agreement == 0.975
    got[5] = [0.0, 5.0]           # a decided image flipped: 2.5 points, over fp32's 0
    r = accuracy.judge("v/onnx_fp32", "v/onnx_fp32", "v", "onnx", "fp32", got, ref, labels, NAMES,
                       accuracy.DEFAULT_MAX_DROP)
    assert r.status == "failed" and r.drop_points == 2.5
    assert r.failure == ("accuracy 0.950 is 2.5 points below the reference's 1.000 on 40 eval images (2 flipped to "
                         "wrong, 0 to right, counting those decided by more than 0.001 logits); fp32 may lose at most 0")
    r = accuracy.judge("v/onnx_int8", "v/onnx_int8", "v", "onnx", "int8", got, ref, labels, NAMES,
                       accuracy.DEFAULT_MAX_DROP)
    assert r.status == "failed" and r.max_drop == 2.0, "2.5 points is over int8's 2 too"
    assert r.scored.per_class["cat"].correct == 18 and r.scored.per_class["dog"].accuracy == 1.0


def test_flips_within_the_precisions_noise_are_not_charged():
    """One borderline image of 40 is 2.5 points: over int8's 2, but inside int8's measured noise."""
    from export.quality.parity import TOLERANCES
    assert accuracy.NOISE_MARGIN == {p: TOLERANCES[p].top1_margin for p in ("fp32", "fp16", "dynamic", "int8")}
    labels = np.array([0] * 20 + [1] * 20)
    ref = _logits(list(labels))
    ref[3] = [0.4, 0.0]                              # decided by 0.4 logits: within int8 1.0 and dynamic 0.5, not fp16 0.2
    got = ref.copy()
    got[3] = [0.0, 0.4]
    for precision, status in (("int8", "passed"), ("dynamic", "passed"), ("fp16", "failed"), ("fp32", "failed")):
        r = accuracy.judge("k", "k", "v", "tflite", precision, got, ref, labels, NAMES, accuracy.DEFAULT_MAX_DROP)
        assert (r.status, r.flips_to_wrong) == (status, 1), precision
        assert r.ties == (1 if status == "passed" else 0) and r.scored.accuracy == 0.975


def test_int8_threshold_and_flips_back():
    labels = np.array([0] * 50 + [1] * 50)
    ref = _logits(list(labels))
    got = ref.copy()
    got[:3] = [0.0, 5.0]                            # 3 to wrong
    r = accuracy.judge("k", "k", "v", "tflite", "int8", got, ref, labels, NAMES, accuracy.DEFAULT_MAX_DROP)
    assert r.status == "failed" and r.drop_points == 3.0
    ref[60] = [5.0, 0.0]                            # the reference wrong on one, the artifact right: +1
    r = accuracy.judge("k", "k", "v", "tflite", "int8", got, ref, labels, NAMES, accuracy.DEFAULT_MAX_DROP)
    assert r.status == "passed" and r.drop_points == 2.0 and r.flips_to_right == 1


def test_intervals_say_how_noisy_a_small_eval_set_is():
    lo, hi = accuracy.wilson(38, 40)
    assert 0.82 < lo < 0.84 and 0.98 < hi < 0.99
    lo, hi = accuracy.paired_drop_interval(0, 0, 40)
    assert lo == -hi and 9 < hi < 11, "no disagreement on 40 images still leaves ~10 points either way"
    lo, hi = accuracy.paired_drop_interval(20, 0, 1000)
    assert 0 < lo < 2 < hi < 4, "20 of 1000 flipped to wrong, none back: a real drop of ~2 points"


def test_eval_tree_must_match_the_labels_by_name(tmp_path):
    root = _tree(tmp_path / "eval", {"cat": 2, "dog": 2, "cow": 1})
    with pytest.raises(DataError) as e:
        labeled_sets.eval_set(root, 8, ["cat", "dog", "fox"])
    assert str(e.value) == (f"--eval-data {root}: its classes don't match the model's labels (no folder for label(s) "
                            "fox; folder(s) cow not among the labels); give one folder per label: cat, dog, fox")
    s = labeled_sets.eval_set(root, 8, ["dog", "cow", "cat"])  # any order: labels follow the model's
    assert s.class_names == ["dog", "cow", "cat"] and s.labels.tolist() == [2, 2, 1, 0, 0]
    assert s.record["images_per_class"] == {"dog": 2, "cow": 1, "cat": 2} and len(s.record["sha256"]) == 64


def test_empty_and_unreadable_trees(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"^--eval-data .*empty has no class folders; put each class's images"):
        labeled_sets.eval_set(tmp_path / "empty", 8, NAMES)
    with pytest.raises(DataError, match=r"^--calibration-data .*empty has no class folders"):
        labeled_sets.calibration_set(tmp_path / "empty", 8)
    root = _tree(tmp_path / "eval", {"cat": 3, "dog": 3})
    (root / "dog" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as e:
        labeled_sets.eval_set(root, 8, NAMES)
    assert str(e.value) == f"--eval-data {root}: 1 image file(s) cannot be read: dog/bad.jpg; fix or remove them"
    with pytest.raises(DataError, match=r"^--calibration-data .*: 1 image file\(s\) cannot be read: dog/bad.jpg"):
        labeled_sets.calibration_set(root, 8)


def test_calibration_sample_is_seeded_stratified_and_recorded(tmp_path):
    root = _tree(tmp_path / "cal", {"a": 30, "b": 10})
    s = labeled_sets.calibration_set(root, 8, count=8, seed=3)
    assert s.record["count"] == 8 and s.record["images_per_class"] == {"a": 6, "b": 2}
    assert s.images.shape == (8, 8, 8, 3) and s.record["path"] == str(root) and s.record["seed"] == 3
    again = labeled_sets.calibration_set(root, 8, count=8, seed=3)
    assert again.files == s.files and again.record["sha256"] == s.record["sha256"]
    assert labeled_sets.calibration_set(root, 8, count=8, seed=4).record["sha256"] != s.record["sha256"]


def test_config_gate_keys(tmp_path):
    from export.pipeline.config import load_config
    cfg = tmp_path / "v.toml"
    cfg.write_text('max_accuracy_drop = { int8 = 3 }\non_accuracy_fail = "drop"\ncalibration_count = 50\n'
                   '[[variants]]\nname = "dense"\ncalibration = "demo:digits"\neval_data = "held-out"\n')
    c = load_config(cfg)
    assert c["gate"] == {"max_drop": {"fp32": 0.0, "fp16": 0.5, "dynamic": 1.0, "int8": 3.0}, "on_fail": "drop",
                         "calibration_count": 50}
    from export.pipeline.gate import variant_gate
    gate = variant_gate(c, c["variants"][0], tmp_path / "runs")
    assert gate is not None
    assert gate["calibration"] == "demo:digits" and gate["eval_data"] == "held-out" and gate["calibration_count"] == 50
    for text, message in [('on_accuracy_fail = "skip"', "on_accuracy_fail must be"),
                          ("max_accuracy_drop = { int9 = 1 }", "max_accuracy_drop.int9: unknown precision 'int9'"),
                          ("calibration_count = 0", "calibration_count must be an integer >= 1, got 0")]:
        cfg.write_text(text + '\n[[variants]]\nname = "dense"\n')
        with pytest.raises(UsageError, match=message):
            load_config(cfg)
    cfg.write_text('[[variants]]\nname = "dense"\neval_data = "demo:digits"\n')
    with pytest.raises(UsageError, match=r"eval_data must be a folder .*, not 'demo:digits'"):
        load_config(cfg)


def test_on_accuracy_fail_drop_leaves_the_artifact_out_and_says_why(tmp_path):
    from export.formats import Artifact
    from export.pipeline.gate import drop_failed, manifest_summary, readme_section
    from export.quality.report import ArtifactResult, ParityReport, Status
    labels = np.array([0] * 10 + [1] * 10)
    ref = _logits(list(labels))
    bad = ref.copy()
    bad[:4] = [0.0, 5.0]
    results = [accuracy.judge(k, k, "v", fmt, "int8", logits, ref, labels, NAMES, accuracy.DEFAULT_MAX_DROP)
               for k, fmt, logits in (("v/tflite_int8", "tflite", bad), ("v/onnx_int8", "onnx", ref))]
    section = accuracy.AccuracySection("v", {"count": 20, "source": "test", "path": "x"},
                                       accuracy.score(ref, labels, NAMES), accuracy.DEFAULT_MAX_DROP, results)
    rows = [ArtifactResult(k, "v", f, "int8", p, "b", "CPU", "CPU", "int8", Status.PASSED)
            for k, f, p in (("v/tflite_int8", "tflite", "tflite/v/model_int8.tflite"),
                            ("v/onnx_int8", "onnx", "onnx/v/model_int8.onnx"))]
    report = ParityReport({}, [], rows, accuracy=[section])
    assert not report and report.failures() == [f"v/tflite_int8: {results[0].failure}"]
    arts = [Artifact(r.path, r.format, "int8", "v", "0", 0, [], [], {}, 0.0) for r in rows]
    for a in arts:
        (tmp_path / a.path).parent.mkdir(parents=True)
        (tmp_path / a.path).write_bytes(b"model")
    kept, dropped = drop_failed(report, arts, tmp_path)
    assert [a.key for a in kept] == ["v/onnx_int8"] and [r.key for r in report.results] == ["v/onnx_int8"]
    assert not (tmp_path / "tflite/v/model_int8.tflite").exists() and (tmp_path / "onnx/v/model_int8.onnx").exists()
    assert dropped == [{"artifact": "v/tflite_int8", "reason": results[0].failure, "accuracy": 0.8,
                        "reference_accuracy": 1.0, "drop_points": 20.0, "max_drop": 2.0}]
    assert report, "what is left passes; the dropped row stays in the accuracy table, marked"
    assert section.results[0].status == "dropped" and "| **dropped** |" in report.to_markdown()
    assert manifest_summary(report, dropped)["dropped"] == dropped
    assert "`v/tflite_int8`: accuracy 0.800 is 20 points below" in readme_section(dropped)
    again = ParityReport.from_dict(report.to_dict())
    assert again.accuracy[0].results[0].status == "dropped" and again.to_markdown() == report.to_markdown()


def test_models_config_lists_only_the_variants_whose_savedmodel_stayed():
    """A SavedModel the gate dropped (on_accuracy_fail = "drop") leaves models.config with it: TF
    Serving would otherwise fail on a model without a version directory."""
    from export.deploy.tfserving import bundle_models_config, served_models
    from export.formats import Artifact
    from export.pipeline.bundle_files import served_versions
    kept = [Artifact(p, f, pr, v, "0", 0, [], [], {}, 0.0) for p, f, pr, v in (
        ("tfserving/dense/1", "savedmodel", "fp32", "dense"), ("tflite/conv/model_fp32.tflite", "tflite", "fp32", "conv"),
        ("tfserving/dropout/1", "savedmodel", "fp32", "dropout"))]  # conv's SavedModel was dropped
    versions = served_versions(["dense", "conv", "dropout"], kept, 3)
    assert versions == {"dense": [3], "dropout": [3]}
    assert [m["name"] for m in served_models(bundle_models_config(versions))] == ["dense", "dropout"]
