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


@pytest.mark.parametrize("aspect", ["stretch", "center_crop"])
def test_pre_resize_code_in_the_readme_is_the_image_contract(tmp_path, aspect):
    """The Python pre-resize the README shows phone developers (Pillow alone) gives the contract's
    pixels, rounded: on JPEGs of every EXIF orientation, a 1000-px progressive JPEG, CMYK, grey and
    RGBA PNGs and a palette PNG."""
    import numpy as np

    from export.deploy.ondevice import pre_resize_code, readme_section
    from export.images import ImageContract, corpus, pil
    code = pre_resize_code(96, aspect)
    assert code in readme_section("dense", ["fp32"], 96, aspect)
    scope: dict = {}
    exec(compile(code, "README pre-resize", "exec"), scope)
    files = corpus.files(large=False)
    names = [n for n in files if n.endswith((".jpg", ".png")) and "16" not in n]
    assert len(names) >= 15
    for name in names:
        path = tmp_path / name
        path.write_bytes(files[name])
        want = pil.decode_file(path, ImageContract(96, aspect), np.uint8)  # whole grey levels already
        got = scope["contract_pixels"](path)
        assert got.shape == (96, 96, 3) and got.dtype == np.uint8, name
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
