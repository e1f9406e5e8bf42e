"""Runners on real runtimes (Keras, TensorFlow, LiteRT, ONNX Runtime) with tiny real artifacts:
feed validation by message, the factory, batch resizing, quantized I/O, devices, timing."""
from __future__ import annotations

import numpy as np
import pytest

from export.core.errors import RunnerError
from tests.helpers import TINY_CLASSES, TINY_SIZE, tiny_runner

pytestmark = pytest.mark.integration

KINDS = ("keras", "savedmodel", "tflite", "tflite_int8", "onnx", "openvino")


def _batch(n: int = 2) -> np.ndarray:
    from export.model import samples
    return samples.photos(TINY_SIZE)[:n]


@pytest.mark.parametrize("kind", KINDS)
def test_runner_runs_and_times(tiny, kind):
    with tiny_runner(tiny, kind) as r:
        assert r.inputs["image"].dtype == "float32"
        assert r.inputs["image"].shape == (None, TINY_SIZE, TINY_SIZE, 3)
        assert set(r.outputs) == {"logits", "probabilities"}
        out = r.infer({"image": _batch()})
        assert r.last_inference_seconds > 0 and len(r.inference_times) == 1
        assert r.device.startswith("CPU")
    assert not r.is_loaded
    assert out["logits"].shape == out["probabilities"].shape == (2, TINY_CLASSES)
    assert out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"].sum(1), 1.0, atol=0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_input_name(tiny, kind):
    with tiny_runner(tiny, kind) as r:
        with pytest.raises(RunnerError, match=r"expected inputs \['image'\], got \['images'\]"):
            r.infer({"images": _batch()})


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_dtype(tiny, kind):
    with tiny_runner(tiny, kind) as r:
        with pytest.raises(RunnerError, match=r"input 'image' expects dtype float32, got float64"):
            r.infer({"image": _batch().astype(np.float64)})


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_shape(tiny, kind):
    with tiny_runner(tiny, kind) as r:
        with pytest.raises(RunnerError, match=rf"input 'image' expects shape \('N', {TINY_SIZE}, {TINY_SIZE}, 3\), "
                                              rf"got \(2, {TINY_SIZE + 1}, {TINY_SIZE}, 3\)"):
            r.infer({"image": np.zeros((2, TINY_SIZE + 1, TINY_SIZE, 3), np.float32)})
        with pytest.raises(RunnerError, match=r"expects shape .* got \(32, 32, 3\)"):
            r.infer({"image": np.zeros((TINY_SIZE, TINY_SIZE, 3), np.float32)})


def test_not_a_numpy_array(tiny):
    with tiny_runner(tiny, "onnx") as r:
        with pytest.raises(RunnerError, match=r"input 'image' must be a numpy array, got list"):
            r.infer({"image": _batch().tolist()})


def test_infer_before_load(tiny):
    r = tiny_runner(tiny, "tflite")
    with pytest.raises(RunnerError, match=r"call load\(\) \(or use `with`\) before infer\(\)"):
        r.infer({"image": _batch()})


@pytest.mark.parametrize("kind", ("savedmodel", "tflite", "onnx", "openvino"))
def test_backends_agree_with_keras(tiny, kind):
    x = _batch(4)
    with tiny_runner(tiny, "keras") as ref, tiny_runner(tiny, kind) as r:
        want, got = ref.infer({"image": x}), r.infer({"image": x})
    for name in ("logits", "probabilities"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-4)


def test_litert_batch_sizes_resize(tiny):
    """Batch 1, 3 and 1 again on the same interpreter (static batch 1 in the file)."""
    x = _batch(3)
    with tiny_runner(tiny, "tflite") as r:
        one = [r.infer({"image": x[i:i + 1]})["logits"] for i in range(3)]
        three = r.infer({"image": x})["logits"]
        again = r.infer({"image": x[:1]})["logits"]
    np.testing.assert_allclose(np.concatenate(one), three, atol=1e-5)
    np.testing.assert_allclose(again, one[0], atol=1e-6)


def test_litert_quantized_io(tiny):
    """Full-int8: the runner takes float32 [0, 255], quantizes it, and dequantizes the outputs."""
    x = _batch(4)
    with tiny_runner(tiny, "tflite_int8") as r:
        assert r.quantization["image"]["dtype"] == "uint8"
        assert set(r.quantization) == {"image", "logits", "probabilities"}
        got = r.infer({"image": x})
    with tiny_runner(tiny, "keras") as ref:
        want = ref.infer({"image": x})
    assert got["logits"].dtype == np.float32
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=0.05)
    cos = (got["logits"] * want["logits"]).sum(1) / (
        np.linalg.norm(got["logits"], axis=1) * np.linalg.norm(want["logits"], axis=1))
    assert cos.min() > 0.9


def test_factory_picks_the_runner(tiny, tmp_path):
    from export.runtimes import detect_format, runner_for
    from export.runtimes.litert import LiteRTRunner
    from export.runtimes.onnxruntime import OnnxRuntimeRunner
    from export.runtimes.tensorflow import TensorFlowRunner
    assert isinstance(runner_for(tiny["savedmodel"]), TensorFlowRunner)
    assert isinstance(runner_for(tiny["tflite"]), LiteRTRunner)
    assert isinstance(runner_for(tiny["onnx"]), OnnxRuntimeRunner)
    assert detect_format(tiny["savedmodel"]) == "savedmodel"
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(RunnerError, match=r"cannot tell the format of .*model.bin: expected a SavedModel"):
        runner_for(tmp_path / "model.bin")
    with pytest.raises(RunnerError, match=r"directory without saved_model.pb"):
        runner_for(tmp_path)
    with pytest.raises(RunnerError, match=r"no such artifact: .*missing.pt"):
        runner_for(tmp_path / "missing.pt")


def test_factory_reads_an_artifact_relative_to_root(tiny):
    from export.formats import Artifact
    from export.runtimes import runner_for
    art = Artifact(path="model.onnx", format="onnx", precision="fp32", variant="tiny", sha256="", bytes=0,
                   inputs=[], outputs=[], tool_versions={}, seconds=0.0)
    with runner_for(art, tiny["root"], device="CPU") as r:
        assert r.name == "tiny/onnx_fp32"
        assert r.infer({"image": _batch(1)})["logits"].shape == (1, TINY_CLASSES)


def test_corrupt_files_fail_to_load_with_the_path(tmp_path):
    from export.runtimes import runner_for
    for name in ("bad.tflite", "bad.onnx"):
        (tmp_path / name).write_bytes(b"not a model")
        with pytest.raises(RunnerError, match=rf"cannot load .*{name}"):
            runner_for(tmp_path / name, device="CPU").load()


def test_missing_signature(tiny):
    from export.runtimes.tensorflow import TensorFlowRunner
    with pytest.raises(RunnerError, match=r"has no signature 'predict' \(it has \['serve', 'serving_default'\]\)"):
        TensorFlowRunner(tiny["savedmodel"], signature="predict", device="CPU").load()


def _has_gpu(fmt: str = "any") -> bool:
    """Whether the runtime for `fmt` (savedmodel: TensorFlow, onnx: ONNX Runtime) sees a GPU."""
    import onnxruntime as ort
    import tensorflow as tf
    tf_gpu = bool(tf.config.list_physical_devices("GPU"))
    ort_gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    return {"savedmodel": tf_gpu, "onnx": ort_gpu}.get(fmt, tf_gpu or ort_gpu)


@pytest.mark.parametrize("kind", ("savedmodel", "onnx"))
def test_gpu_device(tiny, kind):
    """Asked for GPU:0: runs there when present, else DeviceUnavailable naming the lack of a GPU."""
    from export.runtimes import DeviceUnavailable, runner_for
    r = runner_for(tiny[kind], device="GPU:0")
    if _has_gpu(kind):
        with r:
            assert r.device == "GPU:0"
            r.infer({"image": _batch(1)})
    else:
        with pytest.raises(DeviceUnavailable, match=r"no GPU"):
            r.load()
        with runner_for(tiny[kind], device="auto") as auto:
            assert auto.device == "CPU"


def test_bad_device_string(tiny):
    from export.runtimes import runner_for
    with pytest.raises(RunnerError, match=r"unknown device 'TPU': use auto, CPU or GPU\[:n\]"):
        runner_for(tiny["onnx"], device="TPU").load()


def test_inference_times_are_bounded(tiny):
    """A server keeps its runners for its whole life: the recorded times must not grow with it."""
    with tiny_runner(tiny, "tflite") as r:
        feed = {"image": _batch(1)}
        for _ in range(r.MAX_RECORDED_TIMES + 50):
            r.infer(feed)
        assert r.inference_count == r.MAX_RECORDED_TIMES + 50
        assert len(r.inference_times) == r.MAX_RECORDED_TIMES
        mark = r.inference_count
        r.infer(feed)
        r.infer(feed)
        assert len(r.times_since(mark)) == 2 and r.times_since(r.inference_count) == []
