"""The bundle README's on-device section: LiteRT in Python, MediaPipe Tasks' ImageClassifier in
Kotlin (Android) and Swift (iOS), each naming the exact file of the bundle to copy into the app.

The snippets follow MediaPipe's current Tasks API (checked against upstream master's
ImageClassifier.java / MPPImageClassifier.h and the ai.google.dev image-classifier guides):
every output tensor is a classification head named by its metadata, so an app picks the
`probabilities` head by name; labels and input normalization come from the model's metadata.
"""
from __future__ import annotations


def readme_section(variant: str, precisions: list[str], size: int = 224, aspect: str = "stretch") -> str:
    """Markdown for running `tflite/<variant>/model_<precision>.tflite` on a device; `size` and
    `aspect` are the variant's image contract (the pre-resize that makes MediaPipe match the server)."""
    prec = "fp32" if "fp32" in precisions or not precisions else precisions[0]
    path = f"tflite/{variant}/model_{prec}.tflite"
    asset = f"model_{prec}"
    return f"""## Run on a device

Every `.tflite` in this bundle carries TFLite Model Metadata: name, version, author, license;
the `image` input as an RGB image (float models: NormalizationOptions mean 0, std 1, i.e. plain
0..255 pixels; `model_int8.tflite`: uint8 raw pixels, scale 1, zero point 0); the outputs
`logits` and `probabilities`, each with `labels.txt` packed inside the model. MediaPipe Tasks
and the LiteRT support libraries read it, so there is no pre- or post-processing to write.

Copy **`{path}`** into the app (the labels are inside it). `model_fp16.tflite` suits the GPU
delegate; `model_int8.tflite` is the smallest and fastest on CPUs, NPUs and integer-only
hardware. MediaPipe reports one head per output: read the one named `probabilities`.

Android (Kotlin), with `implementation("com.google.mediapipe:tasks-vision:latest.release")`
and the file in `app/src/main/assets/`:

```kotlin
import android.util.Log
import com.google.mediapipe.framework.image.BitmapImageBuilder
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.vision.core.RunningMode
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifier

val options = ImageClassifier.ImageClassifierOptions.builder()
    .setBaseOptions(BaseOptions.builder().setModelAssetPath("{asset}.tflite").build())
    .setRunningMode(RunningMode.IMAGE)
    .setMaxResults(5)
    .build()
val classifier = ImageClassifier.createFromOptions(context, options)
val result = classifier.classify(BitmapImageBuilder(bitmap).build())
val head = result.classificationResult().classifications()
    .first {{ it.headName().orElse("") == "probabilities" }}
head.categories().forEach {{ Log.i("classify", "${{it.categoryName()}} ${{it.score()}}") }}
```

iOS (Swift), with `pod 'MediaPipeTasksVision'` and the file added to the app target:

```swift
import MediaPipeTasksVision

let options = ImageClassifierOptions()
options.baseOptions.modelAssetPath = Bundle.main.path(forResource: "{asset}", ofType: "tflite")!
options.runningMode = .image
options.maxResults = 5
let classifier = try ImageClassifier(options: options)
let result = try classifier.classify(image: try MPImage(uiImage: uiImage))
let head = result.classificationResult.classifications.first {{ $0.headName == "probabilities" }}!
for category in head.categories {{ print(category.categoryName ?? "?", category.score) }}
```

Python, with LiteRT (`pip install ai-edge-litert`), the labels read from `labels.txt`:

```python
import numpy as np
from ai_edge_litert.interpreter import Interpreter
run = Interpreter(model_path="{path}", num_threads=4).get_signature_runner("serving_default")
image = np.asarray(photo_224x224_rgb, dtype=np.float32)[None]   # 0..255 (np.uint8 for model_int8)
probabilities = run(image=image)["probabilities"][0]
labels = open("tflite/{variant}/labels.txt").read().splitlines()
```

Or from the command line, with the labels from the model's metadata and JPEG/PNG files
decoded and resized exactly as TF Serving's `predict_image_bytes` does:

    resnet-deploy classify {path} cat.jpg dog.png --top-k 3

MediaPipe resizes camera frames to the model's input size itself. resnet-deploy's tests run
MediaPipe's ImageClassifier (Python, the same C++ task) on every precision and check it against
LiteRT: the same top-1 label and scores within the precision's tolerance, on images already at
the input size.

{pre_resize_section(size, aspect)}"""


def pre_resize_code(size: int = 224, aspect: str = "stretch") -> str:
    """The Python pre-resize of the README (tests run it): the image contract in Pillow alone."""
    return f'''import numpy as np
from PIL import Image, ImageOps


def contract_pixels(path, size={size}, aspect="{aspect}"):
    """A photo (JPEG, PNG) as uint8 RGB [size, size, 3], decoded as the server decodes it."""
    img = Image.open(path)
    if img.format == "JPEG":
        w, h = img.size
        r = next((r for r in (8, 4, 2) if -(-w // r) >= size and -(-h // r) >= size), 1)
        if r > 1:
            img.draft(img.mode, (w // r, h // r))  # libjpeg's DCT downscale (TF: decode_jpeg(ratio=r))
        img = ImageOps.exif_transpose(img)  # the EXIF orientation, upright
    rgb = np.asarray(img.convert("RGB"))  # grey and palette to RGB, alpha dropped
    if aspect == "center_crop":
        h, w = rgb.shape[:2]
        s = min(h, w)
        rgb = rgb[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    planes = [Image.fromarray(np.ascontiguousarray(rgb[..., c], dtype=np.float32), mode="F")
              .resize((size, size), Image.Resampling.BILINEAR) for c in range(3)]  # antialiased, in float
    return np.clip(np.rint(np.stack(planes, axis=-1)), 0, 255).astype(np.uint8)  # whole grey levels, as the server
'''


def pre_resize_section(size: int = 224, aspect: str = "stretch") -> str:
    """How a phone app gets the server's answer from MediaPipe: pre-resize by the image contract."""
    return f"""### Match the server: pre-resize by the image contract

Fed a whole photo, MediaPipe resizes it with its own resampler (no antialiasing, not
configurable from the model) and ignores the EXIF orientation, so its answer can differ from
the server's (`parity.md`, end-to-end section, rows "MediaPipe ... raw file"). Hand it the
pixels of the image contract instead, already {size} x {size} (aspect policy `{aspect}`): whole
grey levels 0..255, which is what the server computes too, so they fit MediaPipe's 8-bit images
exactly and it answers as the server does ("contract pre-resize" rows: the same top-1;
probabilities equal (0.0 measured) on ResNet50 `dense`, against 0.20 for the raw file). In Python:

```python
{pre_resize_code(size, aspect)}
import mediapipe as mp
image = mp.Image(image_format=mp.ImageFormat.SRGB, data=contract_pixels("cat.jpg"))
result = classifier.classify(image)   # an ImageClassifier on this bundle's .tflite
```

On Android and iOS, the same steps: decode a JPEG at 1/r of its size (Android:
`BitmapFactory.Options.inSampleSize = r`, the same libjpeg DCT downscale), rotate it upright by
its EXIF orientation, crop the central square for `center_crop`, then resize to {size} x {size}
with an antialiased bilinear (triangle) filter in floating point, and round to the nearest grey
level (halves to even). Only the Python version is measured here.
"""
