"""`make export`'s end-to-end parity: the laid-out bundle (still in its staging directory) run
from a generated corpus of encoded files (export.images.corpus, compact: every kind and size once,
3000-px phone JPEGs and the rotations phones write) through every real path, written into parity.md, the
README, file_parity.json and the manifest before the bundle is signed and published.

The runner (serving/tools/file_parity.py) needs the local server and Beam; the pipeline never
imports serving, so the CLI hands it in as `hook(bundle_dir, files_dir) -> FileParityReport`.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.quality.file_parity import FileParityReport, render_markdown

Hook = Callable[[Path, Path], FileParityReport]
REPORT_FILE = "file_parity.json"


def summary(report: FileParityReport) -> dict[str, Any]:
    """What the manifest records: the verdict and, per path, its largest probability difference."""
    worst: dict[str, float] = {}
    for r in report.rows:
        worst[r.path] = max(worst.get(r.path, 0.0), r.max_prob_diff)
    return {"passed": bool(report), "files": len(report.corpus), "rows": len(report.rows),
            "max_prob_diff_by_path": {k: round(v, 6) for k, v in sorted(worst.items())},
            "failures": [f"{r.variant} {r.artifact} {r.path}: {'; '.join(r.failures)}"
                         for r in report.rows if not r.passed]}


def check(staging: Path, hook: Hook, bundle_mod) -> bool:
    """Run `hook` on `staging` with the generated corpus; append the section to parity.md and the
    README, write file_parity.json, record the summary in the manifest (its file table re-hashed)."""
    from export.core.atomic import write_text
    from export.images import corpus
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-corpus.") as tmp:
        corpus.write(tmp, large=True, bad=True, compact=True)
        report = hook(staging, Path(tmp))
    section = render_markdown(report)
    write_text(staging / REPORT_FILE, json.dumps(report.to_dict(), indent=2) + "\n")
    for name in ("parity.md", "README.md"):
        path = staging / name
        write_text(path, path.read_text().rstrip("\n") + "\n\n" + section)
    manifest = bundle_mod.read_manifest(staging)
    manifest.extra["end_to_end_parity"] = summary(report)
    bundle_mod.write_manifest(staging, manifest)
    return bool(report)


def summary_failures(staging: Path) -> list[str]:
    """The failed rows recorded in the staged manifest (for the run's result)."""
    doc = json.loads((staging / "manifest.json").read_text())
    return list(doc.get("end_to_end_parity", {}).get("failures", []))


def refuse(out: Path, bundle_name: str, staging: Path, timings: list[dict], run: dict) -> dict:
    """A failed end-to-end parity: `<bundle>.parity-FAILED.md` (with the section) and no bundle."""
    import shutil
    failed = Path(out) / f"{bundle_name}.parity-FAILED"
    shutil.copyfile(staging / "parity.md", f"{failed}.md")
    shutil.copyfile(staging / REPORT_FILE, f"{failed}.file_parity.json")
    return {"published": False, "bundle": None, "report": f"{failed}.md",
            "failures": summary_failures(staging), "timings": timings, "run": run}
