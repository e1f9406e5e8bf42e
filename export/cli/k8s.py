"""`resnet-deploy k8s BUNDLE --storage-uri URI`: render the bundle's Kubernetes and KServe
manifests (export/deploy/kubernetes.py) into a folder beside the bundle, validated.

Importing this module is cheap (argparse only); the handler imports what it needs.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from export.core.argtypes import int_at_least


def add_parsers(sub, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add `k8s` to the `resnet-deploy` subparsers and `commands` table."""
    p = sub.add_parser("k8s", help="render Kubernetes (TF Serving Deployment, Service, HPA, PDB) and KServe "
                                   "manifests for a bundle, validated offline")
    p.add_argument("bundle", metavar="BUNDLE", help="dist/<name>-<version> or its .tar.gz")
    p.add_argument("--storage-uri", required=True, metavar="URI",
                   help="where dist/ was uploaded: gs://BUCKET/PATH, s3://BUCKET/PATH or pvc://CLAIM/PATH "
                        "(holding <bundle>.tar.gz, its .sha256 and the <bundle>/ folder)")
    p.add_argument("--replicas", type=int_at_least(1), default=2,
                   help="Deployment replicas and HPA minimum (default 2)")
    p.add_argument("--max-replicas", type=int_at_least(1), default=None, help="HPA maximum (default 3x --replicas)")
    p.add_argument("--namespace", default=None, help="metadata.namespace (default: none, kubectl's -n decides)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/kubernetes/ and DIR/kserve/ (default: <bundle>.deploy/ beside the bundle)")
    commands["k8s"] = cmd_k8s


def tarball_digest(bundle: Path) -> str | None:
    """The sha256 of `<bundle>.tar.gz` from the .sha256 file `make export` writes beside it
    (or hashed, without one); None when the bundle was never packed."""
    tar = bundle.with_name(bundle.name + ".tar.gz")
    sha_file = tar.with_name(tar.name + ".sha256")
    if sha_file.is_file():
        words = sha_file.read_text().split()
        if words and len(words[0]) == 64:
            return words[0].lower()
    if tar.is_file():
        from export.core.atomic import sha256_file
        return sha256_file(tar)
    return None


def cmd_k8s(args: argparse.Namespace) -> int:
    import shlex
    import tempfile

    from export.core.errors import BundleError, UsageError
    from export.deploy import kubernetes
    from export.deploy.fetch import parse_storage_uri
    parse_storage_uri(args.storage_uri)  # a bad URI is reported before any unpacking
    path = Path(args.bundle)
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-k8s.") as scratch:
        if path.is_dir():
            root, digest = path, tarball_digest(path)
        elif path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
            from export.bundle.packing import unpack
            from export.core.atomic import sha256_file
            root, digest = unpack(path, Path(scratch)), sha256_file(path)
        else:
            raise BundleError(f"no such bundle: {path} (give dist/<name>-<version> or its .tar.gz; "
                              "run `make export` first)")
        info = kubernetes.BundleInfo.from_dir(root, tarball_sha256=digest)
        out = Path(args.out) if args.out else path.parent / f"{info.name}.deploy"
        if path.is_dir() and out.resolve().is_relative_to(path.resolve()):
            raise UsageError(f"--out {out} is inside the bundle, whose manifest.json would no longer match; "
                             "write the manifests elsewhere (the bundle's own deploy/ is made by `make export`)")
        files = kubernetes.render(info, args.storage_uri, replicas=args.replicas,
                                  max_replicas=args.max_replicas, namespace=args.namespace)
    written = kubernetes.write(out, files)
    for p in written:
        print(f"wrote {p}")
    print(f"validated for Kubernetes {kubernetes.KUBERNETES_VERSION} (strict) and the KServe v1beta1 schema")
    print(f"tarball sha256 {'pinned: ' + digest if digest else 'read from the .sha256 uploaded beside it'}")
    if digest is None:
        print(f"note: there is no {info.name}.tar.gz beside {path}; the Deployment downloads that tarball "
              "(`make export` packs it), so upload one with its .sha256")
    ns = f" -n {shlex.quote(args.namespace)}" if args.namespace else ""
    print(f"next: kubectl apply{ns} -f {shlex.quote(str(out / 'kubernetes'))}/    "
          f"(or, with KServe: kubectl apply{ns} -f {shlex.quote(str(out / 'kserve'))}/)")
    return 0
