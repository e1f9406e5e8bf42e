"""`resnet-deploy bench` (`make bench`): every artifact of a bundle measured on this machine, with the
local server's load run beside it (in its own process: serving/ is imported only there)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from export.core.argtypes import non_negative_int, positive_int


def add_parsers(sub, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add `bench` to the subparsers and the `commands` table."""
    s = sub.add_parser("bench", help="benchmark every artifact of a bundle (make bench): speed, memory, accuracy")
    s.add_argument("bundle", help="dist/<name>-<version> (a .tar.gz only with --out)")
    s.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all logical CPUs)")
    s.add_argument("--warmup", type=non_negative_int, default=3, help="warm-up runs per batch size (default 3)")
    s.add_argument("--runs", type=positive_int, default=10,
                   help="timed runs at batch 1 (default 10); larger batches run half as many")
    s.add_argument("--rounds", type=positive_int, default=None,
                   help="paired rounds at batch 1, each running every artifact of a variant once (default 15); "
                        "the speed-ups and the recommendation come from them")
    s.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default 1,8)")
    s.add_argument("--variant", action="append", default=None, help="benchmark only this variant (repeatable)")
    s.add_argument("--out", default=None, metavar="DIR",
                   help="write bench.{json,md,png} here instead of BUNDLE/bench/ (the bundle is left untouched)")
    s.add_argument("--wait", action="store_true",
                   help="wait for a run holding the bundle's folder (make export) instead of refusing")
    s.add_argument("--no-serving", action="store_true",
                   help="skip the local server's load run (gRPC overhead, batching on/off per backend)")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    commands["bench"] = cmd_bench


def cmd_bench(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from export.bench import report as bench_report
    from export.bench import run as bench
    from export.bundle import packing
    from export.cli.model import print_json
    from export.core.errors import UsageError
    batch_sizes = bench.parse_batch_sizes(args.batch_sizes)
    path = Path(args.bundle)
    if path.is_file() and not args.out:
        raise UsageError(f"{path} is a file: bench writes into a bundle directory; give dist/<name>-<version> "
                         "(or --out DIR to benchmark a .tar.gz)")

    def progress(what: str, status: str) -> None:
        print(f"bench {what}: {status}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="resnet-deploy-bench.") as scratch:
        root = packing.open_bundle(path, Path(scratch))
        probe = None if args.no_serving else (lambda threads: _serving_probe(root, threads))
        report = bench.run_bench(root, threads=args.threads, warmup=args.warmup, runs=args.runs, rounds=args.rounds,
                              batch_sizes=batch_sizes, out=args.out, variants=args.variant,
                              progress=None if args.json else progress, serving_probe=probe, wait=args.wait)
    doc = report.to_dict()
    if args.json:
        print_json(doc)
    else:
        print(bench_report.render_markdown(doc))
        print("wrote " + ", ".join(doc["files"]))
    return 0 if report else 1


#: Seconds the local server's load run may take (its servers start, then 3 s per backend and mode).
LOADTEST_TIMEOUT_S = 900


def _serving_probe(root, threads: int) -> dict:
    """The local server's load run for the bench targets (serving.tools.loadtest --bench-json), in its
    own process so the bench's process stays free of TensorFlow."""
    import json
    import tempfile
    from pathlib import Path

    from export.core.processes import run_group
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-loadtest.") as tmp:
        out = Path(tmp) / "serving.json"
        # Its own process group: on the timeout, its `serve` children are killed with it.
        proc = run_group([sys.executable, "-m", "serving.tools.loadtest", str(root), "--bench-json", str(out),
                          "--threads", str(threads)], timeout=LOADTEST_TIMEOUT_S)
        if proc.returncode != 0 or not out.is_file():
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            return {"error": (lines[-1] if lines else f"exit code {proc.returncode}")[:300]}
        return json.loads(out.read_text())

