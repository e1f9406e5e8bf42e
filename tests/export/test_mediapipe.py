"""MediaPipe Tasks' ImageClassifier (the C++ task Android and iOS run, from Python) classifies
with every exported TFLite precision and agrees with the LiteRT runner: top-1 names equal,
both heads' scores within the precision's tolerance. Images are at the model's input size
(MediaPipe would otherwise resize them with its own resampler)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY_SIZE
from tests.helpers import TINY_TFLITE_LABELS as LABELS

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")


def photos_uint8(size: int) -> tuple[np.ndarray, list[str]]:
    from export.model import samples
    return np.stack([samples.load_photo(n, size) for n in samples.PHOTO_NAMES]), list(samples.PHOTO_NAMES)


@pytest.mark.integration
@pytest.mark.parametrize("precision", PRECISIONS)
def test_mediapipe_agrees_with_litert_tiny(tiny_tflite, precision):
    from export.quality import mediapipe as mediapipe_check
    images, names = photos_uint8(TINY_SIZE)
    check = mediapipe_check.check(tiny_tflite[2][precision].path, images, names, LABELS, precision)
    assert check, check.failures
    assert check.head_names == ["logits", "probabilities"]
    assert len(check.rows) == len(names) and all(r.mediapipe_top1 in LABELS for r in check.rows)
    if precision == "int8":  # a uint8 output's tolerance is one quantization step
        assert check.tolerance["probabilities"] == pytest.approx(1 / 256)


@pytest.mark.integration
def test_mediapipe_scores_are_the_raw_outputs(tiny_tflite):
    """The probabilities head is the model's softmax as is (sums to 1, not re-softmaxed) and the
    logits head the raw logits (negative values kept)."""
    from export.quality import mediapipe as mediapipe_check
    images, _ = photos_uint8(TINY_SIZE)
    heads = mediapipe_check.classify(tiny_tflite[2]["fp32"].path, images[:3])
    for h in heads:
        assert list(h) == ["logits", "probabilities"]
        assert h["probabilities"]["scores"].sum() == pytest.approx(1.0, abs=1e-5)
        assert (h["logits"]["scores"] < 0).any()
        assert h["probabilities"]["top1"] == LABELS[int(np.argmax(h["logits"]["scores"]))]


@pytest.mark.integration
def test_the_check_fails_when_it_should(tiny_tflite, tmp_path):
    """Wrong labels in the record, an image at another size and a model without metadata are
    each caught (so a passing check means something)."""
    import tensorflow as tf

    from export.core.errors import RunnerError
    from export.quality import mediapipe as mediapipe_check
    images, names = photos_uint8(TINY_SIZE)
    path = tiny_tflite[2]["fp32"].path
    wrong = mediapipe_check.check(path, images, names, LABELS[::-1], "fp32")
    assert not wrong and any("MediaPipe top-1 'kind_" in f and "LiteRT 'kind_" in f for f in wrong.failures)
    with pytest.raises(RunnerError, match=r"images at the model's input size \(32, 32\), got \(64, 64\)"):
        mediapipe_check.check(path, photos_uint8(64)[0], names, LABELS, "fp32")
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tiny_tflite[0].model).convert())
    with pytest.raises(RunnerError, match=r"MediaPipe ImageClassifier cannot load .*plain\.tflite: Input tensor "
                                          "has type float32: it requires specifying NormalizationOptions"):
        mediapipe_check.classify(plain, images[:1])


@pytest.mark.e2e
def test_mediapipe_agrees_with_litert_resnet50(exported, capsys):
    """A real variant's four TFLite files from the session's export (ResNet50 dense, random:0)."""
    from export.quality import mediapipe as mediapipe_check
    built, out, arts = exported("dense")
    images, names = photos_uint8(built.input_size)
    checks = []
    for precision in PRECISIONS:
        art = arts[f"dense/tflite_{precision}"]
        path = Path(art.path) if Path(art.path).is_absolute() else Path(out) / art.path
        checks.append(mediapipe_check.check(path, images, names, built.labels, precision))
    with capsys.disabled():  # the numbers, for the log
        print("\n" + mediapipe_check.render_markdown(checks))
    for c in checks:
        assert c, (c.precision, c.failures)
        assert c.head_names == ["logits", "probabilities"]
