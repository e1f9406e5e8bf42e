"""manifest.json: what a bundle holds and how it was made, as a versioned dataclass that
round-trips through JSON (like ParityReport; after Model Navigator's status documents).

Readers get typed fields; fields written by a newer tool that this version does not know are
kept in `extra` and written back unchanged, so re-listing a bundle (bench) never drops them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from export.core.errors import BundleError
from export.formats import Artifact

MANIFEST_FORMAT_VERSION = 1


class ParityVerdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"


@dataclass
class FileEntry:
    sha256: str
    bytes: int


@dataclass
class StageTiming:
    variant: str  # a variant name, or "all" for stages over the whole bundle
    stage: str
    seconds: float


@dataclass
class ParitySummary:
    """The parity verdict of the bundle (the full report is parity.json beside the manifest)."""

    passed: bool
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> ParityVerdict:
        return ParityVerdict.PASSED if self.passed else ParityVerdict.FAILED


@dataclass
class VariantRecord:
    """One variant as built: its spec, classes, parameter counts, I/O and weights provenance."""

    spec: dict[str, Any]
    num_classes: int
    labels: list[str]
    params: dict[str, int]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    weights: dict[str, Any]
    training: dict[str, Any] | None = None  # export.training.runs.Run.provenance() of a trained variant
    image: dict[str, Any] | None = None  # export.images.ImageContract.to_dict(): how a file becomes pixels
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    name: str
    version: int
    created_at: str
    tool_versions: dict[str, str]
    config: str
    variants: dict[str, VariantRecord]
    artifacts: list[Artifact]
    parity: ParitySummary
    export_timings: list[StageTiming] = field(default_factory=list)
    git: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] | None = None   # read from bundles benched before bench stopped rewriting manifests
    accuracy: dict[str, Any] | None = None  # the accuracy gate's summary (parity.json has it all)
    # files that differ between two identical exports: why, what stays equal, its digest (reproducibility.py)
    reproducibility: dict[str, dict[str, str]] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = MANIFEST_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format_version": self.format_version}
        for f in dataclasses.fields(self):
            if f.name in ("format_version", "extra"):
                continue
            value = getattr(self, f.name)
            if f.name == "variants":
                value = {k: _flatten(asdict(v)) for k, v in value.items()}
            elif f.name == "artifacts":
                value = [a.to_dict() for a in value]
            elif (f.name in ("bench", "accuracy") and value is None) or (f.name == "reproducibility" and not value):
                continue
            elif dataclasses.is_dataclass(value) or isinstance(value, list | dict):
                value = _plain(value)
            d[f.name] = value
        d.update(self.extra)
        files = d.pop("files")
        d["files"] = files  # last, as before: the table is the longest part
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest.json") -> Manifest:
        if d.get("format_version") != MANIFEST_FORMAT_VERSION or "files" not in d:
            raise BundleError(f"{source} has manifest format {d.get('format_version')!r}, "
                              f"expected {MANIFEST_FORMAT_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        try:
            return cls(
                name=d["name"], version=d["version"], created_at=d["created_at"],
                tool_versions=d.get("tool_versions", {}), config=d.get("config", ""),
                variants={k: _variant(v) for k, v in d.get("variants", {}).items()},
                artifacts=[Artifact.from_dict(a) for a in d.get("artifacts", [])],
                parity=ParitySummary(**d["parity"]) if "parity" in d else ParitySummary(passed=False),
                export_timings=[StageTiming(**t) for t in d.get("export_timings", [])],
                git=d.get("git", {}), bench=d.get("bench"), accuracy=d.get("accuracy"),
                reproducibility=d.get("reproducibility", {}),
                files={k: FileEntry(**v) for k, v in d["files"].items()},
                extra={k: v for k, v in d.items() if k not in known},
            )
        except (KeyError, TypeError) as e:
            raise BundleError(f"{source} is not a valid manifest ({type(e).__name__}: {e}); re-export the bundle") from None


def _variant(d: dict[str, Any]) -> VariantRecord:
    names = {f.name for f in dataclasses.fields(VariantRecord)} - {"extra"}
    return VariantRecord(**{k: v for k, v in d.items() if k in names},
                         extra={k: v for k, v in d.items() if k not in names})


def _flatten(d: dict[str, Any]) -> dict[str, Any]:
    extra = d.pop("extra", {})
    return {**d, **extra}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
