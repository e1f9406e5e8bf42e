"""`resnet-deploy classify MODEL.tflite IMAGE...` on a tiny real model: labels from the metadata,
pixels decoded and resized exactly like the SavedModel's `predict_image_bytes`, and one clean
line (exit 2) for every bad input."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY_SIZE, run_cli, run_main
from tests.helpers import TINY_TFLITE_LABELS as LABELS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files(tiny_tflite, tmp_path_factory):
    """The session's tiny .tflite files (with metadata), the same model's SavedModel, a JPEG and
    a PNG of other sizes than the model's, and a copy of the model without metadata."""
    import tensorflow as tf
    from PIL import Image

    from export.formats import savedmodel
    from export.model import samples
    built, _, arts = tiny_tflite
    root = tmp_path_factory.mktemp("classify")
    savedmodel.write_saved_model(built.model, root / "sm", TINY_SIZE)
    Image.fromarray(samples.load_photo("chelsea", 96)[:, :80]).save(root / "cat.jpg", quality=90)
    Image.fromarray(samples.load_photo("rocket", 50)).save(root / "rocket.png")
    bare = root / "bare"
    bare.mkdir()
    (bare / "plain.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(built.model).convert())
    return {"root": root, "fp32": Path(arts["fp32"].path), "int8": Path(arts["int8"].path),
            "images": [str(root / "cat.jpg"), str(root / "rocket.png")], "plain": bare / "plain.tflite"}


def classify_json(*args: str) -> dict:
    r = run_main("classify", *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_classify_answers_like_predict_image_bytes(files):
    """Same files, same decode + antialiased bilinear resize: the .tflite's probabilities equal
    the SavedModel's `predict_image_bytes` ones within fp32 parity tolerance."""
    import tensorflow as tf
    sm = tf.saved_model.load(str(files["root"] / "sm"))
    data = tf.constant([Path(p).read_bytes() for p in files["images"]])
    want = sm.signatures["predict_image_bytes"](image_bytes=data)["probabilities"].numpy()
    doc = classify_json(str(files["fp32"]), *files["images"], "--top-k", str(len(LABELS)))
    assert doc["labels_source"] == "metadata (labels.txt)"
    assert doc["metadata"] == {"name": "tiny-test", "version": "7", "author": "The Tests", "license": "Apache-2.0",
                               "aspect": "stretch"}
    for row, p in zip(want, doc["predictions"], strict=True):
        got = np.zeros(len(LABELS))
        for t in p["top_k"]:
            assert t["label"] == LABELS[t["index"]]
            got[t["index"]] = t["probability"]
        np.testing.assert_allclose(got, row, atol=1e-4)
        assert p["top_k"][0]["label"] == LABELS[int(np.argmax(row))]


def test_exif_rotated_photo_answers_like_its_upright_twin(files, tmp_path):
    """A phone photo stored rotated (EXIF orientation 6, and 3 and 8) gives the answer of the upright
    file, on LiteRT through `classify` and in the SavedModel graph (`predict_image_bytes`)."""
    import tensorflow as tf

    from export.images import corpus
    from export.model import samples
    upright = samples.load_photo("chelsea", 300)[:, :200]
    paths = []
    for o in (1, 3, 6, 8):
        paths.append(tmp_path / f"exif{o}.jpg")
        paths[-1].write_bytes(corpus.oriented_jpeg(upright, o, quality=98))
    sideways = tmp_path / "sideways.jpg"  # the pixels of exif6.jpg without its tag: the model sees the difference
    sideways.write_bytes(corpus.oriented_jpeg(np.rot90(upright).copy(), 1, quality=98))
    paths.append(sideways)
    doc = classify_json(str(files["fp32"]), *map(str, paths), "--top-k", str(len(LABELS)))
    got = np.array([[t["probability"] for t in sorted(p["top_k"], key=lambda t: t["index"])]
                    for p in doc["predictions"]])
    sm = tf.saved_model.load(str(files["root"] / "sm"))
    want = sm.signatures["predict_image_bytes"](image_bytes=tf.constant([p.read_bytes() for p in paths]))
    np.testing.assert_allclose(got, want["probabilities"].numpy(), atol=1e-4)
    logits = want["logits"].numpy()  # the tiny model's probabilities saturate; its logits show the picture
    rotated = np.abs(logits[1:4] - logits[0]).max()  # re-encoded rotated: close, not bit-equal
    assert rotated < np.abs(logits[4] - logits[0]).max() / 5, (rotated, np.abs(logits[4] - logits[0]).max())


def test_classify_int8_text_output(files):
    r = run_main("classify", str(files["int8"]), *files["images"], "--top-k", "2")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0].startswith(f"{files['int8']} (tiny-test v7; labels from metadata (labels.txt); CPU (XNNPACK")
    assert out[1] == files["images"][0] and out[4] == files["images"][1]
    assert out[2].startswith("  1. kind_") and out[3].startswith("  2. kind_") and len(out) == 7


def test_model_without_metadata_falls_back_to_labels_txt(files, tmp_path):
    plain = tmp_path / "model.tflite"
    plain.write_bytes(files["plain"].read_bytes())
    (tmp_path / "labels.txt").write_text("\n".join(f"beside_{i}" for i in range(len(LABELS))) + "\n")
    doc = classify_json(str(plain), files["images"][0], "--top-k", "1")
    assert doc["labels_source"] == str(tmp_path / "labels.txt") and doc["metadata"] is None
    assert doc["predictions"][0]["top_k"][0]["label"].startswith("beside_")
    custom = tmp_path / "mine.txt"
    custom.write_text("\n".join(f"mine_{i}" for i in range(len(LABELS))))
    doc = classify_json(str(files["fp32"]), files["images"][0], "--labels", str(custom))
    assert doc["labels_source"] == str(custom) and doc["predictions"][0]["top_k"][0]["label"].startswith("mine_")


@pytest.mark.parametrize("case, message", [
    ("not_tflite", r"notes\.tflite is not a TFLite model \(no 'TFL3' flatbuffer identifier\); give a \.tflite file"),
    ("corrupt", r"LiteRT cannot load .*truncated\.tflite: "),
    ("no_labels", r"plain\.tflite has no TFLite metadata and there is no labels\.txt beside it; pass --labels FILE"),
    ("missing_model", r"no such model file: .*nope\.tflite"),
    ("directory", r"is a directory; give a \.tflite file"),
    ("missing_image", r"cannot read image .*ghost\.jpg: no such file"),
    ("not_an_image", r"cannot decode image .*text\.jpg: not a JPEG, PNG, GIF, BMP or WebP file$"),
    ("truncated_image", r"cannot decode image .*cut\.jpg: corrupt or truncated JPEG data$"),
    ("label_count", r"has 10 classes but .*three\.txt lists 3 labels"),
])
def test_bad_input_one_line(files, tmp_path, case, message):
    model, images, extra = str(files["fp32"]), [files["images"][0]], []
    if case == "not_tflite":
        model = str(tmp_path / "notes.tflite")
        Path(model).write_text("these are notes, not a model")
    elif case == "corrupt":
        model = str(tmp_path / "truncated.tflite")
        Path(model).write_bytes(files["fp32"].read_bytes()[:4096])
    elif case == "no_labels":
        model = str(files["plain"])
    elif case == "missing_model":
        model = str(tmp_path / "nope.tflite")
    elif case == "directory":
        model = str(tmp_path)
    elif case == "missing_image":
        images = [str(tmp_path / "ghost.jpg")]
    elif case == "not_an_image":
        images = [str(tmp_path / "text.jpg")]
        Path(images[0]).write_text("not pixels")
    elif case == "truncated_image":
        jpeg = Path(files["images"][0]).read_bytes()
        images = [str(tmp_path / "cut.jpg")]
        Path(images[0]).write_bytes(jpeg[: len(jpeg) // 2])
    elif case == "label_count":
        (tmp_path / "three.txt").write_text("a\nb\nc\n")
        extra = ["--labels", str(tmp_path / "three.txt")]
    r = run_main("classify", model, *images, *extra)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err


def test_cli_process_exits_2_without_traceback(files, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    r = run_cli("classify", str(bad), files["images"][0], timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: {bad} is not a TFLite model (no 'TFL3' flatbuffer identifier); give a .tflite file")


def test_classify_and_mediapipe_leave_tensorflow_out(files):
    """`classify` (LiteRT, MediaPipe's metadata reader) and MediaPipe's ImageClassifier run without
    TensorFlow in the process: MediaPipe would import all of it (4.5 s, ~600 MB, its banner on
    stderr) for its docs and gfile helpers (tflite_metadata.tensorflow_hidden). The answers are
    the in-process ones."""
    import subprocess
    import sys

    from tests.helpers import ROOT
    code = ("import json, sys\nimport numpy as np\nfrom export.cli.app import main\n"
            "rc = main(['classify', sys.argv[1], sys.argv[2], '--json'])\n"
            "from export.quality import mediapipe as mp_check\n"
            "answers = mp_check.classify(sys.argv[1], np.zeros((1, 32, 32, 3), np.uint8))\n"
            "print('RC', rc, 'TENSORFLOW', 'tensorflow' in sys.modules, 'IMAGES', len(answers))\n")
    r = subprocess.run([sys.executable, "-c", code, str(files["int8"]), files["images"][0]], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert "RC 0 TENSORFLOW False IMAGES 1" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert "oneDNN" not in r.stderr and "cuda" not in r.stderr.lower()
    printed = json.loads(r.stdout[:r.stdout.index("RC 0")])
    assert printed["predictions"] == classify_json(str(files["int8"]), files["images"][0])["predictions"]
