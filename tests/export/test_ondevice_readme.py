"""The bundle README's on-device section: MediaPipe Kotlin and Swift snippets naming the exact
file to copy, the LiteRT Python snippet and `classify`, for whichever precisions were exported."""
from __future__ import annotations

import pytest

from export.deploy.ondevice import readme_section

pytestmark = pytest.mark.unit


def test_snippets_name_the_file_to_copy():
    text = readme_section("conv", ["dynamic", "fp16", "fp32", "int8"])
    assert "Copy **`tflite/conv/model_fp32.tflite`** into the app" in text
    assert 'setModelAssetPath("model_fp32.tflite")' in text  # Android: app/src/main/assets/
    assert 'Bundle.main.path(forResource: "model_fp32", ofType: "tflite")' in text  # iOS: the app target
    assert '"probabilities"' in text and "headName()" in text and "$0.headName" in text
    assert "```kotlin" in text and "```swift" in text and "```python" in text
    assert "resnet-deploy classify tflite/conv/model_fp32.tflite" in text


def test_snippets_follow_the_exported_precisions():
    text = readme_section("dense", ["int8"])
    assert "Copy **`tflite/dense/model_int8.tflite`**" in text and "model_fp32" not in text
