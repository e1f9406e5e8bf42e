"""Which bundle files two exports of the same commit, config and weights write byte for byte, why
the others differ, and a digest of what stays equal in them; `verify --against` per file.

Measured on two `resnet-deploy export` runs of one variant and two one-variant bundles (see the
README's reproducibility table). Byte-identical: the TFLite files (their metadata zip stamped with
a fixed time), the ONNX files (tf2onnx's constant names made canonical), the SavedModel's
saved_model.pb and variables (written in the model's variable order), the warmup records, the
golden files (fixed zip times) and the TF Serving configs. The rest carries a time, a measurement or a random
id; `record()` writes, for each such file, why, and a `stable` digest over the part that must
still match (for fingerprint.pb: the graph and weights hashes TensorFlow computed).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class JsonStable:
    """A JSON file's stable part (the document less what `drop` removes) and its digest; compare()
    also names where two stable parts first differ."""

    drop: Callable[[Any], Any]

    def part(self, path: Path) -> Any:
        return self.drop(json.loads(path.read_text()))

    def __call__(self, path: Path) -> str:
        return hashlib.sha256(json.dumps(self.part(path), sort_keys=True).encode()).hexdigest()


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The JSON path of the first place two documents differ (`variants.dense.training.epochs`,
    `components[3].properties`), or None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}.{key}".lstrip(".") + (" (only in this bundle)" if key in a else " (only in the other)")
            found = first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None if len(a) == len(b) else f"{where} (length {len(a)} vs {len(b)})".lstrip(".")
    return None if a == b else (where.lstrip(".") or "the document") + f" ({_short(a)} vs {_short(b)})"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


#: FingerprintDef's `uuid` field (tensorflow/core/protobuf/fingerprint.proto): random per save.
_FINGERPRINT_UUID_FIELD = 7


def _fingerprint_digest(path: Path) -> str:
    """sha256 of the SavedModel fingerprint without its uuid: TensorFlow's hashes of saved_model.pb,
    the graph, the signatures, the object graph and the checkpoint (the weights).

    Read from the protobuf wire format directly (top-level fields, in file order), so that
    `make export`'s parent process never imports TensorFlow (~650 MB) for one small proto."""
    data, kept, i = path.read_bytes(), bytearray(), 0
    while i < len(data):
        start = i
        key, i = _varint(data, i)
        wire = key & 7
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"{path}: unexpected protobuf wire type {wire}")
        if key >> 3 != _FINGERPRINT_UUID_FIELD:
            kept += data[start:i]
    return hashlib.sha256(bytes(kept)).hexdigest()


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = data[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return value, i


def _drop_artifact_volatile(doc: dict) -> dict:
    """Without each artifact's export seconds, and without a SavedModel's directory digest and size (they
    cover fingerprint.pb; its other files are compared one by one)."""
    for a in doc.get("artifacts", []):
        a.pop("seconds", None)
        if a.get("format") == "savedmodel":  # fingerprint.pb's random uuid: its digest and, at times, one byte
            a.pop("sha256", None)
            a.pop("bytes", None)
    return doc


def _drop_parity_timing(doc: dict) -> dict:
    doc.pop("created", None)
    for r in doc.get("results", []):
        r.pop("mean_ms", None)
    return doc


def _drop_bom_volatile(doc: dict) -> dict:
    """Without the serial number and timestamp, and without the SavedModel components' hashes (they cover
    fingerprint.pb)."""
    doc.pop("serialNumber", None)
    doc.get("metadata", {}).pop("timestamp", None)
    for c in doc.get("components", []):
        if {"name": "resnet-deploy:format", "value": "savedmodel"} in c.get("properties", []):
            c.pop("hashes", None)  # the directory digest and size cover fingerprint.pb (as in artifacts.json)
            c["properties"] = [p for p in c["properties"] if p.get("name") != "resnet-deploy:bytes"]
    return doc


def _drop_file_parity_measurements(doc: dict) -> dict:
    """Without the measured probability differences (and the file that gave the largest)."""
    for r in doc.get("rows", []):
        for key in ("max_prob_diff", "mean_prob_diff", "worst_file"):
            r.pop(key, None)
    return doc


def _drop_manifest_volatile(doc: dict) -> dict:
    for key in ("created_at", "export_timings", "bench", "reproducibility"):
        doc.pop(key, None)
    (doc.get("end_to_end_parity") or {}).pop("max_prob_diff_by_path", None)
    for variant in doc.get("variants", {}).values():  # a trained variant: was its run reused, where, how long
        for key in ("cached", "run", "seconds"):
            (variant.get("training") or {}).pop(key, None)
    _drop_artifact_volatile(doc)
    for name in ("parity.json", "parity.md", "README.md", "artifacts.json", "bom.cdx.json", "report.html",
                 "file_parity.json"):
        doc.get("files", {}).pop(name, None)
    for path in list(doc.get("files", {})):
        if path.endswith("/fingerprint.pb") or path.startswith("bench/"):
            doc["files"].pop(path)
    return doc


@dataclass(frozen=True)
class Volatile:
    """A file that differs between two identical exports: why, and what `stable` digests."""

    pattern: str
    why: str
    stable: str
    digest: Callable[[Path], str] | None = None

    def matches(self, path: str) -> bool:
        return re.fullmatch(self.pattern, path) is not None


VOLATILE: tuple[Volatile, ...] = (
    Volatile(r"tfserving/[^/]+/\d+/fingerprint\.pb",
             "TensorFlow writes a random uuid into every SavedModel fingerprint (no option to fix it)",
             "the fingerprint without its uuid: TensorFlow's hashes of saved_model.pb, graph, signatures, "
             "object graph and checkpoint (graph and weights)", _fingerprint_digest),
    Volatile(r"artifacts\.json", "records each artifact's export time in seconds, and the SavedModel "
                                 "directory's digest, which covers fingerprint.pb",
             "every other field", JsonStable(_drop_artifact_volatile)),
    Volatile(r"parity\.json", "records when parity ran and the mean inference time per batch",
             "the verdicts and error metrics (everything but created and mean_ms)", JsonStable(_drop_parity_timing)),
    Volatile(r"file_parity\.json", "records the probability differences measured from the files; Beam's "
                                   "DirectRunner batches files as they come, and a batch's size moves the last bits",
             "every row's verdict, tolerance, top-1 agreement and refusals, the corpus and the bad files' "
             "messages (all but the measured differences)", JsonStable(_drop_file_parity_measurements)),
    Volatile(r"parity\.md", "renders parity.json and file_parity.json, with times and latencies", "see parity.json"),
    Volatile(r"README\.md", "embeds parity.md", "see parity.json"),
    Volatile(r"bom\.cdx\.json", "its serial number and the SavedModel components' SHA-256 derive from the "
                                "SavedModel directory digest (fingerprint.pb), its timestamp is the export's",
             "every component, model card and dependency but those", JsonStable(_drop_bom_volatile)),
    Volatile(r"report\.html", "shows when the bundle was exported, and the benchmark once bench has run",
             "see manifest.json and parity.json"),
    Volatile(r"bench/.*", "benchmark measurements of the machine it ran on", "nothing (measurements)"),
    Volatile(r"manifest\.json", "created_at, export_timings, each artifact's seconds, the SavedModel "
                                "directory digest, whether a trained variant's run was reused (its path, seconds), "
                                "and the end-to-end parity's measured differences",
             "the file table of every reproducible file, variants, configs and tool versions",
             JsonStable(_drop_manifest_volatile)),
    Volatile(r"signature\.sig", "ECDSA signatures use a random nonce, and the signed statement lists "
                                "manifest.json", "nothing: verify it with the public key instead"),
)


def volatile_for(path: str) -> Volatile | None:
    return next((v for v in VOLATILE if v.matches(path)), None)


def record(root: str | Path) -> dict[str, dict[str, str]]:
    """For each file under `root` known to differ between identical exports: why, what stays equal,
    and that part's digest (written into manifest.json as `reproducibility`)."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        v = volatile_for(rel)
        if not p.is_file() or v is None or rel in ("manifest.json", "signature.sig"):
            continue
        entry = {"why": v.why, "stable": v.stable}
        if v.digest is not None:
            entry["stable_sha256"] = v.digest(p)
        out[rel] = entry
    return out


@dataclass
class FileDiff:
    """One file compared across two bundles."""

    path: str
    status: str  # identical | expected | DIFFERENT | only-in-this | only-in-other
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("identical", "expected")


def _sha(path: Path) -> str:
    from export.core.atomic import sha256_file
    return sha256_file(path)


def compare(root: str | Path, other: str | Path) -> list[FileDiff]:
    """Every file of two bundle directories: identical, differing as expected (with the stable digest
    equal), DIFFERENT (bytes differ where they should not, or the stable part differs), or only in one."""
    root, other = Path(root), Path(other)
    mine = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    theirs = {p.relative_to(other).as_posix(): p for p in other.rglob("*") if p.is_file() and not p.is_symlink()}
    out = []
    for rel in sorted(set(mine) | set(theirs)):
        if rel not in theirs or rel not in mine:
            side = "this" if rel in mine else "other"
            if rel == "signature.sig" or rel.startswith("bench/"):  # signed / benchmarked on one side
                out.append(FileDiff(rel, "expected", f"only in the {side} bundle"))
            else:
                out.append(FileDiff(rel, f"only-in-{side}"))
            continue
        a, b = _sha(mine[rel]), _sha(theirs[rel])
        if a == b:
            out.append(FileDiff(rel, "identical"))
            continue
        v = volatile_for(rel)
        if v is None:
            out.append(FileDiff(rel, "DIFFERENT", f"sha256 {a[:12]} vs {b[:12]}; this file should be byte-identical"))
        elif v.digest is None:
            out.append(FileDiff(rel, "expected", v.why))
        else:
            try:
                da, db = v.digest(mine[rel]), v.digest(theirs[rel])
            except (OSError, ValueError) as e:
                out.append(FileDiff(rel, "DIFFERENT", f"cannot read its stable part ({e})"))
                continue
            if da == db:
                out.append(FileDiff(rel, "expected", f"{v.why}; stable part equal ({v.stable})"))
            else:
                where = (first_difference(v.digest.part(mine[rel]), v.digest.part(theirs[rel]))
                         if isinstance(v.digest, JsonStable) else None)
                out.append(FileDiff(rel, "DIFFERENT", f"{v.stable} differs ({da[:12]} vs {db[:12]})"
                                    + (f": first at {where}" if where else "")))
    return out


def render(diffs: list[FileDiff], other: str) -> str:
    """The per-file table `verify --against` prints, then one summary line."""
    width = max((len(d.path) for d in diffs), default=4)
    lines = [f"{d.path:{width}s}  {d.status:13s} {d.detail}".rstrip() for d in diffs]
    counts: dict[str, int] = {}
    for d in diffs:
        counts[d.status] = counts.get(d.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines.append(f"against {other}: {len(diffs)} files: {summary}")
    return "\n".join(lines)
