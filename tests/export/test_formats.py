"""Exporters: each artifact loads in its own runtime and answers like the Keras model.

Checked here with each runtime's own API (tf.saved_model, ai_edge_litert, onnxruntime), not
through the project's runners, so the exporters are verified independently of them.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import ROOT, run_cli

pytestmark = pytest.mark.e2e

VARIANT = "dense"
#: Minimum top-1 agreement with Keras on the 12 sample photos, per quantized precision. fp16
#: weights move logits by ~1e-2, so every photo keeps its class. Dynamic-range and full-int8
#: quantization move them by ~0.1-0.5 while the seeded test model's top-2 margin is under 0.1
#: on several photos; measured 10/12 (dynamic, ONNX int8) and 9/12 (TFLite int8) with
#: random:0, so the bounds leave one photo of slack.
TOP1_BOUND = {"fp16": 1.0, "dynamic": 9 / 12, "int8": 8 / 12}


def _reference(built, images):
    return built.model.predict(images, verbose=0)


def _tflite_run(path, images, art):
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=str(path), num_threads=2)
    detail = interp.get_signature_runner("serving_default").get_input_details()["image"]
    interp.resize_tensor_input(detail["index"], list(images.shape))
    interp.allocate_tensors()
    runner = interp.get_signature_runner("serving_default")
    feed = images
    q = art.details.get("quantization", {})
    if "image" in q:
        feed = np.clip(np.round(images / q["image"]["scale"] + q["image"]["zero_point"]), 0, 255).astype(np.uint8)
    out = runner(image=feed)
    return {k: (v.astype(np.float32) - q[k]["zero_point"]) * q[k]["scale"] if k in q else v for k, v in out.items()}


def _run(art, out_dir, images):
    path = out_dir / art.path
    if art.format == "savedmodel":
        import tensorflow as tf
        sig = tf.saved_model.load(str(path)).signatures["serving_default"]
        return {k: v.numpy() for k, v in sig(image=tf.constant(images)).items()}
    if art.format == "tflite":
        return _tflite_run(path, images, art)
    if art.format == "openvino":
        import openvino as ov
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled(images)
        return {port.get_any_name(): value for port, value in result.items()}
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": images}), strict=False))


KEYS = ["savedmodel_fp32", "tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8", "onnx_fp32", "onnx_int8",
        "openvino_fp16"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("batch", [1, 4])
def test_artifact_matches_keras(exported, photos, key, batch):
    built, out, arts = exported(VARIANT)
    art = arts[f"{VARIANT}/{key}"]
    images = photos if batch == 4 else photos[:1]
    # batch 4: run the 12 photos in 3 batches of 4
    chunks = [images[i:i + batch] for i in range(0, len(images), batch)]
    got = {k: np.concatenate([_run(art, out, c)[k] for c in chunks]) for k in ("logits", "probabilities")}
    ref = _reference(built, images)
    assert got["logits"].shape == ref["logits"].shape
    if art.precision == "fp32":
        rel = np.abs(got["logits"] - ref["logits"]).max() / np.abs(ref["logits"]).max()
        assert rel <= 1e-4, f"{key}: max relative logit error {rel:.2e}"
    else:
        agree = float(np.mean(got["logits"].argmax(1) == ref["logits"].argmax(1)))
        print(f"{key} batch {batch}: top-1 agreement {agree:.3f}")
        assert agree >= TOP1_BOUND[art.precision] - 1e-9, f"{key}: top-1 agreement {agree:.3f}"


def test_savedmodel_layout_signatures_and_image_bytes(exported, photos):
    import tensorflow as tf

    from export.model import samples
    built, out, arts = exported(VARIANT)
    version_dir = out / arts[f"{VARIANT}/savedmodel_fp32"].path
    assert version_dir.parts[-3:] == ("tfserving", VARIANT, "1")
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    loaded = tf.saved_model.load(str(version_dir))
    assert set(loaded.signatures) == {"serving_default", "predict_image_bytes"}
    sig = loaded.signatures["predict_image_bytes"]
    assert list(sig.structured_input_signature[1]) == ["image_bytes"]
    png = tf.io.encode_png(photos[1].astype(np.uint8)).numpy()
    jpeg = samples.encode_jpeg(photos[0], quality=100)
    res = sig(image_bytes=tf.constant([jpeg, png]))
    ref = _reference(built, photos[:2])
    assert res["probabilities"].shape == (2, built.num_classes)
    # Same size, so decoding is the only difference: the PNG is lossless, the JPEG nearly so.
    np.testing.assert_allclose(res["logits"].numpy()[1], ref["logits"][1], atol=1e-3)
    assert res["logits"].numpy()[0].argmax() == ref["logits"][0].argmax()


def test_warmup_requests_parse_as_prediction_logs(exported):
    from export.deploy.warmup import MAX_WARMUP_RECORDS, read_warmup_requests
    _, out, arts = exported(VARIANT)
    path = out / arts[f"{VARIANT}/savedmodel_fp32"].path / "assets.extra" / "tf_serving_warmup_requests"
    logs = read_warmup_requests(path)
    assert 0 < len(logs) <= MAX_WARMUP_RECORDS
    sigs = {log.predict_log.request.model_spec.signature_name for log in logs}
    assert sigs == {"serving_default", "predict_image_bytes"}
    assert all(log.predict_log.request.model_spec.name == VARIANT for log in logs)
    first = logs[0].predict_log.request.inputs["image"]
    assert [d.size for d in first.tensor_shape.dim] == [1, 224, 224, 3]


def test_tflite_builtin_ops_gpu_verdict_labels_and_int8_io(exported):
    from export.formats.tflite import assert_builtin_only
    built, out, arts = exported(VARIANT)
    for precision in ("fp32", "fp16", "dynamic", "int8"):
        art = arts[f"{VARIANT}/tflite_{precision}"]
        ops = assert_builtin_only((out / art.path).read_bytes())
        assert "CONV_2D" in ops and not any(op.startswith("CUSTOM") for op in ops)
        assert art.details["builtin_only"] and isinstance(art.details["gpu_delegate"]["compatible"], bool)
    int8 = arts[f"{VARIANT}/tflite_int8"]
    assert {t["name"]: t["dtype"] for t in int8.inputs + int8.outputs} == {
        "image": "uint8", "logits": "uint8", "probabilities": "uint8"}
    assert set(int8.details["quantization"]) == {"image", "logits", "probabilities"}
    labels = (out / "tflite" / VARIANT / "labels.txt").read_text().splitlines()
    assert labels == built.labels


def test_onnx_io_opset_and_quantized_model(exported):
    import onnx
    _, out, arts = exported(VARIANT)
    fp32 = onnx.load(str(out / arts[f"{VARIANT}/onnx_fp32"].path))
    assert [i.name for i in fp32.graph.input] == ["image"]
    assert sorted(o.name for o in fp32.graph.output) == ["logits", "probabilities"]
    assert fp32.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert {o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")} == {17}
    q = onnx.load(str(out / arts[f"{VARIANT}/onnx_int8"].path))
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert arts[f"{VARIANT}/onnx_int8"].bytes < arts[f"{VARIANT}/onnx_fp32"].bytes / 3


def test_existing_version_refused_without_overwrite(exported):
    _, out, _ = exported(VARIANT)
    r = run_cli("export", "--variant", VARIANT, "--format", "savedmodel", "--out", str(out))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "already exists; pass --overwrite" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--format", "pmml"], "unknown format 'pmml'"),
    (["--format", "onnx", "--precision", "fp16"], "unknown precision 'fp16' for --format onnx"),
    (["--format", "tflite", "--out", "/proc/forbidden"], "cannot create output directory /proc/forbidden"),
])
def test_export_usage_errors(args, message, tmp_path):
    full = ["export", "--variant", VARIANT, "--out", str(tmp_path / "o"), *args]
    r = run_cli(*full)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and message in r.stderr
    assert not (tmp_path / "o" / "tflite").exists()


def test_export_usage_errors_are_said_before_tensorflow_is_imported(tmp_path):
    """A bad --format, --precision or --out costs no TensorFlow import (~5 s): the arguments are
    checked first, and the command imports it only to build the model."""
    import subprocess
    import sys
    code = ("import sys; from export.cli.app import main; "
            f"rc = main(['export', '--variant', '{VARIANT}', '--out', sys.argv[1], '--format', 'onnx', "
            "'--precision', 'fp16']); print(rc, 'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert r.stderr.startswith("error: unknown precision 'fp16' for --format onnx")


def test_export_cli_json_one_artifact_relative_out(tmp_path):
    import json
    r = run_cli("export", "--variant", VARIANT, "--format", "tflite", "--precision", "fp16",
                "--out", "out", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (rec,) = json.loads(r.stdout)
    assert rec["format"] == "tflite" and rec["precision"] == "fp16"
    assert (tmp_path / rec["path"]).stat().st_size == rec["bytes"] and len(rec["sha256"]) == 64
    # The index holds paths relative to the output directory, whatever the working directory.
    index = json.loads((tmp_path / "out" / "artifacts.json").read_text())
    assert [a["path"] for a in index["artifacts"]] == ["tflite/dense/model_fp16.tflite"]
