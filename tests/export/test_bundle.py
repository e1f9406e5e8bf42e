"""`make export` bundles: layout, manifest checksums, verify, safe unpacking, atomic publishing."""
from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from export import bundle
from export.errors import BundleError
from tests.helpers import ROOT, run_cli, run_main

CONFIG = """
name = "smoke"
version = 3
weights = "{weights}"
[[variants]]
name = "dense"
labels = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"]
precisions = ["fp32", "fp16"]   # fp16 brings the OpenVINO IR (fp16 weights) and TFLite fp16
"""


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    """One real bundle (dense, fp32 and fp16 artifacts) made by `resnet-deploy bundle`, as `make export` does."""
    work = tmp_path_factory.mktemp("bundle")
    cfg = work / "variants.toml"
    cfg.write_text(CONFIG.format(weights="random:0"))
    r = run_cli("bundle", "--config", str(cfg), "--out", str(work / "dist"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "smoke-3" in r.stdout and "tarball" in r.stdout
    return work, work / "dist" / "smoke-3", cfg


@pytest.mark.e2e
def test_bundle_layout(published):
    _, root, _ = published
    expected = ["manifest.json", "models.config", "batching.config", "monitoring.config", "parity.json",
                "parity.md", "README.md", "tfserving/dense/3/saved_model.pb",
                "tfserving/dense/3/assets.extra/tf_serving_warmup_requests", "tflite/dense/model_fp32.tflite",
                "tflite/dense/labels.txt", "onnx/dense/model.onnx", "openvino/dense/3/model.xml",
                "openvino/dense/3/model.bin", "golden/dense/inputs.npz", "golden/dense/outputs.npz"]
    for rel in expected:
        assert (root / rel).is_file(), rel
    tar = root.with_name("smoke-3.tar.gz")
    digest = (root.with_name("smoke-3.tar.gz.sha256")).read_text().split()[0]
    assert bundle.sha256_file(tar) == digest
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")], "staging left behind"
    readme = (root / "README.md").read_text()
    assert "tensorflow_model_server" in readme and "tensorflow/serving" in readme
    assert "--model_path /models/openvino/dense" in readme and "--backend openvino:bf16" in readme
    assert "**not run on the machines that built and tested this bundle**" in readme
    assert "--mixed_precision=bfloat16" in readme
    config = readme.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(config)["model_config_list"][0]["config"]["base_path"] == "/models/openvino/dense"
    assert (root / "tflite/dense/labels.txt").read_text().split() == [f"c{i}" for i in range(10)]


@pytest.mark.e2e
def test_manifest_checksums_match_files(published):
    _, root, _ = published
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["files"], "empty manifest"
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [p for p in on_disk if p != "manifest.json"]
    for rel, rec in manifest["files"].items():
        assert bundle.sha256_file(root / rel) == rec["sha256"], rel
        assert (root / rel).stat().st_size == rec["bytes"], rel
    assert manifest["parity"]["passed"] is True
    assert manifest["variants"]["dense"]["weights"]["source"] == "random:0"
    assert manifest["variants"]["dense"]["params"]["trainable"] == 20_490
    assert {a["format"] for a in manifest["artifacts"]} == {"savedmodel", "tflite", "onnx", "openvino"}
    ir = next(a for a in manifest["artifacts"] if a["format"] == "openvino")
    assert ir["path"] == "openvino/dense/3/model.xml" and ir["precision"] == "fp16"
    assert ir["bytes"] == sum(manifest["files"][f"openvino/dense/3/{n}"]["bytes"] for n in ("model.xml", "model.bin"))
    assert set(manifest["tool_versions"]) >= {"tensorflow", "keras", "tf2onnx", "onnxruntime", "openvino"}
    assert len(manifest["git"]["commit"]) in (40, 7) or manifest["git"]["commit"] == "unknown"
    assert {t["stage"] for t in manifest["export_timings"]} >= {"build", "export", "golden", "parity"}


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
    _, root, _ = published
    r = run_cli("verify", str(root))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "verified" in r.stdout and "0 changed, 0 missing, 0 extra" in r.stdout
    assert "| dense/openvino_fp16 @ f32 | openvino | CPU | fp16 |" in r.stdout  # parity re-ran the IR
    assert "| dense/openvino_fp16 @ bf16 | openvino |" in r.stdout
    r = run_cli("verify", str(root.with_name("smoke-3.tar.gz")), "--skip-parity")
    assert r.returncode == 0 and "verified" in r.stdout


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
        bundle.unpack(evil, dest)
    assert not (tmp_path / "evil").exists() and not list(dest.rglob("*"))
    r = run_cli("verify", str(evil))
    assert r.returncode == 2 and r.stderr.startswith("error: refusing to unpack")


@pytest.mark.e2e
def test_killed_pipeline_leaves_previous_bundle_intact(published):
    _work, root, cfg = published
    before = bundle.file_table(root)
    proc = subprocess.Popen([sys.executable, "-m", "export.cli", "bundle", "--config", str(cfg),
                             "--out", str(root.parent)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        # Kill it once the new bundle is half written: its staged SavedModel exists.
        while time.monotonic() < deadline and proc.poll() is None:
            if list(root.parent.glob(".smoke-3.*.partial/tflite")):
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
    assert visible == ["smoke-3", "smoke-3.tar.gz", "smoke-3.tar.gz.sha256"]
    for partial in root.parent.glob(".smoke-3.*.partial"):
        assert not (partial / "manifest.json").exists()
        shutil.rmtree(partial)


@pytest.mark.e2e
def test_failed_parity_is_not_published(published, tmp_path):
    """A saturated model fails the parity check: no bundle, the old one stays, the report is kept."""
    from export.build import build
    from export.variants import get_variant
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
    assert not (root.parent / "smoke-3.parity-FAILED").exists()
    report.unlink()
    (root.parent / "smoke-3.parity-FAILED.json").unlink()


@pytest.mark.integration
@pytest.mark.parametrize("text,message", [
    ("name = 'x'\nversion = 0\n[[variants]]\nname='dense'\n", "version must be an integer >= 1"),
    ("name = 'x'\n", "no [[variants]] listed"),
    ("name = 'x'\n[[variants]]\nname='dense'\ncolour='red'\n", "unknown key(s) ['colour']"),
    ("name = 'x'\n[[variants]]\nname='nope'\n", "unknown variant 'nope'"),
    ("name = 'x'\n[[variants]]\nname='dense'\nprecisions=['int4']\n", "unknown precision 'int4'"),
    ("name = [\n", "is not valid TOML"),
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
    assert md.output("probabilities").labels == [f"c{i}" for i in range(10)]
    assert art["sha256"] == manifest["files"][art["path"]]["sha256"] == bundle.sha256_file(root / art["path"])
    readme = (root / "README.md").read_text()
    assert "Copy **`tflite/dense/model_fp32.tflite`** into the app" in readme
    assert "ImageClassifier.createFromOptions(context, options)" in readme
    assert "try classifier.classify(image: try MPImage(uiImage: uiImage))" in readme
