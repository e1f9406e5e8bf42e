"""The image contract's two twins agree: export.images.tf_ops (in the SavedModel graph) and
export.images.pil (everywhere else), to one grey level per pixel on a corpus of every kind,
sizes up to a 3000-px JPEG, all 8 EXIF orientations and both aspect policies."""
from __future__ import annotations

import numpy as np
import pytest

from export.images import ImageContract, corpus, header, pil

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files():
    return {**corpus.files(large=True)}


@pytest.fixture(scope="module")
def tf_decode():
    import tensorflow as tf

    from export.images import tf_ops
    fns = {}

    def run(data: bytes, contract: ImageContract):
        if contract not in fns:
            fns[contract] = tf.function(lambda d: tf_ops.decode(d, contract),
                                        input_signature=[tf.TensorSpec([], tf.string)])
        return fns[contract](tf.constant(data)).numpy()
    return run


@pytest.mark.parametrize("aspect", ["stretch", "center_crop"])
def test_twins_agree_to_one_grey_level(files, tf_decode, aspect):
    contract = ImageContract(224, aspect)
    worst = {}
    for name, data in files.items():
        a, b = pil.decode(data, contract), tf_decode(data, contract)
        assert a.shape == b.shape == (224, 224, 3), name
        worst[name] = float(np.abs(a - b).max())
    assert max(worst.values()) <= 1.0, {k: v for k, v in worst.items() if v > 1.0}


def test_twins_agree_at_small_sizes(files, tf_decode):
    for name in ("astronaut_160.jpg", "chelsea_exif6.jpg", "coins_grey16.png", "coffee.gif"):
        contract = ImageContract(96, "stretch")
        assert np.abs(pil.decode(files[name], contract) - tf_decode(files[name], contract)).max() <= 1.0, name


def test_in_graph_exif_orientation_matches_the_python_reader(files):
    import tensorflow as tf

    from export.images import tf_ops
    for name, data in files.items():
        assert int(tf_ops.exif_orientation(tf.constant(data))) == header.exif_orientation(data), name
    assert [int(tf_ops.exif_orientation(tf.constant(files[f"chelsea_exif{o}.jpg"]))) for o in range(1, 9)] == \
        list(range(1, 9))


@pytest.mark.parametrize("name, message", [
    ("truncated.jpg", "Invalid JPEG data"),
    ("text.jpg", "not a JPEG, PNG, GIF, BMP or WebP file"),
    ("empty.png", "not a JPEG, PNG, GIF, BMP or WebP file"),
])
def test_bad_files_fail_in_the_graph(tf_decode, name, message):
    import tensorflow as tf
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        tf_decode(corpus.bad_files()[name], ImageContract())
