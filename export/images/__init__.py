"""THE image contract: how an encoded file becomes the pixels a model sees, defined once.

`contract` states it (and writes it into bundles); `header` reads what a file declares
(kind, size, EXIF orientation) without decoding; `pil` is the NumPy/PIL twin (clients, Beam
workers, training, calibration, warmup, bench) and `tf_ops` the in-graph twin (the
SavedModel's `predict_image_bytes`). Both twins agree to one grey level (tests/export/test_images.py).
Nothing here imports TensorFlow at import time; only `export.core` is imported from the project.
"""
from __future__ import annotations

from export.images.contract import ASPECTS, DEFAULT_CONTRACT, ImageContract, ImageError

__all__ = ["ASPECTS", "DEFAULT_CONTRACT", "ImageContract", "ImageError"]
