"""The parity suite: every variant x every artifact against the Keras reference (artifacts
exported once per session), a corrupted artifact, degenerate references, the report, the CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY_SIZE, VARIANTS, has_bf16, run_cli, run_main, tiny_model

ARTIFACTS = ("savedmodel_fp32", "tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8",
             "onnx_fp32", "onnx_int8", "openvino_fp16", "openvino_int8")
GPU_CAPABLE = ("savedmodel_fp32", "onnx_fp32", "onnx_int8")


def _has_gpu(fmt: str = "any") -> bool:
    """Whether the runtime for `fmt` (savedmodel: TensorFlow, onnx: ONNX Runtime) sees a GPU."""
    import onnxruntime as ort
    import tensorflow as tf
    tf_gpu = bool(tf.config.list_physical_devices("GPU"))
    ort_gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    return {"savedmodel": tf_gpu, "onnx": ort_gpu}.get(fmt, tf_gpu or ort_gpu)


@pytest.mark.e2e
@pytest.mark.parametrize("artifact", ARTIFACTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_artifact_matches_reference(variant_parity, variant, artifact):
    _, _, report = variant_parity(variant)
    rows = [r for r in report.results if r.key == f"{variant}/{artifact}"]
    cpu = [r for r in rows if r.device_requested == "CPU" and r.precision_hint in ("", "f32")]
    assert len(cpu) == 1, [r.label for r in report.results]
    row = cpu[0]
    assert row.status == "passed", row.failures
    seen = {(m.output, m.batch_size) for m in row.metrics}
    assert seen == {(o, b) for o in ("logits", "probabilities") for b in (1, 4)}
    assert all(m.nonfinite == 0 for m in row.metrics)
    assert set(row.mean_ms) == {"1", "4"}


@pytest.mark.e2e
@pytest.mark.parametrize("variant", VARIANTS)
def test_openvino_bf16_row_passes_on_bf16_units_and_is_skipped_elsewhere(variant_parity, variant):
    _, _, report = variant_parity(variant)
    rows = {r.precision_hint: r for r in report.results if r.key == f"{variant}/openvino_fp16"}
    assert set(rows) == {"f32", "bf16"}
    assert rows["f32"].tolerance == "fp16" and rows["bf16"].tolerance == "openvino-bf16"
    bf16 = rows["bf16"]
    assert bf16.label == f"{variant}/openvino_fp16 @ bf16"
    if has_bf16():
        assert bf16.status == "passed" and bf16.device == "CPU", bf16.failures
        worst = bf16.worst("logits", "max_abs")
        assert worst > rows["f32"].worst("logits", "max_abs"), "bf16 row as exact as f32: bf16 not used"
    else:
        assert (bf16.status, bf16.reason, bf16.metrics) == ("skipped", "skipped: no bf16 hardware", [])


@pytest.mark.e2e
@pytest.mark.parametrize("artifact", GPU_CAPABLE)
@pytest.mark.parametrize("variant", VARIANTS)
def test_gpu_row_is_never_a_silent_pass(variant_parity, variant, artifact):
    _, _, report = variant_parity(variant)
    gpu = [r for r in report.results if r.key == f"{variant}/{artifact}" and r.device_requested == "GPU:0"]
    assert len(gpu) == 1
    if _has_gpu(artifact.split("_")[0]):
        assert gpu[0].status == "passed" and gpu[0].device == "GPU:0", gpu[0].failures
    else:
        assert gpu[0].status == "skipped" and gpu[0].reason == "skipped: no GPU"
        assert not gpu[0].metrics


@pytest.mark.e2e
@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_is_informative_and_verdict_passes(variant_parity, variant):
    _, ref, report = variant_parity(variant)
    (info,) = report.references
    assert info.ok, info.failures
    assert len(set(info.photo_top1_classes)) > 1
    assert info.inputs == ref.names and len(ref.names) == 16
    assert {"all_black", "all_white", "noise_0_0"} <= set(ref.names)
    assert bool(report), report.failures()
    # every row at OpenVINO's bf16 hint (the fp16 IR's and the int8 IR's) is skipped on a CPU without bf16 units
    bf16 = [r for r in report.results if r.precision_hint == "bf16"]
    assert sorted(r.key for r in bf16) == [f"{variant}/openvino_fp16", f"{variant}/openvino_int8"]
    if not has_bf16():
        assert {(r.status, r.reason) for r in bf16} == {("skipped", "skipped: no bf16 hardware")}
    assert report.counts()["skipped"] == sum(not _has_gpu(a.split("_")[0]) for a in GPU_CAPABLE) + \
        (0 if has_bf16() else len(bf16))


@pytest.mark.e2e
def test_report_round_trip_and_files(variant_parity, tmp_path):
    from export.quality.parity import FORMAT_VERSION, ParityReport
    _, _, report = variant_parity("dense")
    json_path, md_path = report.save(tmp_path)
    doc = json.loads(json_path.read_text())
    assert doc["format_version"] == FORMAT_VERSION and doc["passed"] is True
    back = ParityReport.from_dict(doc)
    assert back == report
    assert back.to_dict() == doc
    md = md_path.read_text()
    assert "**Verdict: PASS**" in md
    assert "| dense/tflite_int8 | litert |" in md and "| dense/onnx_fp32 | onnxruntime | CPU |" in md
    assert "| dense/openvino_fp16 @ f32 | openvino | CPU | fp16 |" in md
    assert "| dense/openvino_fp16 @ bf16 | openvino | CPU | openvino-bf16 |" in md
    assert ("**skipped: no bf16 hardware**" in md) != has_bf16()
    for key in ("cpu", "cpu_features", "tensorflow", "onnxruntime", "ai-edge-litert", "openvino", "runner devices"):
        assert f"| {key} |" in md
    if not _has_gpu("savedmodel") and not _has_gpu("onnx"):
        assert md.count("**skipped: no GPU**") == len(GPU_CAPABLE)


@pytest.mark.unit
def test_report_from_another_format_version_is_refused():
    from export.core.errors import RunnerError
    from export.quality.parity import ParityReport
    with pytest.raises(RunnerError, match="format_version 99 is not 1"):
        ParityReport.from_dict({"format_version": 99})


@pytest.mark.unit
def test_tolerance_table_covers_every_precision():
    from export.core.registry import FORMATS
    from export.quality.parity import TOLERANCES
    extra = {"fp32-gpu", "openvino-bf16", "int8-data"}
    assert {p for spec in FORMATS.values() for p in spec.precisions} | extra == set(TOLERANCES)
    assert all(t.source for t in TOLERANCES.values())
    assert TOLERANCES["fp32"].logits_atol < TOLERANCES["fp16"].logits_atol < TOLERANCES["fp32-gpu"].logits_atol


@pytest.mark.unit
def test_top_k_depends_on_the_number_of_classes():
    from export.quality.parity import top_k
    assert (top_k(10), top_k(5), top_k(3), top_k(2)) == (5, 4, 2, None)


# -- a corrupted artifact ----------------------------------------------------------------------
def _perturbed_onnx(src: Path, dst: Path) -> str:
    """Copy of `src` with ONE weight of the logits kernel changed; returns the initializer name."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(src))
    init = next(i for i in model.graph.initializer if len(i.dims) == 2 and i.dims[0] == 2048)
    w = numpy_helper.to_array(init).copy()
    i, j = np.unravel_index(np.abs(w).argmax(), w.shape)
    w[i, j] *= -3.0
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return init.name


def _bundle_dir(tmp_path: Path, out: Path, variant: str, artifacts: list, golden: bool = True) -> Path:
    """A directory with artifacts.json listing `artifacts` and (optionally) the golden files."""
    from export.formats import write_index
    d = tmp_path / "bundle"
    d.mkdir(exist_ok=True)
    write_index(d, artifacts)
    if golden:
        shutil.copytree(out / "golden" / variant, d / "golden" / variant)
    return d


@pytest.mark.e2e
def test_corrupted_artifact_fails_and_is_named(variant_parity, exported, tmp_path):
    from export.formats import Artifact
    from export.quality import golden, parity
    out, _, _ = variant_parity("dense")
    _, _, arts = exported("dense")
    good = arts["dense/onnx_fp32"]
    bad_path = tmp_path / "bundle" / "onnx" / "dense" / "model.onnx"
    _perturbed_onnx(Path(good.path), bad_path)
    bad = Artifact.from_dict({**good.to_dict(), "path": str(bad_path)})
    d = _bundle_dir(tmp_path, out, "dense", [bad, arts["dense/tflite_fp32"]])

    report = parity.run_suite(d, [bad, arts["dense/tflite_fp32"]], {"dense": golden.load(d, "dense")})
    assert not report
    assert report.counts()["failed"] == 1
    failures = report.failures()
    assert any(f.startswith("dense/onnx_fp32: batch 1: logits: ") and "values off by more than 0.0005 + "
               "0.0001*|ref|; worst |diff|" in f for f in failures), failures
    assert all(f.startswith("dense/onnx_fp32") for f in failures), failures

    r = run_cli("parity", "--artifacts", str(d), "--report", str(tmp_path / "report"))
    assert r.returncode == 1, r.stderr
    assert "**Verdict: FAIL**" in r.stdout
    assert "| dense/onnx_fp32 | onnxruntime | CPU | fp32 |" in r.stdout and "**FAIL** |" in r.stdout
    assert "- dense/onnx_fp32: batch 1: logits: " in r.stdout and "values off by more than" in r.stdout
    assert json.loads((tmp_path / "report" / "parity.json").read_text())["passed"] is False


# -- degenerate references ---------------------------------------------------------------------
def _tiny_suite(tmp_path: Path, model):
    """The parity suite on a tiny model's own .tflite against the model itself."""
    from export.formats import Artifact
    from export.model import samples
    from export.quality import golden, parity
    from export.runtimes.keras import KerasRunner
    inputs, names = samples.parity_inputs(TINY_SIZE)
    with KerasRunner(model) as r:
        outputs = parity.run_batches(r, inputs, 4)
    model.export(str(tmp_path / "model.tflite"), format="litert", verbose=False)
    art = Artifact(path="model.tflite", format="tflite", precision="fp32", variant="tiny", sha256="", bytes=0,
                   inputs=[], outputs=[], tool_versions={}, seconds=0.0)
    ref = golden.Golden("tiny", inputs, names, outputs, {"device": "CPU"})
    return parity.run_suite(tmp_path, [art], {"tiny": ref})


@pytest.mark.integration
def test_saturated_reference_is_a_failure(tmp_path):
    report = _tiny_suite(tmp_path, tiny_model(logit_scale=300.0))
    assert report.results[0].status == "passed"  # the artifact agrees with the reference ...
    assert not report  # ... but a saturated reference proves nothing
    (ref,) = report.references
    assert ref.saturated_photos > 6
    assert any("saturated reference: softmax max > 0.99 on" in f for f in report.failures()), report.failures()
    assert "Reference check: **FAIL**" in report.to_markdown()


@pytest.mark.unit
def test_a_trained_head_is_not_judged_on_the_photos_classes(tmp_path):
    """A fine-tuned head (a training run's model.keras) may be sure of itself, and give one class,
    on photos outside its classes; a seeded head may not. NaN is a failure either way."""
    from export.model.samples import PHOTO_NAMES
    from export.quality import parity
    names = list(PHOTO_NAMES)
    logits = np.tile([8.0, -8.0], (len(names), 1))
    probs = np.tile([0.9999, 0.0001], (len(names), 1))
    outputs = {"logits": logits, "probabilities": probs}
    failures, classes, saturated = parity.check_reference(outputs, names)
    assert len(failures) == 2 and saturated == len(names) and set(classes) == {0}
    assert parity.check_reference(outputs, names, trained=True)[0] == []
    nan = {"logits": logits * np.nan, "probabilities": probs}
    assert parity.check_reference(nan, names, trained=True)[0] == ["logits: reference has NaN/Inf"]

    run = tmp_path / "dense-123"
    run.mkdir()
    (run / "model.keras").write_bytes(b"")
    meta = {"weights": {"kind": "file", "path": str(run / "model.keras")}}
    assert not parity.is_trained(meta)  # no metrics.json: not a training run
    (run / "metrics.json").write_text("{}")
    assert parity.is_trained(meta)
    assert not parity.is_trained({"weights": {"kind": "file", "path": str(run / "other.weights.h5")}})
    assert not parity.is_trained({"weights": {"kind": "random", "seed": 0}})


@pytest.mark.integration
def test_one_class_reference_is_a_failure(tmp_path):
    bias = np.zeros(10)
    bias[3] = 3.0
    report = _tiny_suite(tmp_path, tiny_model(logit_scale=0.01, bias=bias))
    assert not report
    assert any("degenerate reference: all 12 photos get top-1 class 3" in f for f in report.failures())
    assert not any("saturated" in f for f in report.failures())


@pytest.mark.integration
def test_nan_in_an_output_fails():
    from export.quality.parity import TOLERANCES, compare_output
    ref = np.array([[1.0, 2.0, 0.5], [0.1, 0.0, 3.0]], np.float32)
    got = ref.copy()
    got[1, 2] = np.nan
    m = compare_output("logits", ref, got, TOLERANCES["int8"], 1, judge_ranking=True)
    assert m.nonfinite == 1 and "logits: 1 NaN/Inf values (inputs #1)" in m.failures


# -- the CLI -----------------------------------------------------------------------------------
@pytest.mark.e2e
def test_cli_rebuilds_then_uses_golden_files(exported, tmp_path):
    _, out, arts = exported("dense")
    d = _bundle_dir(tmp_path, out, "dense", [arts["dense/tflite_fp32"]], golden=False)
    r = run_cli("parity", "--artifacts", str(d), "--variant", "dense", "--weights", "random:0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "**Verdict: PASS** - 1 passed, 0 failed, 0 skipped" in r.stdout
    assert "rebuilt Keras model (weights random:0); saved as golden files golden/dense/" in r.stdout
    assert (d / "golden" / "dense" / "inputs.npz").is_file()

    r = run_cli("parity", "--artifacts", str(d), "--json", "--report", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["passed"] is True and doc["references"][0]["source"].startswith("golden files golden/dense/")
    assert (tmp_path / "rep" / "parity.md").is_file()


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["missing-dir", "no-index", "no-golden", "bad-weights", "unknown-variant"])
def test_cli_usage_errors(exported, tmp_path, case):
    _, out, arts = exported("dense")
    if case == "missing-dir":
        args, want = ["--artifacts", str(tmp_path / "nope")], "is not a directory"
    elif case == "no-index":
        args, want = ["--artifacts", str(tmp_path)], "no artifacts.json in"
    else:
        d = _bundle_dir(tmp_path, out, "dense", [arts["dense/tflite_fp32"]], golden=False)
        args, want = {
            "no-golden": (["--artifacts", str(d)], "no golden files for variant 'dense'"),
            "bad-weights": (["--artifacts", str(d), "--weights", "random:x"], "bad weights seed 'x'"),
            "unknown-variant": (["--artifacts", str(d), "--variant", "conv"],
                                "no artifacts of variant 'conv' listed in"),
        }[case]
    r = run_main("parity", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.unit
def test_a_runtime_raising_an_empty_error_is_a_named_failure_not_a_crash():
    """A backend that raises a bare RuntimeError() (no message) fails its row; the suite goes on."""
    import numpy as np

    from export.core.errors import first_line
    from export.quality.parity import check_runner
    from export.runtimes.base import Runner, TensorSpec

    class Broken(Runner):
        backend = "broken"

        def _load(self):
            self.inputs = {"image": TensorSpec("image", "float32", (None, 4))}
            self.outputs = ["logits"]

        def _infer(self, feed):
            raise RuntimeError()

    ref = {"logits": np.eye(4, dtype=np.float32)}
    result = check_runner(Broken(), ref, np.zeros((4, 4), np.float32), [1], key="v/broken_fp32", variant="v",
                          fmt="broken", precision="fp32")
    assert result.status == "failed" and result.failures == ["batch 1: RuntimeError: RuntimeError"]
    assert first_line(ValueError("\n\n  second line\nthird")) == "second line"
