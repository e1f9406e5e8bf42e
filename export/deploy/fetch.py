"""Where a cluster gets a bundle: the storage URI and the initContainers that fetch it.

The storage URI is where the contents of `dist/` were uploaded, e.g.

    gsutil -m cp -r dist/resnet50-heads-1 dist/resnet50-heads-1.tar.gz* gs://my-bucket/models/

The Deployment's first initContainer downloads `<uri>/<bundle>.tar.gz` (and its `.sha256`
unless the digest is pinned in the manifest) with the cloud's own CLI; the second checks the
digest and unpacks with `safe_unpack.py` (the rules `resnet-deploy verify` uses). KServe
reads `<uri>/<bundle>/tfserving/<model>/` with its own storage initializer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from export.core.errors import UsageError

#: Storage URI schemes KServe reads: its default storage initializer's prefixes (gs, s3,
#: hdfs, webhdfs, hf, http(s) incl. Azure) plus pvc:// and oci:// handled by the controller.
KSERVE_SCHEMES = ("gs", "s3", "pvc", "hdfs", "webhdfs", "hf", "oci", "http", "https")
#: The schemes where both the Deployment can fetch the tarball and KServe can read a directory.
SUPPORTED = ("gs", "s3", "pvc")
#: Pinned images of the initContainers (bump deliberately; any image with the CLI works).
IMAGES = {"gs": "google/cloud-sdk:502.0.0-slim", "s3": "amazon/aws-cli:2.22.0", "unpack": "python:3.12-slim"}
#: configs/variants.toml's storage_uri until the user sets it: manifests rendered with it say so.
PLACEHOLDER_STORAGE_URI = "gs://REPLACE-WITH-YOUR-BUCKET/resnet-deploy"
DOWNLOAD_DIR, UNPACK_DIR, SCRIPT_DIR, PVC_DIR = "/download", "/bundle", "/opt/resnet-deploy", "/source"


@dataclass(frozen=True)
class StorageSource:
    """A parsed storage URI: scheme, the URI without a trailing '/', and for pvc:// the claim
    and the path inside it."""

    scheme: str
    base: str
    claim: str = ""
    path: str = ""


def parse_storage_uri(uri: str, what: str = "--storage-uri") -> StorageSource:
    """Check `uri` (UsageError naming `what` and what is wrong with it) and split it."""
    scheme = urlparse(uri or "").scheme.lower() if "://" in (uri or "") else ""
    known = ", ".join(f"{s}://" for s in KSERVE_SCHEMES)
    if not scheme:
        raise UsageError(f"{what} {uri!r} has no scheme: give where you uploaded dist/, "
                         "e.g. gs://BUCKET/models, s3://BUCKET/models or pvc://CLAIM/models")
    if scheme not in KSERVE_SCHEMES:
        raise UsageError(f"{what} scheme {scheme}:// is not one KServe supports ({known}); "
                         "upload dist/ to gs://, s3:// or a PersistentVolumeClaim (pvc://CLAIM/PATH)")
    if scheme not in SUPPORTED:
        raise UsageError(f"{what} {scheme}:// is read by KServe, but these manifests need one place where "
                         "the Deployment fetches <bundle>.tar.gz and KServe lists the <bundle>/ directory; "
                         "use gs://, s3:// or pvc://")
    parsed = urlparse(uri)
    if not parsed.netloc:
        place = "claim" if scheme == "pvc" else "bucket"
        raise UsageError(f"{what} {uri!r} names no {place}: use {scheme}://{place.upper()}/PATH")
    if parsed.query or parsed.fragment or re.search(r"\s", uri):
        raise UsageError(f"{what} {uri!r} has a query, fragment or whitespace; give a plain {scheme}:// path")
    base = uri.rstrip("/")
    if scheme == "pvc":
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", parsed.netloc):
            raise UsageError(f"{what}: {parsed.netloc!r} is not a PersistentVolumeClaim name")
        return StorageSource(scheme, base, claim=parsed.netloc, path=parsed.path.strip("/"))
    return StorageSource(scheme, base)


def tarball_name(bundle: str) -> str:
    return f"{bundle}.tar.gz"


def model_uri(source: StorageSource, bundle: str, model: str) -> str:
    """What KServe's storageUri points at: the model's version folders in the uploaded bundle."""
    return f"{source.base}/{bundle}/tfserving/{model}"


def unpack_script() -> str:
    """The text of safe_unpack.py (stdlib only), for the ConfigMap."""
    from export.deploy import safe_unpack
    return Path(safe_unpack.__file__).read_text()


def init_containers(source: StorageSource, bundle: str,
                    sha256: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(initContainers, extra volumes): fetch the tarball (not for pvc://, whose claim is
    mounted read-only), then check its sha256 (`sha256` when pinned, else the `.sha256` file
    uploaded beside it) and unpack it into the `bundle` volume."""
    tar = tarball_name(bundle)
    fetch_both = sha256 is None
    containers: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts = [{"name": "bundle", "mountPath": UNPACK_DIR},
              {"name": "unpack-script", "mountPath": SCRIPT_DIR, "readOnly": True}]
    if source.scheme == "pvc":
        folder = f"{PVC_DIR}/{source.path}".rstrip("/")
        volumes.append({"name": "source", "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True}})
        mounts.append({"name": "source", "mountPath": PVC_DIR, "readOnly": True})
        remove = []
    else:
        folder = DOWNLOAD_DIR
        volumes.append({"name": "download", "emptyDir": {}})
        mounts.append({"name": "download", "mountPath": DOWNLOAD_DIR})
        remove = ["--remove-archive"]
        wanted = [tar, f"{tar}.sha256"] if fetch_both else [tar]
        if source.scheme == "gs":
            command = ["gcloud", "storage", "cp", *(f"{source.base}/{w}" for w in wanted), f"{DOWNLOAD_DIR}/"]
        else:  # s3: one call for both files, no shell
            command = ["aws", "s3", "cp", f"{source.base}/", f"{DOWNLOAD_DIR}/", "--recursive",
                       "--exclude", "*", *(x for w in wanted for x in ("--include", w))]
        containers.append({"name": "fetch-bundle", "image": IMAGES[source.scheme], "command": command,
                           "volumeMounts": [{"name": "download", "mountPath": DOWNLOAD_DIR}]})
    check = ["--sha256", sha256] if sha256 else ["--sha256-file", f"{folder}/{tar}.sha256"]
    containers.append({"name": "unpack-bundle", "image": IMAGES["unpack"],
                       "command": ["python3", f"{SCRIPT_DIR}/safe_unpack.py", f"{folder}/{tar}", UNPACK_DIR,
                                   *check, *remove],
                       "volumeMounts": mounts})
    return containers, volumes
