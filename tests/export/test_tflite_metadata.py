"""TFLite Model Metadata on tiny real models: what the exporter writes is what MediaPipe's reader
reads back; the final file's hash is the recorded one; the int8 input takes raw pixels; the
pure-Python parser-version port follows the upstream table; bad inputs fail with one line."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY_SIZE
from tests.helpers import TINY_TFLITE_LABELS as LABELS

pytestmark = pytest.mark.integration

def test_metadata_fields_read_back(tiny_tflite):
    from export.deploy.tflite_metadata import read_metadata
    _, _, arts = tiny_tflite
    for precision, art in arts.items():
        md = read_metadata(art.path)
        assert (md.name, md.version, md.author, md.license) == ("tiny-test", "7", "The Tests", "Apache-2.0")
        assert md.description.startswith("A tiny test classifier; 10 classes; TFLite " + precision)
        assert md.input_name == "image" and md.color_space == "RGB"
        assert md.default_size == [TINY_SIZE, TINY_SIZE]  # ImageProperties.default_size: the contract's size
        assert f"Image contract v2 (aspect=stretch, size={TINY_SIZE}): EXIF orientation applied" in md.input_description
        if precision == "int8":  # uint8 pixels: no normalization, raw 0..255
            assert md.norm_mean is None and md.norm_std is None
        else:
            assert (md.norm_mean, md.norm_std) == ([0.0], [1.0])
        assert [o.name for o in md.outputs] == ["logits", "probabilities"]
        for o in md.outputs:
            assert o.labels_file == "labels.txt" and o.labels == LABELS
        assert "softmax" in md.output("probabilities").description
        assert md.min_parser_version == "1.0.0"
        assert md.associated_files == ["labels.txt"]
        assert art.details["metadata"]["outputs"] == [{"name": "logits", "labels_file": "labels.txt", "labels": 10},
                                                      {"name": "probabilities", "labels_file": "labels.txt",
                                                       "labels": 10}]


def test_metadata_order_follows_the_model_outputs(tiny_tflite):
    """TensorMetadata i describes subgraph output i: the names must match the signature's."""
    from ai_edge_litert.interpreter import Interpreter

    from export.deploy.tflite_metadata import read_metadata
    for art in tiny_tflite[2].values():
        interp = Interpreter(model_path=art.path)
        by_index = {d["index"]: name for name, d in interp.get_signature_runner().get_output_details().items()}
        assert [by_index[d["index"]] for d in interp.get_output_details()] == \
            [o.name for o in read_metadata(art.path).outputs]


def test_recorded_sha256_is_the_final_file(tiny_tflite):
    _, _, arts = tiny_tflite
    for art in arts.values():
        data = Path(art.path).read_bytes()
        assert art.sha256 == hashlib.sha256(data).hexdigest() and art.bytes == len(data)
        assert b"TFLITE_METADATA" in data  # the hashed bytes are the ones carrying the metadata


def _slices_concat_preprocess_model():
    """A tiny model with the in-graph preprocessing this project had before the 1x1 conv (channel
    slices + concat, minus the means), for which the converter gives the uint8 input a non-pixel scale."""
    import keras
    from keras import ops

    from export.model.build import CAFFE_BGR_MEAN
    keras.utils.set_random_seed(0)
    image = keras.Input((TINY_SIZE, TINY_SIZE, 3), dtype="float32", name="image")
    x = ops.concatenate([image[..., 2:3], image[..., 1:2], image[..., 0:1]], axis=-1) - np.array(CAFFE_BGR_MEAN, np.float32)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu")(x))
    logits = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(image, {"logits": logits, "probabilities": keras.layers.Softmax(name="probabilities")(logits)})


def test_int8_input_takes_raw_pixels(tiny_tflite):
    """With slices + concat in front, the converter gives the uint8 input scale ~1.485, zero point 83;
    raw_pixel_input relabels it (1, 0) and the outputs stay bit-identical. The project's own
    preprocessing (a 1x1 conv) already comes out of the converter at (1, 0)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from export.formats import tflite
    from export.model import samples
    _, _, arts = tiny_tflite
    assert Interpreter(model_path=arts["int8"].path).get_signature_runner().get_input_details()["image"][
        "quantization"] == (1.0, 0)
    conv = tf.lite.TFLiteConverter.from_keras_model(_slices_concat_preprocess_model())
    photos = samples.photos(TINY_SIZE)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([photos[i:i + 1]] for i in range(len(photos)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    raw = conv.convert()
    before = Interpreter(model_content=raw).get_signature_runner()
    scale, zero = before.get_input_details()["image"]["quantization"]
    assert (round(scale, 3), zero) == (1.485, 83)  # the problem being fixed is real
    after = Interpreter(model_content=tflite.raw_pixel_input(raw)).get_signature_runner()
    assert after.get_input_details()["image"]["quantization"] == (1.0, 0)
    assert tflite.raw_pixel_input(tflite.raw_pixel_input(raw)) == tflite.raw_pixel_input(raw)
    for image in photos[:4].astype(np.uint8):
        q = np.clip(np.round(image / scale + zero), 0, 255).astype(np.uint8)
        want, got = before(image=q[None]), after(image=image[None])
        for name in ("logits", "probabilities"):
            np.testing.assert_array_equal(got[name], want[name])


def test_model_without_metadata_reads_none(tiny_tflite):
    import tensorflow as tf

    from export.deploy.tflite_metadata import read_metadata
    plain = tf.lite.TFLiteConverter.from_keras_model(tiny_tflite[0].model).convert()
    assert read_metadata(plain) is None


def test_write_metadata_refuses_what_it_cannot_describe(tiny_tflite):
    import tensorflow as tf

    from export.core.errors import ExportError
    from export.deploy.tflite_metadata import ModelCard, write_metadata
    from export.model import samples
    built = tiny_tflite[0]
    plain = tf.lite.TFLiteConverter.from_keras_model(built.model).convert()
    card = ModelCard.for_model(built, "fp32")
    with pytest.raises(ExportError, match="output 'logits' has 10 classes but 3 labels were given"):
        write_metadata(plain, card, LABELS[:3])
    conv = tf.lite.TFLiteConverter.from_keras_model(_slices_concat_preprocess_model())
    photos = samples.photos(TINY_SIZE)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([photos[i:i + 1]] for i in range(len(photos)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    with pytest.raises(ExportError, match=r"uint8 input 'image' has scale 1\.48.* and zero point 83; MediaPipe feeds"):
        write_metadata(conv.convert(), card, LABELS)


def test_parser_version_port_follows_the_upstream_table():
    """The workaround's GetMinimumMetadataParserVersion (mediapipe's metadata_version.cc in
    Python): 1.0.0 by default, raised by each member added to the schema later."""
    import flatbuffers

    from export.deploy.tflite_metadata import _mediapipe_metadata
    _, _, fb = _mediapipe_metadata()
    version = sys.modules["mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"].GetMinimumMetadataParserVersion

    def pack(md) -> bytes:
        b = flatbuffers.Builder(0)
        b.Finish(md.Pack(b), b"M001")
        return bytes(b.Output())

    def with_file(kind: int, file_version: str | None = None):
        md, sub, t, f = fb.ModelMetadataT(), fb.SubGraphMetadataT(), fb.TensorMetadataT(), fb.AssociatedFileT()
        f.name, f.type, f.version = "x.txt", kind, file_version
        t.associatedFiles = [f]
        sub.outputTensorMetadata = [t]
        md.subgraphMetadata = [sub]
        return md

    assert version(pack(with_file(fb.AssociatedFileType.TENSOR_AXIS_LABELS))) == "1.0.0"
    assert version(pack(with_file(fb.AssociatedFileType.VOCABULARY))) == "1.0.1"
    assert version(pack(with_file(fb.AssociatedFileType.SCANN_INDEX_FILE))) == "1.4.0"
    assert version(pack(with_file(fb.AssociatedFileType.TENSOR_AXIS_LABELS, "2"))) == "1.4.1"
    md = with_file(fb.AssociatedFileType.TENSOR_AXIS_LABELS)
    md.subgraphMetadata[0].inputProcessUnits = []
    assert version(pack(md)) == "1.1.0"
    md.subgraphMetadata[0].outputTensorGroups = []
    assert version(pack(md)) == "1.2.0"
    md.subgraphMetadata[0].customMetadata = []
    assert version(pack(md)) == "1.5.0"


def test_conversions_from_one_savedmodel_load_it_once_and_give_the_same_bytes(tiny, monkeypatch):
    """The TFLite task converts four precisions from one SavedModel: the converter's Python-side loads
    (two per conversion: signatures, then debug info) are one load in the process, and the files are
    byte for byte what the converter writes loading it every time."""
    import contextlib

    from tensorflow.lite.python import lite

    from export.formats import tflite
    from tests.helpers import tiny_built
    built = tiny_built()  # only its name is read for these precisions: the graph is the SavedModel's
    sm = tiny["savedmodel"]  # the session's tiny SavedModel (serving_default)
    loads = []
    real_load = lite._load
    monkeypatch.setattr(lite, "_load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    tflite._LOADED.clear()
    once = {p: tflite.convert(built, p, sm) for p in ("fp32", "dynamic")}
    assert loads == [str(sm)]
    monkeypatch.setattr(tflite, "_saved_model_loaded_once", contextlib.nullcontext)
    every_time = {p: tflite.convert(built, p, sm) for p in ("fp32", "dynamic")}
    assert len(loads) == 1 + 2 * 2
    assert once == every_time
    tflite._LOADED.clear()


def test_tensorflow_is_hidden_only_from_the_thread_that_hides_it():
    """tensorflow_hidden's finder refuses TensorFlow to its own thread (MediaPipe's imports then take
    their fallbacks) and lets any other thread import it meanwhile (a server query thread, say);
    leaving the block removes it."""
    import threading

    from export.deploy import tflite_metadata
    finder = tflite_metadata._NoTensorFlow()
    with pytest.raises(ModuleNotFoundError):
        finder.find_spec("tensorflow.tools.docs")
    assert finder.find_spec("mediapipe") is None
    elsewhere: list = []
    other = threading.Thread(target=lambda: elsewhere.append(finder.find_spec("tensorflow")))
    other.start()
    other.join()
    assert elsewhere == [None]
    before = list(sys.meta_path)
    with tflite_metadata.tensorflow_hidden():
        pass
    assert sys.meta_path == before
