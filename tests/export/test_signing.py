"""Bundle signatures with model-signing, offline: key and certificate signing, and every way a check
fails (unsigned, tampered, wrong key, wrong CA, corrupt, signed the other way), by message.

The bundles here are small directories with a real manifest.json (export.bundle.layout.write_manifest);
signing hashes files whatever they hold, so no model is needed."""
from __future__ import annotations

import base64
import json
import socket
import tarfile

import pytest

from export.bundle import layout as bundle
from export.bundle import packing, signing
from export.bundle.manifest import Manifest, ParitySummary
from export.bundle.signing import Verdict
from export.core.errors import SigningError
from tests.export import pki

pytestmark = pytest.mark.unit


@pytest.fixture
def small_bundle(tmp_path):
    """dist/demo-1 with a few files and its manifest, plus dist/demo-1.tar.gz."""
    root = tmp_path / "dist" / "demo-1"
    (root / "tflite" / "demo").mkdir(parents=True)
    (root / "tflite" / "demo" / "model_fp32.tflite").write_bytes(bytes(range(256)) * 64)
    (root / "tflite" / "demo" / "labels.txt").write_text("cat\ndog\n")
    (root / "models.config").write_text("model_config_list {}\n")
    bundle.write_manifest(root, Manifest(name="demo", version=1, created_at="2026-01-01T00:00:00+00:00",
                                         tool_versions={}, config="test", variants={}, artifacts=[],
                                         parity=ParitySummary(passed=True)))
    packing.pack(root)
    return root


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    private, public, key = pki.write_key_pair(d, "publisher")
    _, other_public, _ = pki.write_key_pair(d, "someone-else")
    ca, ca_key, ca_cert = pki.write_ca(d, "Example Root CA")
    other_ca, _, _ = pki.write_ca(d, "Another CA")
    leaf = pki.write_leaf(d, "model-publisher", key, ca_key, ca_cert)
    no_sign_leaf = pki.write_leaf(d, "encrypt-only", key, ca_key, ca_cert, digital_signature=False)
    return {"private": private, "public": public, "other_public": other_public, "ca": ca, "other_ca": other_ca,
            "leaf": leaf, "no_sign_leaf": no_sign_leaf, "dir": d}


def _verify(root, keys, **kw):
    return signing.verify_signature(root, kw.get("public_key", keys["public"]) if "chain" not in kw else None,
                                    kw.get("chain", ()))


def test_key_signature_verifies_and_is_not_in_the_manifest(small_bundle, keys):
    path = signing.sign_bundle(small_bundle, keys["private"])
    assert path == small_bundle / "signature.sig"
    check = _verify(small_bundle, keys)
    assert check and check.verdict is Verdict.VERIFIED
    assert check.message.startswith("signed by key ") and "every file matches" in check.message
    assert bundle.verify_dir(small_bundle)[0], "signature.sig must not count as an extra file"
    assert "signature.sig" not in bundle.file_table(small_bundle)


def test_signature_is_offline_and_covers_every_file(small_bundle, keys, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("signing tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    signing.sign_bundle(small_bundle, keys["private"])
    doc = json.loads((small_bundle / "signature.sig").read_text())
    assert doc["verificationMaterial"]["tlogEntries"] == [] and "publicKey" in doc["verificationMaterial"]
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    signed = {r["name"] for r in statement["predicate"]["resources"]}
    assert signed == {"manifest.json", "models.config", "tflite/demo/labels.txt", "tflite/demo/model_fp32.tflite"}


def test_unsigned(small_bundle, keys):
    check = _verify(small_bundle, keys)
    assert check.verdict is Verdict.UNSIGNED
    assert check.message == ("demo-1 is not signed (no signature.sig); ask its publisher for a signed bundle, "
                             "or sign it: resnet-deploy sign")


@pytest.mark.parametrize("change, expected", [
    (lambda r: (r / "tflite/demo/labels.txt").write_text("cat\nwolf\n"), "changed tflite/demo/labels.txt"),
    (lambda r: (r / "manifest.json").write_text((r / "manifest.json").read_text().replace("demo", "evil")),
     "changed manifest.json"),
    (lambda r: (r / "tflite/demo/extra.tflite").write_bytes(b"x"), "added tflite/demo/extra.tflite"),
    (lambda r: (r / "models.config").unlink(), "removed models.config"),
], ids=["file", "manifest", "added", "removed"])
def test_tampered(small_bundle, keys, change, expected):
    signing.sign_bundle(small_bundle, keys["private"])
    change(small_bundle)
    check = _verify(small_bundle, keys)
    assert check.verdict is Verdict.TAMPERED
    assert check.message == f"files changed since signing: {expected}"


def test_wrong_key(small_bundle, keys):
    signing.sign_bundle(small_bundle, keys["private"])
    check = _verify(small_bundle, keys, public_key=keys["other_public"])
    assert check.verdict is Verdict.WRONG_KEY
    assert check.message.startswith("demo-1 was signed with another key (key id ")
    assert f"than {keys['other_public']} (key id " in check.message
    assert check.message.endswith("get the publisher's public key")


def test_edited_signature_is_corrupt(small_bundle, keys):
    signing.sign_bundle(small_bundle, keys["private"])
    sig = small_bundle / "signature.sig"
    doc = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64  # re-point a file at other bytes
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(doc))
    check = _verify(small_bundle, keys)
    assert check.verdict is Verdict.CORRUPT
    assert check.message == ("signature.sig does not verify: its signed statement or signature bytes were "
                             "edited after signing")
    sig.write_text("{not json")
    check = _verify(small_bundle, keys)
    assert check.verdict is Verdict.CORRUPT
    assert check.message.startswith("signature.sig is not a model-signing signature")


def test_certificate_signature_verifies_with_the_ca(small_bundle, keys):
    signing.sign_bundle(small_bundle, keys["private"], keys["leaf"], [keys["ca"]])
    check = _verify(small_bundle, keys, chain=[keys["ca"]])
    assert check, check.message
    assert check.message.startswith("signed by certificate CN=model-publisher")


def test_wrong_ca(small_bundle, keys):
    signing.sign_bundle(small_bundle, keys["private"], keys["leaf"], [keys["ca"]])
    check = _verify(small_bundle, keys, chain=[keys["other_ca"]])
    assert check.verdict is Verdict.WRONG_CA
    assert check.message.startswith("the signing certificate (CN=model-publisher) does not chain to a CA in ")
    # OpenSSL's reason: the root the signer embedded is not one of the CAs given.
    assert check.message.endswith(f"{keys['other_ca']}: self-signed certificate in certificate chain")


def test_certificate_without_signing_usage(small_bundle, keys):
    signing.sign_bundle(small_bundle, keys["private"], keys["no_sign_leaf"], [keys["ca"]])
    check = _verify(small_bundle, keys, chain=[keys["ca"]])
    assert check.verdict is Verdict.WRONG_CA
    assert check.message == ("the signing certificate (CN=encrypt-only) is not allowed to sign "
                             "(no digitalSignature key usage)")


def test_signed_the_other_way(small_bundle, keys):
    signing.sign_bundle(small_bundle, keys["private"], keys["leaf"], [keys["ca"]])
    check = _verify(small_bundle, keys)
    assert check.verdict is Verdict.WRONG_KIND
    assert check.message == ("demo-1 was signed with a certificate (CN=model-publisher); "
                             "verify it with --certificate-chain CA.pem")
    signing.sign_bundle(small_bundle, keys["private"])
    check = _verify(small_bundle, keys, chain=[keys["ca"]])
    assert check.verdict is Verdict.WRONG_KIND and "verify it with --public-key PUB.pem" in check.message


def test_bad_keys_and_bundles_are_one_line_errors(small_bundle, keys, tmp_path):
    rsa = pki.write_rsa_key(tmp_path / "rsa.pem")
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello")
    cases = [
        (lambda: signing.sign_bundle(small_bundle, tmp_path / "nope.pem"),
         f"private key {tmp_path / 'nope.pem'} not found"),
        (lambda: signing.sign_bundle(small_bundle, rsa), "is RSA, but model-signing signs with EC keys"),
        (lambda: signing.sign_bundle(small_bundle, not_pem), "is not a PEM private key; make one with: openssl"),
        (lambda: signing.sign_bundle(small_bundle, keys["public"]), "is not a PEM private key"),
        (lambda: signing.verify_signature(small_bundle, not_pem), "is not a PEM public key"),
        (lambda: signing.verify_signature(small_bundle, None, [not_pem]), "holds no PEM certificate"),
        (lambda: signing.verify_signature(small_bundle), "verify the signature with --public-key PUB.pem or"),
    ]
    _, _, stranger = pki.write_key_pair(tmp_path, "stranger")
    ca_path, ca_key, ca_cert = pki.write_ca(tmp_path, "Stranger CA")
    strangers_leaf = pki.write_leaf(tmp_path, "stranger", stranger, ca_key, ca_cert)
    cases.append((lambda: signing.sign_bundle(small_bundle, keys["private"], strangers_leaf, [ca_path]),
                  "does not belong to private key"))
    cases.append((lambda: signing.SigningKey(keys["private"], strangers_leaf, (ca_path,)).check(),
                  "does not belong to private key"))
    for call, message in cases:
        with pytest.raises(SigningError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value)
    assert not (small_bundle / "signature.sig").exists()


def test_refuses_to_sign_a_bundle_that_fails_its_manifest(small_bundle, keys):
    (small_bundle / "models.config").write_text("changed\n")
    with pytest.raises(SigningError, match=r"refusing to sign .*demo-1: its files do not match manifest.json "
                                           r"\(changed: models.config\); re-export it"):
        signing.sign_bundle(small_bundle, keys["private"])


def test_tarball_carries_the_signature_after_repacking(small_bundle, keys):
    signing.sign_bundle(small_bundle, keys["private"])
    tar_path, _ = packing.pack(small_bundle)
    with tarfile.open(tar_path) as tar:
        assert "demo-1/signature.sig" in tar.getnames()
    unpacked = packing.unpack(tar_path, small_bundle.parent.parent / "unpacked")
    assert _verify(unpacked, keys)


def test_pack_is_deterministic(small_bundle, monkeypatch):
    """Equal files give an equal tarball: no gzip timestamp, sorted members, normalised owners."""
    import os
    first = small_bundle.with_name("demo-1.tar.gz").read_bytes()
    for p in small_bundle.rglob("*"):
        os.utime(p, (1_600_000_000, 1_600_000_000))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1500000000")
    a = packing.pack(small_bundle)[0].read_bytes()
    for p in small_bundle.rglob("*"):
        os.utime(p, (1_700_000_000, 1_700_000_000))
    b = packing.pack(small_bundle)[0].read_bytes()
    assert a == b and a != first
    with tarfile.open(small_bundle.with_name("demo-1.tar.gz")) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1_500_000_000}
