"""`resnet-deploy report BUNDLE`: render the bundle's report.html again from its documents (after
`bench`, or with a newer resnet-deploy), re-list it in manifest.json and re-pack the tarball.

Importing this module is cheap (argparse only); the handler imports what it needs.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def add_parsers(sub, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add `report` to the `resnet-deploy` subparsers and the `commands` table."""
    p = sub.add_parser("report", help="render a bundle's report.html again from its manifest, parity and bench "
                                      "documents (re-lists it in manifest.json)")
    p.add_argument("bundle", metavar="BUNDLE", help="dist/<name>-<version> (a directory)")
    commands["report"] = cmd_report


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render report.html under the bundle directory's parent lock; print where it is and what changed."""
    from export.bundle.selfdoc import REPORT_FILE, rerender_report
    from export.core.errors import BundleError
    from export.core.locks import exclusive_output
    root = Path(args.bundle)
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory; give dist/<name>-<version>")
    with exclusive_output(root.resolve().parent, command=f"resnet-deploy report {root.name}"):
        changed = rerender_report(root)
    print(f"{root / REPORT_FILE}: {'rendered again and re-listed in manifest.json' if changed else 'unchanged'}")
    return 0
