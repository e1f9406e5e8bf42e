"""`resnet-deploy parity --artifacts DIR --files FILES`: end-to-end parity from encoded files
through every real path (serving.tools.file_parity), written as file_parity.json/.md."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--files", metavar="DIR", help="end-to-end parity instead: every file in DIR through the server "
                                                  "(REST, gRPC, both signatures), predict --pixels, classify, score "
                                                  "and MediaPipe, against predict_image_bytes")
    s.add_argument("--no-server", action="store_true", help="with --files: skip the local server rows")
    s.add_argument("--no-score", action="store_true", help="with --files: skip the Beam score rows")
    s.add_argument("--no-mediapipe", action="store_true", help="with --files: skip the MediaPipe rows")


def run(args: argparse.Namespace) -> int:
    """The --files mode of `parity`: 0 when every gated path passes, else 1."""
    from export.core.atomic import write_text
    from export.quality.file_parity import render_markdown
    from serving.tools.file_parity import run as run_files
    progress = None if args.json else (lambda what: print(f"checked {what}", file=sys.stderr, flush=True))
    report = run_files(Path(args.artifacts), Path(args.files), args.variant, server=not args.no_server,
                       beam=not args.no_score, mediapipe=not args.no_mediapipe, threads=args.threads,
                       progress=progress)
    markdown = render_markdown(report)
    if args.report:
        out = Path(args.report)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "file_parity.json", json.dumps(report.to_dict(), indent=2) + "\n")
        write_text(out / "file_parity.md", markdown)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(markdown)
    return 0 if report else 1


def bundle_hook(bundle_dir: Path, files_dir: Path):
    """`make export`'s end-to-end check (export.pipeline.end_to_end.Hook): every path, every variant,
    as the pool's tasks (each variant in POOL_SPLIT's parts) on the export's workers (one per core).
    A one-variant bundle gets both cores too: its two parts run at once."""
    from export.formats import read_index
    from export.pipeline.workers import default_workers
    from serving.tools.file_parity import run as run_files
    from serving.tools.file_parity_pool import pool_tasks
    tasks = pool_tasks(read_index(bundle_dir))
    return run_files(bundle_dir, files_dir, workers=min(default_workers(), tasks))  # 1: in-process
