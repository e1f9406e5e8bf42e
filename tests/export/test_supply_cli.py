"""`resnet-deploy sign`, `verify --public-key | --certificate-chain | --against`, and the output lock
of `export --out`, as a user runs them (subprocesses): outputs, exit codes 0 / 1 / 2."""
from __future__ import annotations

import tarfile

import pytest

from export.bundle import layout as bundle
from export.bundle import packing
from export.bundle.manifest import Manifest, ParitySummary
from tests.export import pki
from tests.helpers import demo_bundle, run_cli

pytestmark = pytest.mark.integration  # verify imports TensorFlow in its subprocess


@pytest.fixture
def signed(tmp_path):
    root = demo_bundle(tmp_path / "dist" / "demo-1")
    packing.pack(root)
    keys = tmp_path / "keys"
    keys.mkdir()
    private, public, key = pki.write_key_pair(keys, "publisher")
    ca, ca_key, ca_cert = pki.write_ca(keys, "Root")
    leaf = pki.write_leaf(keys, "publisher", key, ca_key, ca_cert)
    other_ca, _, _ = pki.write_ca(keys, "Other")
    return root, {"private": private, "public": public, "ca": ca, "leaf": leaf, "other_ca": other_ca}


def test_sign_repacks_the_tarball_and_verify_checks_it(signed):
    root, k = signed
    r = run_cli("sign", str(root), "--private-key", str(k["private"]))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"signed {root} (key ") and lines[0].endswith(f"): {root / 'signature.sig'}")
    tar = root.with_name("demo-1.tar.gz")
    assert lines[1] == f"re-packed {tar} with the signature (sha256 {bundle.sha256_file(tar)})"
    assert tar.with_name("demo-1.tar.gz.sha256").read_text().split()[0] == bundle.sha256_file(tar)
    with tarfile.open(tar) as t:
        assert "demo-1/signature.sig" in t.getnames()
    r = run_cli("verify", str(tar), "--skip-parity", "--public-key", str(k["public"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0].startswith("signature: signed by key ") and r.stdout.endswith("verified\n")
    r = run_cli("verify", str(root), "--skip-parity")
    assert r.returncode == 0 and "(not checked: pass --public-key or --certificate-chain)" in r.stdout


def test_certificate_signing_and_the_wrong_ca(signed):
    root, k = signed
    r = run_cli("sign", str(root), "--private-key", str(k["private"]), "--certificate", str(k["leaf"]),
                "--certificate-chain", str(k["ca"]))
    assert r.returncode == 0 and "(certificate CN=publisher)" in r.stdout, r.stderr
    r = run_cli("verify", str(root), "--skip-parity", "--certificate-chain", str(k["ca"]))
    assert r.returncode == 0 and r.stdout.startswith("signature: signed by certificate CN=publisher")
    r = run_cli("verify", str(root), "--skip-parity", "--certificate-chain", str(k["other_ca"]))
    assert r.returncode == 1
    assert r.stdout.startswith("FAIL signature (wrong CA): the signing certificate (CN=publisher) does not chain to a "
                               f"CA in {k['other_ca']}: ")
    assert r.stdout.endswith("verification FAILED\n")


@pytest.mark.parametrize("args, message", [
    (["sign", "{root}"], "the following arguments are required: --private-key"),
    (["sign", "{root}.tar.gz", "--private-key", "{private}"], "is not a bundle directory; sign dist/<name>-<version>"),
    (["sign", "{root}", "--private-key", "{public}"], "is not a PEM private key; make one with: openssl ecparam"),
    (["verify", "{root}", "--public-key", "{public}", "--certificate-chain", "{ca}"],
     "argument --certificate-chain: not allowed with argument --public-key"),
    (["verify", "{root}", "--skip-parity", "--against", "{keys}"], "is not a bundle: it has no manifest.json"),
])
def test_bad_arguments_are_one_line_errors(signed, args, message):
    root, k = signed
    values = {"root": root, "keys": k["ca"].parent, **k}
    r = run_cli(*[a.format(**values) for a in args])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (root / "signature.sig").exists()


def test_export_refuses_an_out_in_use_before_building(tmp_path):
    import os

    from export.core.locks import exclusive_output
    out = tmp_path / "exported"
    with exclusive_output(out, command="resnet-deploy export --variant conv"):
        r = run_cli("export", "--variant", "dense", "--out", str(out), "--format", "onnx")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: {out} is in use by pid {os.getpid()} (resnet-deploy export --variant conv, "
                               "since ")
    assert sorted(p.name for p in out.iterdir()) == [".resnet-deploy.lock"], "nothing built or written"


def test_verify_without_a_key_stops_at_a_failed_checksum_before_loading_anything(tmp_path):
    """A bundle whose listed SavedModel was altered after export: verify (no key) reports the
    changed file and skips parity; it never loads the model (loading this one would fail with a
    TensorFlow parse error, and its golden files are absent: exit 2 instead of 1)."""
    from export.formats import Artifact
    root = tmp_path / "dist" / "demo-1"
    sm = root / "tfserving" / "demo" / "1"
    sm.mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"\x08\x01")
    (root / "models.config").write_text("model_config_list {}\n")
    art = Artifact(path="tfserving/demo/1", format="savedmodel", precision="fp32", variant="demo", sha256="0" * 64,
                   bytes=2, inputs=[], outputs=[], tool_versions={}, seconds=0.0)
    bundle.write_manifest(root, Manifest(name="demo", version=1, created_at="2026-01-01T00:00:00+00:00",
                                         tool_versions={}, config="test", variants={}, artifacts=[art],
                                         parity=ParitySummary(passed=True)))
    (sm / "saved_model.pb").write_bytes(b"altered after export")
    r = run_cli("verify", str(root))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "FAIL changed: tfserving/demo/1/saved_model.pb" in lines
    assert "parity: skipped: files differ from manifest.json, so the artifacts are not loaded" in lines
    assert lines[-1] == "verification FAILED" and r.stderr == ""
