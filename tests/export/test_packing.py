"""The bundle tarball: weights stored, text compressed, one .tar.gz that gzip, tar and Python read."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

from export.bundle.packing import COMPRESS_LEVEL, compress_level, write_tar_gz

pytestmark = pytest.mark.unit


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "b-1"
    (root / "onnx").mkdir(parents=True)
    weights = np.random.default_rng(0).standard_normal(400_000).astype(np.float32).tobytes()
    (root / "onnx" / "model.onnx").write_bytes(weights)
    (root / "README.md").write_text("# a bundle\n" + "the same line again\n" * 5000)
    (root / "empty.txt").write_text("")
    return root


def test_weights_are_stored_and_text_compressed(tree):
    assert compress_level(tree / "onnx" / "model.onnx") == 0
    assert compress_level(tree / "README.md") == COMPRESS_LEVEL
    assert compress_level(tree / "empty.txt") == COMPRESS_LEVEL


def test_a_weights_file_with_compressible_header_middle_and_end_is_stored(tmp_path):
    """Like a .tflite or .onnx file: compressible pieces where three samples (start, middle, end) would
    look, near-random bytes between (~80 % of it). Sampled at spread pieces, it is stored."""
    import zlib
    size, piece = 4 * 2**20, 256 * 1024
    data = bytearray(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())
    for start in (0, size // 2, size - piece):
        data[start:start + piece] = bytes(piece)
    path = tmp_path / "model_fp16.tflite"
    path.write_bytes(bytes(data))
    assert len(zlib.compress(bytes(data), 1)) > 0.75 * size  # compressing it saves under a quarter
    assert compress_level(path) == 0


def test_archive_reads_back_identically_everywhere(tree, tmp_path):
    out = tmp_path / "b-1.tar.gz"
    members = [(p, f"b-1/{p.relative_to(tree).as_posix()}") for p in sorted(tree.rglob("*"))]
    digest, counts = write_tar_gz(out, members)
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert counts == {"stored": 1, "compressed": 2}
    raw = gzip.decompress(out.read_bytes())  # every gzip member, concatenated
    assert len(raw) % 512 == 0
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
        assert sorted(names) == sorted(a for _, a in members)
        model = tar.extractfile("b-1/onnx/model.onnx")
        assert model is not None and model.read() == (tree / "onnx" / "model.onnx").read_bytes()
    size = out.stat().st_size
    weights, text = (tree / "onnx" / "model.onnx").stat().st_size, (tree / "README.md").stat().st_size
    assert weights < size < weights + text / 4, "weights stored as they are, README deflated"
    if shutil.which("tar") and shutil.which("gzip"):
        subprocess.run(["gzip", "-t", str(out)], check=True)
        dest = tmp_path / "x"
        dest.mkdir()
        subprocess.run(["tar", "xzf", str(out), "-C", str(dest)], check=True)
        assert (dest / "b-1" / "README.md").read_text() == (tree / "README.md").read_text()
