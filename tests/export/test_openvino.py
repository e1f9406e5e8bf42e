"""OpenVINO on tiny real models: the exporter (SavedModel -> IR, fp16 weights, versioned
directory, contract names), the runner at both precision hints, the bf16 skip on a CPU without
bf16 units (a fake flag list, so it runs on every machine), and its errors by message."""
from __future__ import annotations

import numpy as np
import pytest

from export.core.errors import ExportError, RunnerError, UsageError
from tests.helpers import TINY_CLASSES, TINY_SIZE, has_bf16, tiny_model

pytestmark = pytest.mark.integration

NO_BF16_CPU = ["fpu", "sse2", "avx2", "fma", "avx512f", "avx512_vnni"]  # an AVX-512 CPU without bf16 units
#: bf16 keeps 8 bits of mantissa: the tiny model's logits (std ~0.1-1) move by up to ~1e-2.
BF16_ATOL = 0.05



def _photos(n: int = 4) -> np.ndarray:
    from export.model import samples
    return samples.photos(TINY_SIZE)[:n]


def _keras(model):
    from export.runtimes.keras import KerasRunner
    return KerasRunner(model)


@pytest.fixture(scope="module")
def tiny_built():
    from export.model.build import BuiltModel
    from export.model.variants import get_variant
    return BuiltModel(model=tiny_model(), spec=get_variant("dense"), num_classes=TINY_CLASSES, input_size=TINY_SIZE)


@pytest.fixture(scope="module")
def exported_ir(tiny_built, tiny, tmp_path_factory):
    """The exporter's IR of the tiny model, converted from the tiny SavedModel."""
    from export.formats import openvino
    out = tmp_path_factory.mktemp("ov")
    art = openvino.export(tiny_built, out, saved_model_dir=tiny["savedmodel"], version=3)
    return out, art


# -- the exporter ---------------------------------------------------------------------------------
def test_export_writes_a_versioned_fp16_ir_with_the_contract_io(exported_ir):
    import openvino as ov

    from export.formats import sha256_path
    out, art = exported_ir
    xml = out / "openvino" / "dense" / "3" / "model.xml"
    assert art.path == str(xml) and sorted(p.name for p in xml.parent.iterdir()) == ["model.bin", "model.xml"]
    assert (art.format, art.precision, art.variant) == ("openvino", "fp16", "dense")
    assert art.inputs == [{"name": "image", "dtype": "float32", "shape": [None, TINY_SIZE, TINY_SIZE, 3]}]
    assert art.outputs == [{"name": n, "dtype": "float32", "shape": [None, TINY_CLASSES]}
                           for n in ("logits", "probabilities")]
    assert (art.sha256, art.bytes) == sha256_path(xml.parent)
    assert set(art.details["files"]) == {"model.xml", "model.bin"}
    assert art.details["source"] == "savedmodel:serving_default" and art.tool_versions["openvino"]
    model = ov.Core().read_model(str(xml))
    consts = {op.get_element_type().get_type_name() for op in model.get_ordered_ops()
              if op.get_type_name() == "Constant" and len(op.get_output_shape(0)) == 4}
    assert consts == {"f16"}, consts  # convolution kernels stored in float16


def test_keras_source_gets_the_contract_names(tiny_built, tmp_path):
    """Without a SavedModel the tf.function path adds internal tensor names; only the contract's stay."""
    from export.formats import openvino
    art = openvino.export(tiny_built, tmp_path)
    assert [o["name"] for o in art.outputs] == ["logits", "probabilities"]
    assert art.details["source"] == "keras (tf.function)"
    from export.runtimes.openvino import OpenVINORunner
    with OpenVINORunner(art.path) as r, _keras(tiny_built.model) as ref:
        got, want = r.infer({"image": _photos()}), ref.infer({"image": _photos()})
    np.testing.assert_allclose(got["logits"], want["logits"], atol=5e-3)  # fp16 weights


def test_batch_one_runs_on_a_static_shape_model_with_the_dynamic_models_answers(exported_ir):
    """A batch of 1 runs on a model compiled for [1, H, W, 3] (at its first use), other batches on
    the IR's dynamic one; they answer alike (bit for bit on the CPUs measured; 1e-6 here, since another
    CPU may pick other kernels for the two shapes). An IR that cannot take the static shape still
    answers, on the dynamic model."""
    from export.runtimes import openvino as ov_runner
    _, art = exported_ir
    photos = _photos(4)
    with ov_runner.OpenVINORunner(art.path) as r:
        assert r.inputs["image"].shape == (None, TINY_SIZE, TINY_SIZE, 3)
        many = r.infer({"image": photos})
        assert r._static == {}  # batch 4: the dynamic model, nothing compiled for it
        ones = [r.infer({"image": photos[i:i + 1]}) for i in range(4)]
        ((shapes, request),) = r._static.items()
        assert shapes == (("image", (1, TINY_SIZE, TINY_SIZE, 3)),) and request is not r._request
        assert [tuple(p.get_shape()) for p in request.model_inputs] == [(1, TINY_SIZE, TINY_SIZE, 3)]
        dynamic = r._request.infer({"image": photos[:1]})
        for name in ("logits", "probabilities"):
            np.testing.assert_allclose(np.concatenate([o[name] for o in ones]), many[name], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ones[0]["logits"], next(np.asarray(v) for p, v in dynamic.items()
                                                           if p.get_any_name() == "logits"), rtol=1e-6, atol=1e-6)
        r._static.clear()
        r.path = r.path.with_name("gone.xml")  # the static compile fails: the dynamic model answers
        np.testing.assert_array_equal(r.infer({"image": photos[:1]})["logits"], ones[0]["logits"])
        assert list(r._static.values()) == [None]


def test_export_refuses_to_overwrite_and_bad_precision(exported_ir, tiny_built, tiny):
    from export.formats import openvino
    out, _ = exported_ir
    with pytest.raises(ExportError, match=r"openvino/dense/3 already exists; pass --overwrite to replace it"):
        openvino.export(tiny_built, out, saved_model_dir=tiny["savedmodel"], version=3)
    with pytest.raises(UsageError, match=r"unknown openvino precision 'int4'; choose from fp16, int8"):
        openvino.export(tiny_built, out, "int4")


def test_failed_conversion_leaves_nothing(tiny_built, tmp_path):
    from export.formats import openvino
    bogus = tmp_path / "not-a-savedmodel"
    bogus.mkdir()
    (bogus / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(ExportError, match=r"^OpenVINO conversion failed: "):
        openvino.export(tiny_built, tmp_path / "out", saved_model_dir=bogus)
    assert not (tmp_path / "out" / "openvino").exists()


def test_pipeline_exports_openvino_and_refuses_an_existing_version(tiny_built, tmp_path):
    from export.formats import read_index
    from export.pipeline.single import export_artifacts, resolve_targets
    # the NNCF int8 IR is in --format all (and so in make export's default bundle) since issue 25
    assert {("openvino", "fp16"), ("openvino", "int8")} <= set(resolve_targets("all"))
    assert ("openvino", "int8") not in resolve_targets("all", ["fp16"])
    arts = export_artifacts(tiny_built, tmp_path, resolve_targets("openvino"), version=2)
    assert [a.key for a in arts] == ["dense/openvino_fp16", "dense/openvino_int8"]
    # the int8 IR is its own OVMS model directory (one IR per version directory)
    assert [a.path for a in read_index(tmp_path)] == ["openvino/dense/2/model.xml", "openvino/dense_int8/2/model.xml"]
    assert arts[1].details["quantization"]["method"] == "nncf.quantize"  # no eval set here: plain PTQ
    with pytest.raises(ExportError, match=r"file .*openvino/dense/2/model.xml already exists; .*"
                                          r"new SavedModel / OpenVINO version"):
        export_artifacts(tiny_built, tmp_path, resolve_targets("openvino"), version=2)


# -- the runner -----------------------------------------------------------------------------------
def test_f32_hint_is_exact_on_fp32_weights(tiny):
    from export.runtimes import runner_for
    with runner_for(tiny["openvino"], precision_hint="f32") as r, _keras(tiny["model"]) as ref:
        assert r.execution_precision == "f32" and r.device == "CPU" and r.backend == "openvino"
        for n in (1, 3):  # dynamic batch
            got, want = r.infer({"image": _photos(n)}), ref.infer({"image": _photos(n)})
            np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-4)
            np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)


def test_bf16_hint_runs_on_bf16_units_or_says_there_are_none(tiny):
    """Where the CPU has AMX-BF16 or AVX512-BF16 the runner computes in bf16 (close, not exact);
    elsewhere load() raises PrecisionUnavailable naming the missing hardware. Either way checked."""
    from export.runtimes import PrecisionUnavailable, runner_for
    r = runner_for(tiny["openvino"], precision_hint="bf16")
    if not has_bf16():
        with pytest.raises(PrecisionUnavailable, match=r"no bf16 hardware"):
            r.load()
        return
    with r, runner_for(tiny["openvino"], precision_hint="f32") as f32, _keras(tiny["model"]) as ref:
        assert r.execution_precision == "bf16" and r.bf16_unit in ("AMX-BF16", "AVX512-BF16")
        x = _photos()
        got, exact, want = r.infer({"image": x}), f32.infer({"image": x}), ref.infer({"image": x})
    np.testing.assert_allclose(got["logits"], want["logits"], atol=BF16_ATOL)
    assert np.abs(got["logits"] - want["logits"]).max() > np.abs(exact["logits"] - want["logits"]).max(), \
        "the bf16 hint gave f32-exact logits: bf16 was not used"


def test_no_bf16_hardware_is_a_skip_never_a_pass(tiny):
    """A CPU whose flags lack amx_bf16 and avx512_bf16 (given, so this runs on every machine)."""
    from export.quality.parity import check_runner
    from export.runtimes import PrecisionUnavailable
    from export.runtimes.openvino import OpenVINORunner
    runner = OpenVINORunner(tiny["openvino"], precision_hint="bf16", cpu_flags=NO_BF16_CPU, name="tiny/openvino")
    with pytest.raises(PrecisionUnavailable) as info:
        runner.load()
    assert str(info.value) == ("tiny/openvino: no bf16 hardware: this CPU has neither AMX-BF16 nor AVX512-BF16, "
                               "so the bf16 hint would be emulated or fall back to f32")
    assert info.value.skip_reason == "skipped: no bf16 hardware"
    x = _photos()
    with _keras(tiny["model"]) as ref:
        reference = ref.infer({"image": x})
    row = check_runner(runner, reference, x, (1,), key="tiny/openvino_fp32", variant="tiny", fmt="openvino",
                       precision="fp32", require_gpu=True)
    assert (row.status, row.reason, row.metrics, row.failures) == ("skipped", "skipped: no bf16 hardware", [], [])
    assert row.label == "tiny/openvino_fp32 @ bf16" and row.tolerance == "openvino-bf16"


def test_hint_and_file_errors_are_one_line(tiny, tmp_path):
    from export.runtimes import DeviceUnavailable, runner_for
    from export.runtimes.openvino import OpenVINORunner
    with pytest.raises(RunnerError, match=r"unknown OpenVINO precision hint 'fp8'; choose from f32, bf16"):
        OpenVINORunner(tiny["openvino"], precision_hint="fp8")
    with pytest.raises(RunnerError, match=r"precision hint 'bf16': onnx runners take none \(only openvino runners do\)"):
        runner_for(tiny["onnx"], precision_hint="bf16")
    with pytest.raises(RunnerError, match=r"unknown openvino precision hint 'int8'; choose from f32, bf16"):
        runner_for(tiny["openvino"], precision_hint="int8")
    with pytest.raises(DeviceUnavailable, match=r"no GPU: this runner uses OpenVINO's CPU plugin only"):
        runner_for(tiny["openvino"], device="GPU:0").load()
    lonely = tmp_path / "model.xml"
    lonely.write_text((tiny["openvino"]).read_text())
    with pytest.raises(RunnerError, match=r"model.bin is missing \(an IR is .xml \+ .bin\)"):
        runner_for(lonely).load()
    lonely.with_suffix(".bin").write_bytes(b"short")
    with pytest.raises(RunnerError, match=r"OpenVINO cannot load .*model.xml: ") as info:
        runner_for(lonely).load()
    assert "\n" not in str(info.value)
    with pytest.raises(RunnerError, match=r"no such OpenVINO IR: .*missing.xml"):
        OpenVINORunner(tmp_path / "missing.xml").load()
