"""What `resnet-deploy bench` writes: bench.json, bench.md and bench.png, beside the bundle.

The bundle itself is left as it was exported: its manifest.json, signature.sig and tarball are
never rewritten, so a signature still verifies after a bench, and a bundle changed after signing
cannot get its changes laundered into a fresh manifest. The results go to `<bundle>.bench/`
beside it (like `<bundle>.export.json`), or to --out.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from export.bench.document import BenchReport, bench_dir


def write_results(root: Path, report: BenchReport, out: str | os.PathLike | None = None) -> list[str]:
    """Write bench.json/.md/.png atomically into `out` (default `<bundle>.bench/` beside the bundle
    directory `root`). Returns the paths written."""
    from export.bench.report import plot, render_markdown
    from export.core.atomic import ensure_writable_dir, write_text
    out_dir = ensure_writable_dir(Path(out) if out else bench_dir(root))
    paths = [out_dir / "bench.json", out_dir / "bench.md", out_dir / "bench.png", out_dir / "report.html"]
    report.files = [str(p) for p in paths]
    doc = report.to_dict()
    write_text(paths[0], json.dumps(doc, indent=2) + "\n")
    write_text(paths[1], render_markdown(doc))
    plot(doc, paths[2])
    write_text(paths[3], _report_with_bench(root, doc))
    return doc["files"]


def _report_with_bench(root: Path, doc: dict) -> str:
    """The bundle's report.html with this bench's section (issue 26), written beside the bundle like
    the rest of the results: the bundle's own report.html stays as it was signed."""
    from export.bundle import report_html
    from export.bundle.documents import BundleDocs
    docs = BundleDocs.read(root)
    docs.bench = doc
    return report_html.render(docs)
