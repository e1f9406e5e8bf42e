"""Exporters, one module per format, each with the same signature:

    export(built: BuiltModel, out_dir: Path, precision: str, **options) -> Artifact

The modules never import each other; what they share (the Artifact record, hashing, tool
versions) lives here. Which formats exist, and their precisions, is said in export.core.registry.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export.core.versions import tool_versions as tool_versions  # what Artifact.tool_versions records

#: artifacts.json: the index an export writes beside its artifacts (read by parity, bundle).
INDEX_NAME = "artifacts.json"
INDEX_FORMAT_VERSION = 1


@dataclass
class Artifact:
    """One exported file (or SavedModel directory) and what is known about it."""

    path: str
    format: str
    precision: str
    variant: str
    sha256: str
    bytes: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    tool_versions: dict[str, str]
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A unique short name within a bundle: `<variant>/<format>_<precision>`."""
        return f"{self.variant}/{self.format}_{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        return cls(**d)

    def relative_to(self, root: str | os.PathLike) -> Artifact:
        """A copy whose path is relative to `root` (both taken from the working directory)."""
        d = self.to_dict()
        d["path"] = os.path.relpath(os.path.abspath(self.path), os.path.abspath(root))
        return Artifact.from_dict(d)


def sha256_path(path: str | os.PathLike) -> tuple[str, int]:
    """sha256 and size of a file, or of a directory (its files' relative paths and bytes)."""
    p = Path(path)
    h = hashlib.sha256()
    total = 0
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
                total += len(chunk)
    return h.hexdigest(), total


def write_index(out_dir: str | os.PathLike, artifacts: list[Artifact]) -> Path:
    """Write (merge into) `out_dir/artifacts.json`, with paths relative to out_dir."""
    from export.core.atomic import write_text
    out_dir = Path(out_dir)
    index = read_index(out_dir) if (out_dir / INDEX_NAME).exists() else []
    by_key = {a.key: a for a in index}
    for a in artifacts:  # exporters' paths are absolute or relative to the working directory
        by_key[a.key] = a.relative_to(out_dir)
    doc = {"format_version": INDEX_FORMAT_VERSION,
           "artifacts": [by_key[k].to_dict() for k in sorted(by_key)]}
    write_text(out_dir / INDEX_NAME, json.dumps(doc, indent=2))
    return out_dir / INDEX_NAME


def read_index(out_dir: str | os.PathLike) -> list[Artifact]:
    """The artifacts listed in `out_dir/artifacts.json` (paths relative to out_dir)."""
    from export.core.errors import ExportError
    path = Path(out_dir) / INDEX_NAME
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"no {INDEX_NAME} in {out_dir}: run `resnet-deploy export` into it first") from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{path} is not valid JSON ({e.msg}); re-run the export") from None
    if doc.get("format_version") != INDEX_FORMAT_VERSION:
        raise ExportError(f"{path} has format_version {doc.get('format_version')}, expected {INDEX_FORMAT_VERSION}")
    return [Artifact.from_dict(a) for a in doc["artifacts"]]
