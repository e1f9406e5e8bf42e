"""manifest.json as a typed, versioned document: JSON round-trip, unknown fields kept, other
format versions and malformed manifests refused with one line."""
from __future__ import annotations

import json

import pytest

from export.bundle.manifest import FileEntry, Manifest, ParitySummary, ParityVerdict, StageTiming, VariantRecord
from export.core.errors import BundleError
from export.formats import Artifact

pytestmark = pytest.mark.unit


def _manifest() -> Manifest:
    art = Artifact(path="tflite/dense/model_int8.tflite", format="tflite", precision="int8", variant="dense",
                   sha256="ab" * 32, bytes=123, inputs=[{"name": "image", "dtype": "uint8", "shape": [None, 224, 224, 3]}],
                   outputs=[{"name": "logits", "dtype": "uint8", "shape": [None, 10]}],
                   tool_versions={"tensorflow": "2.21.0"}, seconds=1.5, details={"quantization": {"scale": 0.5}})
    return Manifest(
        name="heads", version=3, created_at="2026-11-30T00:00:00+00:00", tool_versions={"keras": "3.15.1"},
        config="configs/variants.toml",
        variants={"dense": VariantRecord(spec={"name": "dense", "head": []}, num_classes=10,
                                         labels=[f"c{i}" for i in range(10)], params={"trainable": 20490},
                                         inputs={"image": {}}, outputs={"logits": {}}, weights={"source": "random:0"},
                                         training={"val_accuracy": 0.9}, extra={"future": {"kept": True}})},
        artifacts=[art], parity=ParitySummary(passed=False, counts={"passed": 1, "failed": 1}, failures=["x"]),
        export_timings=[StageTiming("dense", "export", 12.5)], git={"commit": "abc", "dirty": False},
        files={"README.md": FileEntry("cd" * 32, 10)}, extra={"signature": {"kind": "key"}})


def test_round_trip_through_json():
    m = _manifest()
    text = json.dumps(m.to_dict())
    back = Manifest.from_dict(json.loads(text))
    assert back == m
    assert back.parity.verdict is ParityVerdict.FAILED
    d = json.loads(text)
    assert d["format_version"] == 1 and list(d)[-1] == "files"
    assert d["signature"] == {"kind": "key"} and d["variants"]["dense"]["training"] == {"val_accuracy": 0.9}
    assert d["variants"]["dense"]["future"] == {"kept": True} and back.variants["dense"].extra == {"future": {"kept": True}}


def test_other_format_version_and_malformed_are_refused():
    d = _manifest().to_dict()
    with pytest.raises(BundleError, match="has manifest format 2, expected 1"):
        Manifest.from_dict({**d, "format_version": 2})
    del d["name"]
    with pytest.raises(BundleError, match=r"is not a valid manifest \(KeyError: 'name'\); re-export the bundle"):
        Manifest.from_dict(d)
