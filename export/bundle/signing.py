"""Bundle signatures with OpenSSF model-signing, offline: an EC private key, or a key plus its
certificate and CA chain. Never Sigstore (that signer needs the network and an OIDC identity).

`sign_bundle` writes `<bundle>/signature.sig` (a Sigstore bundle holding a DSSE envelope over an
in-toto statement that lists every file of the bundle, manifest.json included, with its
sha256). `verify_signature` checks it with a public key or a CA chain and sorts every failure
into one of a few kinds, each with its own message: unsigned, tampered, wrong key, wrong CA,
corrupt signature, or signed the other way (key vs certificate).
"""
from __future__ import annotations

import enum
import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from export.core.errors import SigningError

SIGNATURE_NAME = "signature.sig"
_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
KEYGEN_HINT = ("make one with: openssl ecparam -name prime256v1 -genkey -noout -out signing-key.pem && "
               "openssl ec -in signing-key.pem -pubout -out signing-key.pub.pem")


class Verdict(enum.Enum):
    """What a signature check found; every kind but VERIFIED is a failure."""

    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    TAMPERED = "tampered"
    WRONG_KEY = "wrong key"
    WRONG_CA = "wrong CA"
    CORRUPT = "corrupt signature"
    WRONG_KIND = "signed the other way"


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict of verify_signature and its one-line message."""

    verdict: Verdict
    message: str

    def __bool__(self) -> bool:
        return self.verdict is Verdict.VERIFIED


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SigningError(f"{what} {path} not found") from None
    except OSError as e:
        raise SigningError(f"cannot read {what} {path}: {e.strerror}") from None


def _check_private_key(path: str | Path) -> None:
    """SigningError unless `path` is an unencrypted PEM EC private key on a curve model-signing takes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningError(f"private key {path} is encrypted; give an unencrypted PEM key "
                           "(openssl ec -in KEY -out plain.pem) kept where only the signer can read it") from None
    except ValueError:
        raise SigningError(f"{path} is not a PEM private key; {KEYGEN_HINT}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        raise SigningError(f"private key {path} is {kind}, but model-signing signs with EC keys "
                           f"(P-256, P-384, P-521); {KEYGEN_HINT}")


def _public_key(path: str | Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise SigningError(f"{path} is not a PEM public key (expected -----BEGIN PUBLIC KEY-----; "
                           "openssl ec -in signing-key.pem -pubout -out signing-key.pub.pem)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise SigningError(f"public key {path} is not an EC key on P-256, P-384 or P-521")
    return key


def key_id(public_key) -> str:
    """model-signing's key hint: sha256 of the PEM SubjectPublicKeyInfo, hex."""
    from cryptography.hazmat.primitives import serialization
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _certificates(paths: Sequence[str | Path], what: str) -> list:
    from cryptography import x509
    certs = []
    for p in paths:
        try:
            certs += x509.load_pem_x509_certificates(_read(p, what))
        except ValueError:
            raise SigningError(f"{what} {p} holds no PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    return certs


def _hashing_config():
    from model_signing import hashing
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME], ignore_git_paths=False)


def sign_bundle(root: str | Path, private_key: str | Path, certificate: str | Path | None = None,
                chain: Sequence[str | Path] = ()) -> Path:
    """Sign every file of the bundle directory `root` into `root/signature.sig` (replacing an old one).

    With only a key: model-signing's EC key signer. With a certificate (its public key must be the
    key's) and the CA chain: its certificate signer, which embeds the chain so verifiers need only
    the root. Refuses a bundle whose files do not match its manifest.
    """
    from model_signing import signing

    from export.bundle import layout as bundle
    from export.core.atomic import write_bytes
    root = Path(root)
    files, _ = bundle.verify_dir(root)
    if not files:
        raise SigningError(f"refusing to sign {root}: its files do not match manifest.json "
                           f"({'; '.join(files.problems()[:3])}); re-export it")
    _check_private_key(private_key)
    config = signing.Config().set_hashing_config(_hashing_config())
    if certificate is None:
        if chain:
            raise SigningError("--certificate-chain needs --certificate (the signing certificate of --private-key)")
        config.use_elliptic_key_signer(private_key=private_key)
    else:
        _certificates([certificate], "certificate")
        _certificates(chain, "certificate chain")
        try:
            config.use_certificate_signer(private_key=private_key, signing_certificate=certificate,
                                          certificate_chain=list(chain))
        except ValueError as e:  # the certificate is not the key's
            raise SigningError(f"certificate {certificate} does not belong to private key {private_key} "
                               f"({e})") from None
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-sign.") as tmp:
        out = Path(tmp) / SIGNATURE_NAME  # outside the bundle: model-signing hashes before it writes
        config.sign(root, out)
        write_bytes(root / SIGNATURE_NAME, out.read_bytes())
    return root / SIGNATURE_NAME


def describe(root: str | Path) -> str | None:
    """A short description of the bundle's signer (`key <id>` or the leaf certificate's subject),
    None when unsigned. Reads the signature without checking it."""
    path = Path(root) / SIGNATURE_NAME
    if not path.is_file():
        return None
    try:
        material = json.loads(path.read_bytes())["verificationMaterial"]
    except (ValueError, KeyError, TypeError):
        return "unreadable signature"
    if "x509CertificateChain" in material:
        return f"certificate {_leaf_subject(material)}"
    hint = (material.get("publicKey") or {}).get("hint", "")
    return f"key {hint[:16] or '(no key id)'}"


def _leaf_subject(material: dict) -> str:
    import base64

    from cryptography import x509
    try:
        der = base64.b64decode(material["x509CertificateChain"]["certificates"][0]["rawBytes"])
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except (KeyError, IndexError, TypeError, ValueError):
        return "(unreadable certificate)"


def _tampered_message(root: Path, envelope: dict) -> str:
    """`changed a, b; added c; removed d`: the signed statement's file digests (trusted: the
    signature over it verified) against the files now in the bundle."""
    import base64

    from export.core.atomic import sha256_file
    try:
        statement = json.loads(base64.b64decode(envelope["payload"]))
        signed = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    except (KeyError, TypeError, ValueError):
        return "the files differ from what was signed"
    actual = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
              if p.is_file() and not p.is_symlink() and p.name != SIGNATURE_NAME}
    changed = [n for n in sorted(signed) if n in actual and sha256_file(actual[n]) != signed[n]]
    added = sorted(set(actual) - set(signed))
    removed = sorted(set(signed) - set(actual))
    parts = [f"{what} {', '.join(names)}" for what, names in
             (("changed", changed), ("added", added), ("removed", removed)) if names]
    return "; ".join(parts) or "the files differ from what was signed"


def verify_signature(root: str | Path, public_key: str | Path | None = None,
                     chain: Sequence[str | Path] = ()) -> SignatureCheck:
    """Check `root/signature.sig` against the bundle's files with `public_key` or the CA `chain`.

    Problems with the key or chain files themselves raise SigningError (a usage error); what is
    wrong with the bundle comes back as a SignatureCheck with its Verdict and message.
    """
    from cryptography.exceptions import InvalidSignature
    from model_signing import verifying
    from OpenSSL import crypto
    if (public_key is None) == (not chain):
        raise SigningError("verify the signature with --public-key PUB.pem or --certificate-chain CA.pem (one of them)")
    key = _public_key(public_key) if public_key is not None else None
    if key is None:
        _certificates(chain, "certificate chain")
    root = Path(root)
    sig = root / SIGNATURE_NAME
    if not sig.is_file():
        return SignatureCheck(Verdict.UNSIGNED, f"{root.name} is not signed (no {SIGNATURE_NAME}); ask its "
                                                "publisher for a signed bundle, or sign it: resnet-deploy sign")
    try:
        doc = json.loads(sig.read_bytes())
        material, envelope = doc["verificationMaterial"], doc["dsseEnvelope"]
        if not envelope.get("signatures"):
            raise KeyError("signatures")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return SignatureCheck(Verdict.CORRUPT, f"{SIGNATURE_NAME} is not a model-signing signature "
                                               f"({type(e).__name__}: {e}); re-sign the bundle")
    by_certificate = "x509CertificateChain" in material
    config = verifying.Config().set_hashing_config(_hashing_config())
    if public_key is not None:
        if by_certificate:
            return SignatureCheck(Verdict.WRONG_KIND,
                                  f"{root.name} was signed with a certificate ({_leaf_subject(material)}); "
                                  "verify it with --certificate-chain CA.pem")
        hint = (material.get("publicKey") or {}).get("hint", "")
        if hint and key is not None and hint != key_id(key):
            return SignatureCheck(Verdict.WRONG_KEY, f"{root.name} was signed with another key (key id {hint[:16]}) "
                                                     f"than {public_key} (key id {key_id(key)[:16]}); "
                                                     "get the publisher's public key")
        config.use_elliptic_key_verifier(public_key=public_key)
    else:
        if not by_certificate:
            return SignatureCheck(Verdict.WRONG_KIND, f"{root.name} was signed with a bare key "
                                                      f"({describe(root)}); verify it with --public-key PUB.pem")
        config.use_certificate_verifier(certificate_chain=list(chain))
    try:
        config.verify(root, sig)
    except crypto.X509StoreContextError as e:
        return SignatureCheck(Verdict.WRONG_CA, f"the signing certificate ({_leaf_subject(material)}) does not chain "
                                                f"to a CA in {', '.join(map(str, chain))}: {e}")
    except InvalidSignature:
        return SignatureCheck(Verdict.CORRUPT, f"{SIGNATURE_NAME} does not verify: its signed statement or "
                                               "signature bytes were edited after signing")
    except ValueError as e:
        text = str(e)
        if text.startswith("Signature mismatch"):
            return SignatureCheck(Verdict.TAMPERED, f"files changed since signing: {_tampered_message(root, envelope)}")
        if "cannot be used for signing" in text:
            return SignatureCheck(Verdict.WRONG_CA, f"the signing certificate ({_leaf_subject(material)}) is not "
                                                    "allowed to sign (no digitalSignature key usage)")
        return SignatureCheck(Verdict.CORRUPT, f"{SIGNATURE_NAME} does not verify: {text.splitlines()[0]}")
    except Exception as e:  # noqa: BLE001 - malformed envelope contents: base64, protobuf, payload JSON
        return SignatureCheck(Verdict.CORRUPT, f"{SIGNATURE_NAME} is malformed ({type(e).__name__}: "
                                               f"{str(e).splitlines()[0] if str(e) else ''}); re-sign the bundle")
    return SignatureCheck(Verdict.VERIFIED, f"signed by {describe(root)}; every file matches the signature")


@dataclass(frozen=True)
class SigningKey:
    """What `make export SIGNING_KEY=...` signs with: a private key, optionally its certificate and
    the CA chain. `check()` reads them all up front, so a bad path fails before a long export."""

    private_key: Path
    certificate: Path | None = None
    chain: tuple[Path, ...] = ()

    def check(self) -> SigningKey:
        _check_private_key(self.private_key)
        if self.chain and self.certificate is None:
            raise SigningError("--certificate-chain needs --certificate (the signing certificate of the key)")
        if self.certificate is not None:
            from cryptography.hazmat.primitives import serialization
            key = serialization.load_pem_private_key(self.private_key.read_bytes(), password=None)
            (leaf,) = _certificates([self.certificate], "certificate")[:1]
            if leaf.public_key() != key.public_key():
                raise SigningError(f"certificate {self.certificate} does not belong to private key {self.private_key}")
            _certificates(self.chain, "certificate chain")
        return self

    def sign(self, root: str | Path) -> Path:
        return sign_bundle(root, self.private_key, self.certificate, self.chain)
