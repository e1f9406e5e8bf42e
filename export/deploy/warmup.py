"""TF Serving warmup: `assets.extra/tf_serving_warmup_requests` in a SavedModel version dir.

PredictionLog records in TFRecord form, built from the sample photos, for both signatures,
so the first real request doesn't pay for graph initialisation. TF Serving reads at most
1000 records (it refuses more), so the count is checked.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def warmup_records(model_name: str, images: np.ndarray, jpegs: list[bytes]) -> list[bytes]:
    """Serialized PredictionLog records: one per image (pixels) and one per JPEG (bytes)."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    def record(signature: str, key: str, tensor) -> bytes:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        request.inputs[key].CopyFrom(tensor)
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        return log.SerializeToString()

    out = [record("serving_default", "image", tf.make_tensor_proto(img[None].astype(np.float32)))
           for img in images]
    out += [record("predict_image_bytes", "image_bytes", tf.make_tensor_proto([jpeg], dtype=tf.string))
            for jpeg in jpegs]
    if len(out) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{len(out)} warmup records; TF Serving accepts at most {MAX_WARMUP_RECORDS}")
    return out


def write_warmup_requests(version_dir: Path, built, count: int = 3) -> Path:
    """Write `count` pixel and `count` JPEG warmup requests for `built` into version_dir."""
    import tensorflow as tf

    from export.model import samples
    images = samples.photos(built.input_size)[:count]
    jpegs = [samples.encode_jpeg(img) for img in images]
    path = Path(version_dir) / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for rec in warmup_records(built.spec.name, images, jpegs):
            writer.write(rec)
    return path


def read_warmup_requests(path: Path) -> list:
    """Parse the file back into PredictionLog messages (for verification and tests)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    logs = []
    for raw in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw.numpy())
        logs.append(log)
    return logs
