"""Write a bundle's self-documentation: MODEL_CARD.md, bom.cdx.json (validated) and report.html.

`write_all` writes the three files into a bundle before its manifest lists (and signs) them;
`write_report` is bench's hook; `rerender_report` is `resnet-deploy report BUNDLE`: report.html
again, the manifest re-listed, the tarball re-packed.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from export.bundle.documents import BOM_FILE, CARD_FILE, REPORT_FILE, SELF_DOCUMENTS, BundleDocs


def write_all(root: str | Path, manifest: dict[str, Any], lock_path: Path | None = None) -> list[str]:
    """MODEL_CARD.md, bom.cdx.json (validated) and report.html for the bundle being laid out at `root`;
    written before manifest.json, which then lists them and the signature covers them."""
    from export.bundle import bom, card, report_html
    from export.core.atomic import write_text
    root = Path(root)
    docs = BundleDocs.read(root, manifest)
    write_text(root / CARD_FILE, card.render_markdown(docs))
    bom.write(root / BOM_FILE, docs, lock_path)
    write_text(root / REPORT_FILE, report_html.render(docs))
    return list(SELF_DOCUMENTS)


def write_report(root: str | Path, manifest: dict[str, Any]) -> None:
    """report.html again (bench's hook, before it re-lists the manifest): it gains the bench section."""
    from export.bundle import report_html
    from export.core.atomic import write_text
    write_text(Path(root) / REPORT_FILE, report_html.render(BundleDocs.read(root, manifest)))


def rerender_report(root: str | Path, quiet: bool = False) -> bool:
    """`resnet-deploy report BUNDLE`: render report.html from the bundle's documents again. When it
    changed, re-list it in manifest.json (a signature over the old manifest is removed, as bench does)
    and re-pack the tarball. Returns whether report.html changed."""
    from export.bundle import layout as bundle_mod
    from export.bundle import report_html
    from export.core.atomic import write_text
    root = Path(root)
    bundle_mod.read_manifest(root)  # one clear error when ROOT is no bundle
    html = report_html.render(BundleDocs.read(root))
    path = root / REPORT_FILE
    if path.is_file() and path.read_text() == html:
        return False
    write_text(path, html)
    signature = root / "signature.sig"
    if signature.is_file():
        signature.unlink()
        if not quiet:
            print(f"report: removed {signature}, which signed the previous manifest; re-sign the bundle: "
                  f"resnet-deploy sign {root} --private-key KEY.pem", file=sys.stderr, flush=True)
    bundle_mod.write_manifest(root, bundle_mod.read_manifest(root))
    if root.with_name(root.name + ".tar.gz").is_file():
        from export.bundle.packing import pack
        pack(root)
    return True
