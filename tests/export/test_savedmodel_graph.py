"""What export.formats.savedmodel writes: the two signatures, with the model's graph stored once (the
bytes signature calls serving_default), and nothing else to restore, so every load is short."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

from tests.helpers import TINY_SIZE, tiny_built, tiny_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from export.formats.savedmodel import write_saved_model
    path = tmp_path_factory.mktemp("sm") / "1"
    write_saved_model(tiny_model(), path, TINY_SIZE)
    return path


def _meta_graph(path):
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    return sm.meta_graphs[0]


def test_the_models_graph_is_stored_once(saved):
    """ExportArchive.write_out saved each endpoint again as a restorable tf.function (traced anew), and
    the bytes signature traced the model itself: four copies of the graph, and loads ~0.7 s longer."""
    graph = _meta_graph(saved)
    with_conv = [f.signature.name for f in graph.graph_def.library.function
                 if any(n.op == "Conv2D" for n in f.node_def)]
    assert len(with_conv) == 1 and "serving_default" in with_conv[0], with_conv
    assert set(graph.signature_def) == {"serving_default", "predict_image_bytes", "__saved_model_init_op"}
    restorable = [c.local_name for c in graph.object_graph_def.nodes[0].children]
    assert "serving_default" not in restorable and "predict_image_bytes" not in restorable, restorable


def test_both_signatures_load_and_answer_alike(saved):
    import tensorflow as tf
    from PIL import Image

    from export.images import ImageContract, pil
    loaded = tf.saved_model.load(str(saved))
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    by_bytes = loaded.signatures["predict_image_bytes"](image_bytes=tf.constant([buf.getvalue()]))
    decoded = pil.decode(buf.getvalue(), ImageContract(TINY_SIZE))
    by_pixels = loaded.signatures["serving_default"](image=tf.constant(decoded[None]))
    assert set(by_bytes) == set(by_pixels) == {"logits", "probabilities"}
    for key in by_pixels:
        np.testing.assert_array_equal(by_bytes[key].numpy(), by_pixels[key].numpy())


def test_failure_mid_write_leaves_no_partial_version(tmp_path):
    """The version directory appears whole or not at all (a tiny model: the atomic write does not
    depend on its size; the ResNet50 exports of the e2e tests publish the same way)."""
    from export.formats import savedmodel
    built = tiny_built()

    def explode(version_dir, _built):
        (version_dir / "assets.extra").mkdir()
        raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        savedmodel.export(built, tmp_path, version=3, assets_writer=explode)
    model_dir = tmp_path / "tfserving" / built.spec.name
    assert list(model_dir.iterdir()) == []  # no "3", no temp dir left behind
    # An existing version is untouched by a failed overwrite.
    good = savedmodel.export(built, tmp_path, version=3)
    before = good.sha256
    with pytest.raises(RuntimeError):
        savedmodel.export(built, tmp_path, version=3, overwrite=True, assets_writer=explode)
    from export.formats import sha256_path
    assert sha256_path(model_dir / "3")[0] == before
    assert sorted(p.name for p in model_dir.iterdir()) == ["3"]
    assert oct(os.stat(model_dir / "3").st_mode & 0o777) != oct(0o700)
