"""`make export` with a `data` key: the variant is trained (a cached run reused after), its trained
model exported, and the bundle carries the real class names and the training provenance."""
from __future__ import annotations

import json

import pytest

from export.core.atomic import sha256_file
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e

CONFIG = """
name = "trained"
version = 1
weights = "random:0"
[[variants]]
name = "dense"
data = "demo:lfw_subset"
precisions = ["fp32"]
train = { max_per_class = 10, epochs = 3 }
"""


def test_bundle_ships_the_trained_model_with_real_labels(tmp_path):
    cfg = tmp_path / "variants.toml"
    cfg.write_text(CONFIG)
    runs = tmp_path / "runs"
    r = run_cli("bundle", "--config", str(cfg), "--out", str(tmp_path / "dist"), "--runs", str(runs))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    root = tmp_path / "dist" / "trained-1"
    assert (root / "tflite/dense/labels.txt").read_text().split() == ["face", "non_face"]
    assert sorted(p.name for p in (runs / "data" / "lfw_subset").iterdir()) == ["face", "non_face"]

    manifest = json.loads((root / "manifest.json").read_text())
    dense = manifest["variants"]["dense"]
    training = dense["training"]
    (run,) = [p for p in runs.iterdir() if p.name.startswith("dense-")]
    metrics = json.loads((run / "metrics.json").read_text())
    assert dense["labels"] == ["face", "non_face"] and dense["num_classes"] == 2
    assert training["data"] == "demo:lfw_subset" and training["cached"] is False
    assert training["data_sha256"] == metrics["data"]["sha256"] and len(training["data_sha256"]) == 64
    assert training["val_accuracy"] == metrics["val"]["accuracy"] and training["images_per_class"] == {"face": 10,
                                                                                                       "non_face": 10}
    assert training["settings"]["epochs"] == 3 and training["weights"] == "random:0"
    assert training["run_key"].startswith(run.name.removeprefix("dense-"))
    assert dense["weights"]["kind"] == "file" and dense["weights"]["sha256"] == sha256_file(run / "model.keras")
    assert "train" in {t["stage"] for t in manifest["export_timings"]}
    readme = (root / "README.md").read_text()
    assert f"trained from `random:0` on `demo:lfw_subset` (20 images): **val accuracy {metrics['val']['accuracy']:.3f}**" \
        in readme

    # The accuracy gate: the run's validation split is the eval set of every artifact (issue 12).
    parity_doc = json.loads((root / "parity.json").read_text())
    (section,) = parity_doc["accuracy"]
    assert section["eval_set"]["count"] == metrics["val"]["images"] == 4
    assert section["eval_set"]["source"] == f"validation split of training run {run.name}"
    assert section["reference"]["accuracy"] == pytest.approx(metrics["val"]["accuracy"], abs=1e-4)
    assert {r["label"]: r["status"] for r in section["results"]} == {
        "dense/savedmodel_fp32": "passed", "dense/tflite_fp32": "passed", "dense/onnx_fp32": "passed"}
    assert manifest["accuracy"]["passed"] is True and manifest["accuracy"]["dropped"] == []
    assert "## Accuracy on labeled images" in (root / "parity.md").read_text()
    assert json.loads((root / "golden/dense/eval.json").read_text())["eval_set"]["count"] == 4

    # The bundle documents itself (issue 26): card, CycloneDX BOM and report.html, listed in the manifest.
    assert {"MODEL_CARD.md", "bom.cdx.json", "report.html"} <= set(manifest["files"])
    card = (root / "MODEL_CARD.md").read_text()
    assert f"Training validation accuracy **{metrics['val']['accuracy']:.3f}**" in card
    assert "**A demonstration model, not for real use**" in card and f"`{training['data_sha256']}`" in card
    from export.bundle import bom
    bom_text = (root / "bom.cdx.json").read_text()
    assert bom.validate_text(bom_text) == []
    assert {c["name"]: c["hashes"][0]["content"] for c in json.loads(bom_text)["components"]
            if c["type"] == "machine-learning-model"} == {
        f"{a['variant']}/{a['format']}_{a['precision']}": a["sha256"] for a in manifest["artifacts"]}
    html = (root / "report.html").read_text()
    for chart in ("accuracy", "parity", "training", "confusion"):
        assert f'<figure class="chart" id="chart-dense-{chart}"><svg' in html, chart
    verified = run_cli("verify", str(root), "--skip-parity")
    assert verified.returncode == 0 and "bom: CycloneDX 1.6 valid, 3 model hashes equal the manifest's" in verified.stdout

    again = run_cli("train", "--config", str(cfg), "--runs", str(runs), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    (summary,) = json.loads(again.stdout)
    assert summary["cached"] is True and summary["run"] == str(run)
