"""`verify --against`'s per-file comparison (export/bundle/reproducibility.py) on small bundles: identical
files, files that differ for a recorded reason with their stable part equal, and files that
differ where they must not. Deterministic writers: golden npz files and the ONNX constant names."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.bundle import reproducibility

pytestmark = pytest.mark.unit


@pytest.fixture
def pair(tmp_path):
    """Two copies of one small bundle: `a` and `b`."""
    a = tmp_path / "a" / "demo-1"
    (a / "tflite" / "demo").mkdir(parents=True)
    (a / "tflite" / "demo" / "model_fp32.tflite").write_bytes(b"TFL3" + bytes(100))
    (a / "artifacts.json").write_text(json.dumps({"artifacts": [
        {"path": "x", "format": "tflite", "seconds": 1.5, "sha256": "ab"},
        {"path": "sm", "format": "savedmodel", "seconds": 3.0, "sha256": "cd"}]}))
    (a / "parity.json").write_text(json.dumps({"created": "10:00",
                                               "results": [{"max_abs": 1e-6, "mean_ms": {"1": 3}}]}))
    (a / "manifest.json").write_text(json.dumps({"created_at": "10:00", "files": {}, "variants": {"demo": {}}}))
    b = tmp_path / "b" / "demo-1"
    shutil.copytree(a, b)
    return a, b


def by_path(diffs):
    return {d.path: (d.status, d.detail) for d in diffs}


def test_identical_bundles(pair):
    a, b = pair
    diffs = reproducibility.compare(a, b)
    assert {d.status for d in diffs} == {"identical"} and all(d.ok for d in diffs)
    assert reproducibility.render(diffs, "b").endswith("against b: 4 files: 4 identical")


def test_recorded_differences_with_equal_stable_parts_are_expected(pair):
    a, b = pair
    (b / "artifacts.json").write_text(json.dumps({"artifacts": [  # a SavedModel's digest covers fingerprint.pb
        {"path": "x", "format": "tflite", "seconds": 9.9, "sha256": "ab"},
        {"path": "sm", "format": "savedmodel", "seconds": 3.1, "sha256": "ef"}]}))
    (b / "parity.json").write_text(json.dumps({"created": "11:00",
                                               "results": [{"max_abs": 1e-6, "mean_ms": {"1": 7}}]}))
    (b / "manifest.json").write_text(json.dumps({"created_at": "11:00", "files": {}, "variants": {"demo": {}}}))
    (b / "signature.sig").write_text("{}")
    got = by_path(reproducibility.compare(a, b))
    assert got["artifacts.json"] == ("expected", "records each artifact's export time in seconds, and the "
                                                 "SavedModel directory's digest, which covers fingerprint.pb; "
                                                 "stable part equal (every other field)")
    assert got["parity.json"][0] == "expected" and got["manifest.json"][0] == "expected"
    assert got["signature.sig"] == ("expected", "only in the other bundle")
    assert got["tflite/demo/model_fp32.tflite"] == ("identical", "")


def test_differences_that_must_not_happen(pair):
    a, b = pair
    (b / "tflite" / "demo" / "model_fp32.tflite").write_bytes(b"TFL3" + bytes(99) + b"\x01")
    (b / "parity.json").write_text(json.dumps({"created": "10:00", "results": [{"max_abs": 0.5, "mean_ms": {"1": 3}}]}))
    (b / "manifest.json").write_text(json.dumps({"created_at": "10:00", "files": {}, "variants": {"other": {}}}))
    (b / "tflite" / "demo" / "extra.txt").write_text("x")
    (a / "artifacts.json").unlink()
    (b / "artifacts.json").write_text(json.dumps({"artifacts": [{"path": "x", "format": "tflite", "sha256": "00"}]}))
    diffs = reproducibility.compare(a, b)
    got = by_path(diffs)
    assert got["tflite/demo/model_fp32.tflite"][0] == "DIFFERENT"
    assert got["tflite/demo/model_fp32.tflite"][1].endswith("this file should be byte-identical")
    assert got["parity.json"][0] == "DIFFERENT" and got["parity.json"][1].startswith("the verdicts and error metrics")
    assert got["parity.json"][1].endswith("first at results[0].max_abs (1e-06 vs 0.5)")  # where, not only that
    assert got["manifest.json"][0] == "DIFFERENT"
    assert got["manifest.json"][1].endswith("first at variants.demo (only in this bundle)")
    assert got["tflite/demo/extra.txt"] == ("only-in-other", "")
    assert got["artifacts.json"] == ("only-in-other", "")
    assert not all(d.ok for d in diffs)


def test_record_names_the_volatile_files(pair):
    a, _ = pair
    record = reproducibility.record(a)
    assert set(record) == {"artifacts.json", "parity.json"}  # manifest.json does not describe itself
    assert record["artifacts.json"]["why"].startswith("records each artifact's export time in seconds")
    assert len(record["artifacts.json"]["stable_sha256"]) == 64


def test_golden_npz_bytes_depend_only_on_the_arrays(monkeypatch):
    import io
    import time

    from export.quality.golden import _npz_bytes
    arrays = {"image": np.arange(12, dtype=np.float32).reshape(3, 4), "names": np.array(["a", "bb"])}
    first = _npz_bytes(arrays)
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # what zipfile stamps members with
    monkeypatch.setattr(time, "localtime", lambda *a: time.gmtime(2_000_000_000))
    assert _npz_bytes(arrays) == first
    with np.load(io.BytesIO(first)) as f:
        assert f.files == ["image", "names"] and np.array_equal(f["image"], arrays["image"])


def test_fingerprint_digest_ignores_only_the_uuid_and_needs_no_tensorflow(tmp_path):
    """fingerprint.pb read from the wire format: the same hashes with another uuid digest alike,
    another checkpoint hash does not; and TensorFlow stays unimported (the unit marker's guard)."""
    from export.bundle.reproducibility import _fingerprint_digest

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def fingerprint(checkpoint_hash: int, uuid: str) -> Path:
        fields = [(1, 504993242524791617), (2, 17), (3, 2**63 + 5), (4, 9), (5, checkpoint_hash)]
        body = b"".join(varint(f << 3) + varint(v) for f, v in fields)
        body += varint(6 << 3 | 2) + varint(2) + varint(1 << 3) + varint(1)  # version {producer: 1}
        body += varint(7 << 3 | 2) + varint(len(uuid)) + uuid.encode()
        path = tmp_path / f"{checkpoint_hash}-{uuid}.pb"
        path.write_bytes(body)
        return path

    a, b = fingerprint(42, "1234567890"), fingerprint(42, "987654321")
    assert a.read_bytes() != b.read_bytes()
    assert _fingerprint_digest(a) == _fingerprint_digest(b)
    assert _fingerprint_digest(fingerprint(43, "1234567890")) != _fingerprint_digest(a)


def test_first_difference_names_the_json_path():
    assert reproducibility.first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) is None
    assert reproducibility.first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == "a[1].b (2 vs 3)"
    assert reproducibility.first_difference({"a": [1, 2]}, {"a": [1]}) == "a (length 2 vs 1)"
    assert reproducibility.first_difference({"x": 1}, {"y": 1}) == "x (only in this bundle)"
    assert reproducibility.first_difference(1, 2) == "the document (1 vs 2)"


@pytest.mark.parametrize("doc_change", ["hashes", "bytes"])
def test_bom_savedmodel_size_and_hash_are_volatile(tmp_path, doc_change):
    """fingerprint.pb's random uuid moves the SavedModel directory's digest and, at times, its size."""
    def bom(sha: str, size: str) -> dict:
        return {"serialNumber": "urn:uuid:1", "components": [{
            "name": "demo/savedmodel_fp32", "hashes": [{"alg": "SHA-256", "content": sha}],
            "properties": [{"name": "resnet-deploy:format", "value": "savedmodel"},
                           {"name": "resnet-deploy:bytes", "value": size}]}]}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(bom("aa", "100")))
    b.write_text(json.dumps(bom("bb", "100") if doc_change == "hashes" else bom("aa", "101")))
    v = reproducibility.volatile_for("bom.cdx.json")
    assert v is not None and v.digest is not None and v.digest(a) == v.digest(b)


def test_file_parity_measurements_are_volatile_and_verdicts_are_not(tmp_path):
    """Beam batches the files as they come: the measured differences move in their last bits between
    identical exports; a verdict, a top-1 agreement or a refusal must not."""
    def report(mean: float, passed: bool = True) -> dict:
        return {"passed": passed, "corpus": ["a.jpg"], "bad_files": {}, "rows": [
            {"path": "score", "max_prob_diff": 5e-5, "mean_prob_diff": mean, "worst_file": "a.jpg",
             "top1_agreement": 1.0, "passed": passed}]}
    v = reproducibility.volatile_for("file_parity.json")
    assert v is not None and v.digest is not None
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(report(8.357e-06)))
    b.write_text(json.dumps(report(8.409e-06)))
    c.write_text(json.dumps(report(8.357e-06, passed=False)))
    assert v.digest(a) == v.digest(b) and v.digest(a) != v.digest(c)
