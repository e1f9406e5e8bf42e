"""Deployment bundles: the file table, manifest.json read and written, and the files checked against it.

A bundle is a directory `dist/<name>-<version>/` whose `manifest.json` lists every other file
with its sha256 and size, plus `dist/<name>-<version>.tar.gz` and its `.sha256` (written by
export.bundle.packing). Bundles are built in a hidden staging directory beside `dist/` and renamed
into place when complete; the README comes from export.bundle.readme.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from export.bundle.manifest import FileEntry, Manifest
from export.core.atomic import sha256_file, write_text
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



def verify_dir(root: Path) -> tuple[FileCheck, Manifest]:
    """Re-hash a bundle directory against its manifest."""
    manifest = read_manifest(root)
    return check_files(root, manifest), manifest
