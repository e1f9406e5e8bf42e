"""The bundle's own JSON documents, read once for MODEL_CARD.md, bom.cdx.json and report.html:
manifest.json (or, while a bundle is laid out, the manifest about to be written), parity.json, and
bench/bench.json once `make bench` has run. Every figure the three files show comes from here
(export.bundle.selfdoc writes them).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.core.errors import BundleError

CARD_FILE = "MODEL_CARD.md"
BOM_FILE = "bom.cdx.json"
REPORT_FILE = "report.html"
PARITY_FILE = "parity.json"
BENCH_FILE = "bench/bench.json"
#: The three files this module writes, as the manifest lists them.
SELF_DOCUMENTS = (CARD_FILE, BOM_FILE, REPORT_FILE)


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); re-export the bundle") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{path} is not a JSON object; re-export the bundle")
    return doc


@dataclass
class BundleDocs:
    """What a bundle says about itself, as plain JSON (forward-compatible: unknown keys are kept)."""

    manifest: dict[str, Any]
    parity: dict[str, Any] | None = None
    bench: dict[str, Any] | None = None

    @classmethod
    def read(cls, root: str | Path, manifest: dict[str, Any] | None = None) -> BundleDocs:
        """The documents of the bundle at `root`; `manifest` stands in for manifest.json while laying out."""
        root = Path(root)
        if manifest is None:
            manifest = _load(root / "manifest.json")
            if manifest is None:
                raise BundleError(f"{root} is not a bundle: it has no manifest.json")
        return cls(manifest, _load(root / PARITY_FILE), _load(root / BENCH_FILE))

    @property
    def bundle_name(self) -> str:
        return f"{self.manifest['name']}-{self.manifest['version']}"

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        return self.manifest.get("variants", {})

    def artifacts(self, variant: str | None = None) -> list[dict[str, Any]]:
        arts = self.manifest.get("artifacts", [])
        return [a for a in arts if variant is None or a["variant"] == variant]

    @property
    def card(self) -> dict[str, Any]:
        """The manifest's `card`: the config's [card] texts, resolved (export.bundle.card.card_record)."""
        return self.manifest.get("card") or {}

    def accuracy_section(self, variant: str) -> dict[str, Any] | None:
        """parity.json's accuracy-gate section of `variant` (eval set, reference, per artifact), if any."""
        for s in (self.parity or {}).get("accuracy", []):
            if s.get("variant") == variant:
                return s
        return None

    def parity_rows(self, variant: str | None = None) -> list[dict[str, Any]]:
        rows = (self.parity or {}).get("results", [])
        return [r for r in rows if variant is None or r.get("variant") == variant]

    @staticmethod
    def row_label(row: dict[str, Any]) -> str:
        """A parity row's name as parity.md prints it: the key, `@ GPU:0` on a GPU row, `@ bf16` on a hint row."""
        where = [row["device_requested"]] if row.get("device_requested", "CPU") != "CPU" else []
        return " @ ".join([row["key"], *where, *([row["precision_hint"]] if row.get("precision_hint") else [])])

    def dropped(self) -> list[dict[str, Any]]:
        return (self.manifest.get("accuracy") or {}).get("dropped", [])

    def end_to_end(self) -> Any:
        """parity.json's end-to-end path section (from the encoded file through every real path), if any."""
        parity = self.parity or {}
        return parity.get("end_to_end") or parity.get("paths")
