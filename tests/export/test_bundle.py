"""`make export` bundles: layout, manifest checksums, verify, safe unpacking, atomic publishing,
and the trained head's provenance. Most tests read the session's `published` bundle
(tests/export/conftest.py: the dense head trained on the demo faces, fp32 and fp16)."""
from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from export.bundle import layout as bundle
from export.bundle import packing
from export.core.atomic import sha256_file
from export.core.errors import BundleError
from tests.helpers import ROOT, run_cli, run_main

#: An untrained bundle of the same name (labels from the config): the failed-parity test's model.
CONFIG = """
name = "smoke"
version = 3
weights = "{weights}"
[[variants]]
name = "dense"
labels = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"]
precisions = ["fp32", "fp16"]   # fp16 brings the OpenVINO IR (fp16 weights) and TFLite fp16
"""


@pytest.mark.e2e
def test_bundle_layout(published):
    _, root, _ = published
    expected = ["manifest.json", "models.config", "batching.config", "monitoring.config", "parity.json",
                "parity.md", "README.md", "tfserving/dense/3/saved_model.pb",
                "tfserving/dense/3/assets.extra/tf_serving_warmup_requests", "tflite/dense/model_fp32.tflite",
                "tflite/dense/labels.txt", "onnx/dense/model.onnx", "openvino/dense/3/model.xml",
                "openvino/dense/3/model.bin", "golden/dense/inputs.npz",
                "golden/dense/outputs.npz", "deploy/kubernetes/deployment.yaml", "deploy/kubernetes/configmap.yaml",
                "deploy/kubernetes/service.yaml", "deploy/kubernetes/hpa.yaml", "deploy/kubernetes/pdb.yaml",
                "deploy/kserve/inferenceservice.yaml", "MODEL_CARD.md", "bom.cdx.json", "report.html"]
    for rel in expected:
        assert (root / rel).is_file(), rel
    tar = root.with_name("smoke-3.tar.gz")
    digest = (root.with_name("smoke-3.tar.gz.sha256")).read_text().split()[0]
    assert bundle.sha256_file(tar) == digest
    hidden = [p.name for p in root.parent.iterdir() if p.name.startswith(".")]
    assert hidden == [".resnet-deploy.lock"], "staging left behind"
    with tarfile.open(tar) as t:
        assert "smoke-3/signature.sig" in t.getnames(), "the tarball carries the signature"
    readme = (root / "README.md").read_text()
    assert "tensorflow_model_server" in readme and "tensorflow/serving" in readme
    assert "--model_path /models/openvino/dense" in readme and "--backend openvino:bf16" in readme
    assert "**not run on the machines that built and tested this bundle**" in readme
    assert "--mixed_precision=bfloat16" in readme
    config = readme.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(config)["model_config_list"][0]["config"]["base_path"] == "/models/openvino/dense"
    run = json.loads(root.with_name("smoke-3.export.json").read_text())  # what the export cost, beside it
    assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["peak_total_rss_mb"] > 0 and run["workers"] >= 1
    assert set(run["pool"]["tasks"]) == {"dense:train", "dense:keras", "dense:tflite", "dense:onnx", "dense:openvino"}
    assert {t["stage"] for t in run["stages"]} >= {"build", "parity", "bundle", "pack"}
    assert (root / "tflite/dense/labels.txt").read_text().split() == ["face", "non_face"]
    # no storage_uri in the config: the manifests carry the marked placeholder
    assert "PLACEHOLDER storage URI" in (root / "deploy/kubernetes/deployment.yaml").read_text()
    assert "smoke-3/tfserving/dense" in (root / "deploy/kserve/inferenceservice.yaml").read_text()


@pytest.mark.e2e
def test_manifest_checksums_match_files(published):
    _, root, _ = published
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["files"], "empty manifest"
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [p for p in on_disk if p not in ("manifest.json", "signature.sig")]
    for rel, rec in manifest["files"].items():
        assert bundle.sha256_file(root / rel) == rec["sha256"], rel
        assert (root / rel).stat().st_size == rec["bytes"], rel
    assert manifest["parity"]["passed"] is True
    assert manifest["variants"]["dense"]["weights"]["kind"] == "file"  # the trained run's model.keras
    assert manifest["variants"]["dense"]["params"]["trainable"] == 2048 * 2 + 2
    assert {a["format"] for a in manifest["artifacts"]} == {"savedmodel", "tflite", "onnx", "openvino"}
    ir = next(a for a in manifest["artifacts"] if a["format"] == "openvino" and a["precision"] == "fp16")
    assert ir["path"] == "openvino/dense/3/model.xml"
    # the config's precisions (fp32, fp16) leave int8 out, the NNCF IR with it
    assert not any(a["format"] == "openvino" and a["precision"] == "int8" for a in manifest["artifacts"])
    assert ir["bytes"] == sum(manifest["files"][f"openvino/dense/3/{n}"]["bytes"] for n in ("model.xml", "model.bin"))
    assert set(manifest["tool_versions"]) >= {"tensorflow", "keras", "tf2onnx", "onnxruntime", "openvino"}
    assert len(manifest["git"]["commit"]) in (40, 7) or manifest["git"]["commit"] == "unknown"
    assert {t["stage"] for t in manifest["export_timings"]} >= {"build", "savedmodel", "golden", "tflite", "onnx",
                                                                 "openvino", "parity"}
    volatile = manifest["reproducibility"]
    assert set(volatile) == {"tfserving/dense/3/fingerprint.pb", "artifacts.json", "parity.json", "parity.md",
                             "README.md", "bom.cdx.json", "report.html"}  # BOM serial and timestamp; report's export time
    assert "random uuid" in volatile["tfserving/dense/3/fingerprint.pb"]["why"]
    assert len(volatile["tfserving/dense/3/fingerprint.pb"]["stable_sha256"]) == 64


@pytest.mark.e2e
def test_config_files_parse_with_tf_serving_protos(published):
    from export.deploy import tfserving as config
    _, root, _ = published
    models = config.parse_models_config((root / "models.config").read_text())
    (entry,) = models.model_config_list.config
    assert entry.name == "dense" and entry.base_path.endswith("tfserving/dense")
    assert list(entry.model_version_policy.specific.versions) == [3]
    assert entry.version_labels["stable"] == 3
    batching = config.parse_batching_config((root / "batching.config").read_text())
    assert batching.max_batch_size.value >= 1
    monitoring = config.parse_monitoring_config((root / "monitoring.config").read_text())
    assert monitoring.prometheus_config.enable


@pytest.mark.e2e
def test_verify_passes_on_directory_and_tarball(published):
    work, root, _ = published
    r = run_cli("verify", str(root), "--public-key", str(work / "signing-key.pub.pem"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.startswith("signature: signed by key ") and "every file matches the signature" in r.stdout
    assert "verified" in r.stdout and "0 changed, 0 missing, 0 extra" in r.stdout
    n = len(bundle.read_manifest(root).artifacts)
    assert f"bom: CycloneDX 1.6 valid, {n} model hashes equal the manifest's" in r.stdout
    assert "| dense/openvino_fp16 @ f32 | openvino | CPU | fp16 |" in r.stdout  # parity re-ran the IR
    assert "| dense/openvino_fp16 @ bf16 | openvino |" in r.stdout
    r = run_cli("verify", str(root.with_name("smoke-3.tar.gz")), "--skip-parity",
                "--public-key", str(work / "signing-key.pub.pem"))
    assert r.returncode == 0 and "verified" in r.stdout and "signature: signed by key" in r.stdout


@pytest.mark.e2e
def test_verify_with_a_key_refuses_tampered_and_foreign_bundles_before_loading_them(published, tmp_path):
    from tests.export import pki
    work, root, _ = published
    _, stranger, _ = pki.write_key_pair(tmp_path, "stranger")
    r = run_cli("verify", str(root), "--public-key", str(stranger))
    assert r.returncode == 1
    assert r.stdout.startswith("FAIL signature (wrong key): smoke-3 was signed with another key (key id ")
    assert "parity: skipped: the signature failed, so the artifacts are not loaded" in r.stdout
    copy = tmp_path / "smoke-3"
    shutil.copytree(root, copy)
    (copy / "models.config").write_text((copy / "models.config").read_text().replace("dense", "evil"))
    r = run_cli("verify", str(copy), "--public-key", str(work / "signing-key.pub.pem"))
    assert r.returncode == 1
    assert r.stdout.startswith("FAIL signature (tampered): files changed since signing: changed models.config")
    assert "FAIL changed: models.config" in r.stdout and "verification FAILED" in r.stdout
    (copy / "signature.sig").unlink()
    r = run_cli("verify", str(copy), "--skip-parity", "--public-key", str(work / "signing-key.pub.pem"))
    assert r.returncode == 1 and r.stdout.startswith("FAIL signature (unsigned): smoke-3 is not signed")
    r = run_cli("verify", str(copy), "--skip-parity", "--public-key", str(tmp_path / "missing.pem"))
    assert (r.returncode, r.stderr) == (2, f"error: public key {tmp_path / 'missing.pem'} not found\n")


@pytest.mark.e2e
def test_verify_names_flipped_missing_and_extra_files(published, tmp_path):
    _, root, _ = published
    copy = tmp_path / "smoke-3"
    shutil.copytree(root, copy)
    target = copy / "tflite/dense/model_fp32.tflite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    (copy / "onnx/dense/model.onnx").unlink()
    ir = copy / "openvino/dense/3/model.bin"
    data = bytearray(ir.read_bytes())
    data[-1] ^= 0x01
    ir.write_bytes(bytes(data))
    (copy / "tfserving/dense/3/notes.txt").write_text("not from the pipeline")
    r = run_cli("verify", str(copy), "--skip-parity")
    assert r.returncode == 1
    assert "FAIL changed: tflite/dense/model_fp32.tflite" in r.stdout
    assert "FAIL missing: onnx/dense/model.onnx" in r.stdout
    assert "FAIL changed: openvino/dense/3/model.bin" in r.stdout
    assert "FAIL extra: tfserving/dense/3/notes.txt" in r.stdout
    assert "verification FAILED" in r.stdout


def _tarball(path: Path, add) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("b/manifest.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        add(tar)
    return path


@pytest.mark.unit
@pytest.mark.parametrize("kind,message", [
    ("absolute", "absolute path or '..'"),
    ("dotdot", "absolute path or '..'"),
    ("symlink", "points outside the bundle"),
    ("hardlink", "points outside the bundle"),
    ("device", "device file or FIFO"),
    ("fifo", "device file or FIFO"),
])
def test_malicious_tarballs_are_refused(tmp_path, kind, message):
    def add(tar):
        if kind in ("absolute", "dotdot"):
            info = tarfile.TarInfo("/etc/evil" if kind == "absolute" else "b/../../evil")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
            return
        info = tarfile.TarInfo("b/link")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        else:
            info.type = tarfile.FIFOTYPE
        tar.addfile(info)

    evil = _tarball(tmp_path / "evil.tar.gz", add)
    dest = tmp_path / "out"
    with pytest.raises(BundleError, match=message):
        packing.unpack(evil, dest)
    assert not (tmp_path / "evil").exists() and not list(dest.rglob("*"))
    r = run_cli("verify", str(evil))
    assert r.returncode == 2 and r.stderr.startswith("error: refusing to unpack")


@pytest.mark.unit
@pytest.mark.parametrize("data", [b"x", gzip.compress(b"not a tar archive\n" * 40)], ids=["garbage", "gzip-of-text"])
def test_a_file_that_is_not_a_tarball_is_one_line(tmp_path, data):
    """`verify` refuses it in one line, before loading TensorFlow (which only its parity step needs)."""
    path = tmp_path / "bundle.tar.gz"
    path.write_bytes(data)
    r = run_cli("verify", str(path))
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr == (f"error: cannot unpack {path}: not a tar archive (plain, gzip, bzip2 or xz); pass a bundle "
                        "directory or its .tar.gz\n")


@pytest.mark.e2e
def test_killed_pipeline_leaves_previous_bundle_intact(published):
    work, root, cfg = published
    runs = str(work / "runs")  # the cached training run: no test trains into the checkout's runs/
    before = bundle.file_table(root)
    proc = subprocess.Popen([sys.executable, "-m", "export.cli", "bundle", "--config", str(cfg),
                             "--out", str(root.parent), "--runs", runs], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        # Kill it once the new bundle is half written: its staged SavedModel exists.
        while time.monotonic() < deadline and proc.poll() is None:
            if list(root.parent.glob(".smoke-3.*.partial/smoke-3/tfserving/dense/3")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "pipeline finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert bundle.file_table(root) == before
    visible = sorted(p.name for p in root.parent.iterdir() if not p.name.startswith("."))
    assert visible == ["smoke-3", "smoke-3.export.json", "smoke-3.tar.gz", "smoke-3.tar.gz.sha256"]
    (partial,) = root.parent.glob(".smoke-3.*.partial")
    assert not (partial / "smoke-3" / "manifest.json").exists()
    # The next run on the same --out removes it, says so in one line, then works as usual (stopped here).
    nxt = subprocess.Popen([sys.executable, "-m", "export.cli", "bundle", "--config", str(cfg),
                            "--out", str(root.parent), "--runs", runs], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        line = nxt.stderr.readline()
        assert re.fullmatch(rf"removed 1 stale staging entry \(\d+ MB\) in {re.escape(str(root.parent))} left by an "
                            rf"interrupted run \(pid {proc.pid} \(resnet-deploy bundle --config {re.escape(str(cfg))}, "
                            rf"since [^)]+\), no longer running\): {re.escape(partial.name)} \(\d+ MB\)\n", line), line
        assert not partial.exists()
    finally:
        nxt.send_signal(signal.SIGTERM)  # its own staging is removed on SIGTERM
        nxt.wait(timeout=120)
        nxt.stderr.close()
    assert sorted(p.name for p in root.parent.iterdir() if p.name.startswith(".")) == [".resnet-deploy.lock"]
    assert bundle.file_table(root) == before


@pytest.mark.e2e
def test_same_config_twice_gives_byte_identical_artifacts(published, tmp_path):
    """A second `make export` of the same commit, config and weights: every artifact byte-identical,
    the rest differing only where the manifest says why, with the stable part equal."""
    work, root, cfg = published
    r = run_cli("bundle", "--config", str(cfg), "--out", str(tmp_path / "dist"), "--runs", str(work / "runs"))
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((tmp_path / "dist" / "smoke-3" / "manifest.json").read_text())
    assert again["variants"]["dense"]["training"]["cached"] is True  # the same run, reused
    r = run_cli("verify", str(tmp_path / "dist" / "smoke-3"), "--skip-parity", "--against", str(root))
    assert r.returncode == 0, r.stdout[-3000:]
    status = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()
              if len(line.split()) > 1 and line.split()[1] in ("identical", "expected", "DIFFERENT")}
    identical = ["tfserving/dense/3/saved_model.pb", "tfserving/dense/3/variables/variables.data-00000-of-00001",
                 "tfserving/dense/3/variables/variables.index",
                 "tfserving/dense/3/assets.extra/tf_serving_warmup_requests",
                 "tflite/dense/model_fp32.tflite", "tflite/dense/labels.txt", "onnx/dense/model.onnx",
                 "golden/dense/inputs.npz", "golden/dense/outputs.npz", "golden/dense/meta.json", "models.config",
                 "batching.config", "monitoring.config"]
    assert {f: status.get(f) for f in identical} == dict.fromkeys(identical, "identical")
    for f in ("tfserving/dense/3/fingerprint.pb", "manifest.json", "artifacts.json", "parity.json"):
        assert status[f] == "expected", f
    assert "stable part equal (the fingerprint without its uuid" in r.stdout
    assert "signature.sig" in r.stdout and "only in the other bundle" in r.stdout


@pytest.mark.e2e
def test_concurrent_run_on_the_same_out_is_refused(published, tmp_path):
    work, _, cfg = published
    first = subprocess.Popen([sys.executable, "-m", "export.cli", "bundle", "--config", str(cfg),
                              "--out", str(tmp_path / "dist"), "--runs", str(work / "runs")], cwd=ROOT,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not list((tmp_path / "dist").glob(".smoke-3.*.partial")):
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended before the second started"
        r = run_cli("bundle", "--config", str(cfg), "--out", str(tmp_path / "dist"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"error: {tmp_path / 'dist'} is in use by pid {first.pid} (resnet-deploy bundle "
                                   f"--config {cfg}, since ")
        assert r.stderr.endswith("; wait for it to finish, pass --wait, or choose another --out\n")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert not list((tmp_path / "dist").glob(".smoke-3.*.partial")), "SIGTERM cleans up its staging"


@pytest.mark.e2e
def test_failed_parity_is_not_published(published, tmp_path):
    """A saturated model fails the parity check: no bundle, the old one stays, the report is kept."""
    from export.model.build import build
    from export.model.variants import get_variant
    _work, root, _ = published
    built = build(get_variant("dense"))
    logits = built.model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel * 1000.0, bias * 1000.0])
    weights = tmp_path / "saturated.weights.h5"
    built.model.save_weights(weights)
    cfg = tmp_path / "variants.toml"
    cfg.write_text(CONFIG.format(weights=weights))
    before = bundle.file_table(root)
    r = run_cli("bundle", "--config", str(cfg), "--out", str(root.parent))
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "NOT published" in r.stdout
    assert bundle.file_table(root) == before
    report = root.parent / "smoke-3.parity-FAILED.md"
    assert report.is_file() and "saturated" in report.read_text().lower()
    # Stopped early: the reference failed its check, so nothing was converted or checked.
    doc = json.loads((root.parent / "smoke-3.parity-FAILED.json").read_text())
    assert doc["results"] == [] and doc["references"][0]["failures"][-1].startswith("nothing converted: ")
    assert "dense/reference: nothing converted: the reference failed its check" in r.stdout
    assert not (root.parent / "smoke-3.parity-FAILED").exists()
    report.unlink()
    (root.parent / "smoke-3.parity-FAILED.json").unlink()


@pytest.mark.integration
@pytest.mark.parametrize("text,message", [
    ("name = 'x'\nversion = 0\n[[variants]]\nname='dense'\n", "version = 0: input should be greater than or equal to 1"),
    ("name = 'x'\n", "variants is required (at least one [[variants]] table with a name)"),
    ("name = 'x'\n[[variants]]\nname='dense'\ncolour='red'\n", "variant 'dense': unknown key 'colour'; allowed: "),
    ("name = 'x'\n[[variants]]\nname='nope'\n", "unknown variant 'nope'"),
    ("name = 'x'\n[[variants]]\nname='dense'\nprecisions=['int4']\n",
     "variant 'dense': precisions.0 = 'int4': input should be 'fp32', 'fp16', 'dynamic' or 'int8'"),
    ("name = [\n", "is not valid TOML"),
    ("name = 'x'\nstorage_uri = 'ftp://host/models'\n[[variants]]\nname='dense'\n",
     "storage_uri scheme ftp:// is not one KServe supports"),
])
def test_bad_config_is_a_one_line_error(tmp_path, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    r = run_main("bundle", "--config", str(cfg), "--out", str(tmp_path / "dist"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


@pytest.mark.e2e
def test_bundle_tflite_metadata_and_device_readme(published):
    """The bundle's .tflite carries the config's metadata (name, version, labels inside), its
    manifest hash is the final file's, and the README names the file to copy for MediaPipe."""
    from export.deploy.tflite_metadata import read_metadata
    _, root, _ = published
    manifest = json.loads((root / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["format"] == "tflite")
    md = read_metadata(root / art["path"])
    assert (md.name, md.version, md.author, md.license) == ("smoke-dense", "3", "resnet-deploy", "unspecified")
    assert md.output("probabilities").labels == ["face", "non_face"]
    assert art["sha256"] == manifest["files"][art["path"]]["sha256"] == bundle.sha256_file(root / art["path"])
    readme = (root / "README.md").read_text()
    assert "Copy **`tflite/dense/model_fp32.tflite`** into the app" in readme
    assert "ImageClassifier.createFromOptions(context, options)" in readme
    assert "try classifier.classify(image: try MPImage(uiImage: uiImage))" in readme


@pytest.mark.e2e
def test_bundle_ships_the_trained_model_with_real_labels(published):
    """`make export` with a `data` key: the variant is trained (a cached run reused after), its trained
    model exported, and the bundle carries the real class names and the training provenance."""
    work, root, cfg = published
    runs = work / "runs"
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
        "dense/savedmodel_fp32": "passed", "dense/tflite_fp32": "passed", "dense/tflite_fp16": "passed",
        "dense/onnx_fp32": "passed", "dense/openvino_fp16": "passed"}
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
    assert verified.returncode == 0, verified.stderr[-2000:]
    assert (f"bom: CycloneDX 1.6 valid, {len(manifest['artifacts'])} model hashes equal the manifest's"
            in verified.stdout)

    again = run_cli("train", "--config", str(cfg), "--runs", str(runs), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    (summary,) = json.loads(again.stdout)
    assert summary["cached"] is True and summary["run"] == str(run)


@pytest.mark.unit
def test_the_console_says_training_and_export_apart():
    from export.cli.bundle import time_line
    run = {"wall_s": 210.34, "cpu_s": 356.2, "cpu_per_wall": 1.69,
           "training": {"wall_s": 131.6, "runs": {"dense": {"cached": False}, "conv": {"cached": False},
                                                  "dropout": {"cached": True}}}}
    assert time_line(run) == ("time: training 132 s (dense, conv trained; dropout cached), export 210 s "
                              "(CPU 356 s, 1.69 per wall s)")
    assert time_line({**run, "training": {"wall_s": 0.0, "runs": {}}}).startswith("time: no training, export 210 s")
    beside = {**run, "training": {**run["training"], "beside_export_s": 88.6}}  # per-variant tasks overlapping
    assert time_line(beside).startswith("time: training 132 s (dense, conv trained; dropout cached; "
                                        "the last 89 s beside the export), export 210 s")
