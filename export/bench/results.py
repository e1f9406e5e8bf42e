"""What `resnet-deploy bench` writes: bench.json, bench.md and bench.png, and, inside a bundle, the
manifest's bench summary."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from export.bench.document import BenchReport

BENCH_DIR = "bench"


def write_results(root: Path, report: BenchReport, out: str | os.PathLike | None = None) -> list[str]:
    """Write bench.json/.md/.png atomically; inside the bundle, re-list them in the manifest and
    re-pack the tarball. Returns the paths written."""
    from export.bench.report import plot, render_markdown
    from export.core.atomic import ensure_writable_dir, write_text
    out_dir = ensure_writable_dir(Path(out) if out else root / BENCH_DIR)
    paths = [out_dir / "bench.json", out_dir / "bench.md", out_dir / "bench.png"]
    inside = out_dir.resolve().is_relative_to(root.resolve())
    report.files = [p.resolve().relative_to(root.resolve()).as_posix() if inside else str(p) for p in paths]
    doc = report.to_dict()
    write_text(paths[0], json.dumps(doc, indent=2) + "\n")
    write_text(paths[1], render_markdown(doc))
    plot(doc, paths[2])
    if inside:
        _relist(root, doc)
    return doc["files"]


def _relist(root: Path, doc: dict[str, Any]) -> None:
    """Rewrite manifest.json (every field kept, plus a `bench` summary) and re-pack the tarball."""
    from export.bundle import layout as bundle_mod
    from export.bundle.packing import pack
    from export.bundle.readme import BENCH_README_SECTION
    from export.core.atomic import write_text
    readme = root / "README.md"
    if readme.is_file() and "## Benchmarks" not in readme.read_text():
        write_text(readme, readme.read_text().rstrip("\n") + "\n\n" + BENCH_README_SECTION)
    manifest = bundle_mod.read_manifest(root)
    manifest.bench = {
        "created_at": doc["created_at"], "files": doc["files"], "cpu_model": doc["environment"]["cpu_model"],
        "threads": doc["settings"]["threads"], "ceiling_gflops": doc["ceiling"].get("gflops"),
        "artifacts": {r["label"]: None if r["error"] or r["skipped"] else {
            "p50_ms": {b: s["p50"] for b, s in r["latency_ms"].items()},
            "images_per_s": max(s["images_per_s"] for s in r["latency_ms"].values()),
            "top1_agreement": r["top1"]["agreement"]} for r in doc["artifacts"]}}
    signature = root / "signature.sig"
    if signature.is_file():  # it signed the manifest rewritten here: left in place it would read as tampering
        signature.unlink()
        print(f"bench: removed {signature}, which signed the previous manifest; re-sign the bundle: "
              f"resnet-deploy sign {root} --private-key KEY.pem", file=sys.stderr, flush=True)
    from export.bundle.selfdoc import write_report
    write_report(root, manifest.to_dict())  # report.html gains the bench section (issue 26)
    bundle_mod.write_manifest(root, manifest)
    tar = root.with_name(root.name + ".tar.gz")
    if tar.is_file():
        pack(root)
