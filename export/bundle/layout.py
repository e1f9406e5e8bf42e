"""Deployment bundles: lay out, checksum, verify, pack and unpack.

A bundle is a directory `dist/<name>-<version>/` whose `manifest.json` lists every other file
with its sha256 and size, plus `dist/<name>-<version>.tar.gz` and its `.sha256`. Bundles are
built in a hidden staging directory beside `dist/` and renamed into place when complete.
"""
from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from export.bundle.manifest import FileEntry, Manifest
from export.core.atomic import replacing, sha256_file, write_text
from export.core.errors import BundleError

MANIFEST = "manifest.json"
#: Files a manifest does not list: itself, and the signature over the files and the manifest.
UNLISTED = (MANIFEST, "signature.sig")


def file_table(root: Path) -> dict[str, FileEntry]:
    """{relative posix path: FileEntry(sha256, bytes)} for every file under root but the manifest
    and the signature."""
    table = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not p.is_symlink() and rel not in UNLISTED:
            table[rel] = FileEntry(sha256=sha256_file(p), bytes=p.stat().st_size)
    return table


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash every file in the bundle into `manifest.files` and write manifest.json (the last file)."""
    manifest.files = file_table(root)
    write_text(root / MANIFEST, json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    return manifest


def read_manifest(root: Path) -> Manifest:
    path = Path(root) / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{root} is not a bundle: it has no {MANIFEST}") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    return Manifest.from_dict(doc, source=str(path))


@dataclass
class FileCheck:
    """The outcome of re-hashing a bundle against its manifest."""

    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    checked: int = 0

    def __bool__(self) -> bool:
        return not (self.changed or self.missing or self.extra)

    def problems(self) -> list[str]:
        return ([f"changed: {p}" for p in self.changed] + [f"missing: {p}" for p in self.missing]
                + [f"extra: {p}" for p in self.extra])


def check_files(root: Path, manifest: Manifest) -> FileCheck:
    """Compare the files under root with the manifest: changed, missing and extra files."""
    expected = manifest.files
    actual = file_table(root)
    result = FileCheck(checked=len(expected))
    for rel, rec in expected.items():
        got = actual.get(rel)
        if got is None:
            result.missing.append(rel)
        elif got != rec:
            result.changed.append(rel)
    result.extra = sorted(set(actual) - set(expected))
    return result


# -- pack / unpack ------------------------------------------------------------------------------

def pack(bundle_dir: Path) -> tuple[Path, str]:
    """Write `<bundle>.tar.gz` (members under `<bundle>/`) and `<bundle>.tar.gz.sha256`, atomically.

    Weights that do not compress are stored inside the gzip stream rather than deflated
    (export/bundle/packing.py has the measurements); any gzip or tar reads the result as usual.
    """
    from export.bundle.packing import write_tar_gz
    bundle_dir = Path(bundle_dir)
    tar_path = bundle_dir.with_name(bundle_dir.name + ".tar.gz")
    # Reproducible as before: gzip members without a timestamp or name, members sorted, owners/modes
    # normalised (mtimes clamped to SOURCE_DATE_EPOCH when set): equal files give an equal tarball.
    members = [(p, f"{bundle_dir.name}/{p.relative_to(bundle_dir).as_posix()}")
               for p in sorted(bundle_dir.rglob("*")) if not p.is_symlink()]
    with replacing(tar_path) as tmp:
        digest, _ = write_tar_gz(tmp, members, normalise=_normalise_member)
    write_text(tar_path.with_name(tar_path.name + ".sha256"), f"{digest}  {tar_path.name}\n")
    return tar_path, digest


def _normalise_member(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    epoch = source_date_epoch()
    info.mtime = int(info.mtime) if epoch is None else min(int(info.mtime), epoch)
    return info


def source_date_epoch() -> int | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) as an int, or None when unset or invalid."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(text) if text.isdigit() else None


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    """The safe-unpack rules (export/deploy/safe_unpack.py, also run by the Kubernetes
    initContainer): absolute paths, `..`, links leading outside `dest`, devices, FIFOs."""
    from export.deploy.safe_unpack import UnsafeArchive, check_member
    try:
        check_member(member, dest)
    except UnsafeArchive as e:
        raise BundleError(str(e)) from None


def unpack(tar_path: Path, dest: Path) -> Path:
    """Safely extract a bundle tarball into `dest`; returns the bundle directory inside it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m, dest)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as e:
        raise BundleError(f"cannot unpack {tar_path}: {e}") from None
    except OSError as e:
        raise BundleError(f"cannot unpack {tar_path}: {e.strerror or e}") from None
    tops = {PurePosixPath(m.name).parts[0] for m in members if m.name not in ("", ".")}
    if len(tops) != 1:
        raise BundleError(f"{tar_path} is not a bundle: expected one top-level directory, found {sorted(tops)}")
    return dest / tops.pop()


# -- publishing ----------------------------------------------------------------------------------

def verify_dir(root: Path) -> tuple[FileCheck, Manifest]:
    """Re-hash a bundle directory against its manifest."""
    manifest = read_manifest(root)
    return check_files(root, manifest), manifest


def open_bundle(path: Path, scratch: Path) -> Path:
    """A bundle directory for `path`: the directory itself, or a .tar.gz unpacked into scratch."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return unpack(path, scratch)
    raise BundleError(f"{path} is neither a bundle directory nor a .tar.gz; give dist/<name>-<version>[.tar.gz]")


def _weights_note(variant: dict[str, Any]) -> str:
    """`weights random:0, head not trained`, or for a trained variant where it started and how it scores."""
    training = variant.get("training")
    if not training:
        untrained = ", head not trained" if variant["weights"].get("kind") in ("random", "imagenet") else ""
        return f"weights `{variant['weights']['source']}`{untrained}"
    images = sum(training["images_per_class"].values())
    return (f"trained from `{training['weights']}` on `{training['data']}` ({images} images): "
            f"**val accuracy {training['val_accuracy']:.3f}** ({training['val_images']} images)")


def render_readme(bundle_name: str, model_prefix: str, version: int, variants: dict[str, Any],
                  artifacts: list, parity_markdown: str) -> str:
    """The bundle's README: what is inside, how to serve it, how to run it on a device."""
    names = sorted(variants)
    first = names[0]
    rows = "\n".join(
        f"| `{a.variant}` | {a.format} | {a.precision} | `{a.path}` | {a.bytes / 1e6:.1f} MB |"
        for a in sorted(artifacts, key=lambda a: (a.variant, a.format, a.precision)))
    labels = "\n".join(f"- `{v}`: {variants[v]['num_classes']} classes "
                       f"({', '.join(variants[v]['labels'][:5])}{', …' if len(variants[v]['labels']) > 5 else ''}); "
                       f"{_weights_note(variants[v])}" for v in names)
    from export.deploy.ondevice import readme_section
    device_section = readme_section(first, sorted(a.precision for a in artifacts
                                                  if a.variant == first and a.format == "tflite"))
    return f"""# {bundle_name}

A resnet-deploy deployment bundle: ResNet50 variants {', '.join(f'`{n}`' for n in names)}, each as a
TensorFlow SavedModel (TF Serving), TFLite, ONNX and OpenVINO IR, with the parity report that
proves they answer alike. Every file is listed with its sha256 in `manifest.json`; check it with

    resnet-deploy verify {bundle_name}            # or {bundle_name}.tar.gz
    sha256sum -c {bundle_name}.tar.gz.sha256      # the tarball, from the directory holding it

## Models

{labels}

Inputs and outputs (every format): input `image`, float32 NHWC RGB in [0, 255] (ResNet50's
preprocessing is inside the graph); outputs `logits` and `probabilities`. The SavedModels
also have the signature `predict_image_bytes` (input `image_bytes`: encoded JPEG/PNG).
`model_int8.tflite` is full-integer: uint8 `image` (raw pixels) and uint8 outputs, with the
quantization parameters (real = scale × (q − zero_point)) in `manifest.json`.

| variant | format | precision | path | size |
|---|---|---|---|---|
{rows}

## Serve with TensorFlow Serving

With the `tensorflow/serving` image (the bundle mounted at `/models`, where `models.config`
expects it):

    docker run --rm -p 8500:8500 -p 8501:8501 \\
      -v "$PWD/{bundle_name}:/models:ro" tensorflow/serving \\
      --model_config_file=/models/models.config \\
      --enable_batching --batching_parameters_file=/models/batching.config \\
      --monitoring_config_file=/models/monitoring.config

With the binary, put (or link) the bundle at `/models`, or rewrite the `base_path`s in
`models.config` to where it lies, then:

    tensorflow_model_server --port=8500 --rest_api_port=8501 \\
      --model_config_file=/models/models.config \\
      --enable_batching --batching_parameters_file=/models/batching.config \\
      --monitoring_config_file=/models/monitoring.config

`resnet-deploy serve {bundle_name}` does this for you (or, without TF Serving installed, prints
the docker command and starts a local TF Serving-compatible server on the same ports).

Query it:

    curl http://localhost:8501/v1/models/{first}
    curl -X POST http://localhost:8501/v1/models/{first}:predict \\
      -d '{{"signature_name": "predict_image_bytes", "instances": [{{"b64": "'$(base64 -w0 cat.jpg)'"}}]}}'
    resnet-deploy predict --rest http://localhost:8501 --model {first} cat.jpg

Version `{version}` of every model carries the label `stable`
(`/v1/models/{first}/labels/stable:predict`). Prometheus metrics:
`http://localhost:8501/monitoring/prometheus/metrics`.

## Kubernetes, KServe and batch scoring

`deploy/kubernetes/` (TF Serving Deployment, Service, HPA, PDB, ConfigMap) and
`deploy/kserve/inferenceservice.yaml` were rendered for the `storage_uri` of the export config;
if their header says PLACEHOLDER, upload this folder and its tarball, then render them for the
real location (the tarball's sha256 pinned) and apply:

    resnet-deploy k8s {bundle_name} --storage-uri gs://BUCKET/PATH     # or s3://, pvc://CLAIM/PATH
    kubectl apply -f {bundle_name}.deploy/kubernetes/

Score a folder of images offline on Apache Beam (DirectRunner here; Dataflow, Flink or Spark
with Beam's options):

    resnet-deploy score {bundle_name} --model {first} --input photos/ --output scores/{first}

{device_section}
{_openvino_section(bundle_name, artifacts)}## Parity

{parity_markdown}

{BENCH_README_SECTION}"""


def _openvino_section(bundle_name: str, artifacts: list) -> str:
    """The OpenVINO section when the bundle has OpenVINO IRs (export.deploy.ovms), else nothing."""
    variants = sorted({a.variant for a in artifacts if a.format == "openvino"})
    if not variants:
        return ""
    from export.deploy.ovms import readme_section
    return readme_section(bundle_name, variants) + "\n"


#: The README's last section (also appended by `resnet-deploy bench` to bundles made before it).
BENCH_README_SECTION = """## Benchmarks

`make bench` (or `resnet-deploy bench <bundle>`) measures every artifact on the machine it runs
on: load time, latency p50/p90/p99 at batch 1 and 8, throughput, peak memory, top-1 agreement
with the fp32 reference, and the machine's own float32 matmul ceiling; every `.tflite` also at
1 and 2 LiteRT threads (batch 1), what one and two of a phone's cores give. It writes
[bench/bench.md](bench/bench.md) (tables), [bench/bench.json](bench/bench.json) and
[bench/bench.png](bench/bench.png) (latency vs size) and lists them in `manifest.json`; they are
absent until it has run.
"""
