"""`resnet-deploy` subcommands. Thin: parse arguments, call one function, print the result.

Any ResnetDeployError becomes one line on stderr (`error: ...`) and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from export.core.argtypes import non_negative_int, positive_int
from export.core.errors import ResnetDeployError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
#: Subcommands that never need TensorFlow in the process (a REST client call must not pay for
#: importing it); every other command imports it first, quietly (see import_tensorflow_quietly).
#: `bundle` and `bench` run their TensorFlow work in worker processes: TensorFlow in the parent
#: would hold ~650 MB for nothing (measured: 665 MB of make export's 6.1 GiB peak).
WITHOUT_TENSORFLOW = {"variants", "predict", "status", "metadata", "k8s", "sign", "bundle", "bench", "demo-data"}


def command(name: str):
    def register(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = fn
        return fn
    return register


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


@command("variants")
def cmd_variants(args: argparse.Namespace) -> int:
    from export.model.variants import list_variants
    specs = list_variants()
    if args.json:
        _print_json([s.to_dict() for s in specs])
        return 0
    for s in specs:
        print(f"{s.name:10s} {s.num_classes:3d} classes  {s.input_size}px  {s.description}")
    return 0


@command("build")
def cmd_build(args: argparse.Namespace) -> int:
    from export.model.build import build, io_spec, param_counts
    from export.model.variants import get_variant
    spec = get_variant(args.variant)
    built = build(spec, weights=args.weights, num_classes=args.num_classes,
                  unfreeze_stages=args.unfreeze_stages)
    if args.save:
        from export.core.atomic import save_keras_atomic
        save_keras_atomic(built.model, args.save)
    record: dict[str, Any] = {"variant": built.spec.name, "num_classes": built.num_classes,
              "params": param_counts(built.model), **io_spec(built.model),
              "weights": built.weights}
    if args.save:
        record["saved"] = args.save
    if args.json:
        _print_json(record)
    else:
        p = record["params"]
        print(f"{built.spec.name}: {built.num_classes} classes, {p['trainable']:,} trainable + "
              f"{p['non_trainable']:,} non-trainable = {p['total']:,} parameters "
              f"(weights {built.weights['source']})")
        if args.save:
            print(f"saved {args.save}")
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from export.core.locks import exclusive_output
    from export.model.build import build
    from export.model.variants import get_variant
    from export.pipeline.run import check_destination, export_artifacts, resolve_targets
    from export.quality import golden
    spec = get_variant(args.variant)
    targets = resolve_targets(args.format, args.precision)
    progress = None if args.json else (lambda v, f, p: print(f"exporting {v} {f} {p} ...", flush=True))
    # One run per --out at a time (a second one refuses, or waits with --wait); staging that killed
    # runs left there is removed first.
    with exclusive_output(args.out, command=f"resnet-deploy export --variant {spec.name}", wait=args.wait):
        # Bad --out or an artifact in the way is said before minutes of building and calibrating.
        check_destination(args.out, spec.name, targets, version=args.version, overwrite=args.overwrite)
        calibration = None
        if args.calibration_data:  # a bad tree is said before minutes of building
            from export.training.labeled_sets import calibration_set
            cal = calibration_set(args.calibration_data, spec.input_size, count=args.calibration_count)
            calibration = {"calibration": cal.images, "calibration_record": cal.record}
        built = build(spec, weights=args.weights, num_classes=args.num_classes)
        artifacts = export_artifacts(built, args.out, targets, version=args.version, opset=args.opset,
                                     overwrite=args.overwrite, progress=progress, calibration=calibration)
        # The reference outputs go beside the artifacts, so `parity --artifacts OUT` needs nothing else.
        golden.save(args.out, golden.make(built))
    records: list[dict[str, Any]] = [{"path": a.path, "format": a.format, "precision": a.precision, "bytes": a.bytes,
                "sha256": a.sha256, "seconds": a.seconds} for a in artifacts]
    if args.json:
        _print_json(records)
    else:
        for r in records:
            print(f"{r['format']:10s} {r['precision']:8s} {r['bytes'] / 1e6:8.1f} MB {r['seconds']:7.1f} s  "
                  f"{r['sha256'][:12]}  {r['path']}")
    return 0


@command("parity")
def cmd_parity(args: argparse.Namespace) -> int:
    from pathlib import Path

    from export.core.errors import UsageError
    from export.formats import read_index
    from export.quality import golden, parity
    root = Path(args.artifacts)
    if not root.is_dir():
        raise UsageError(f"--artifacts {root} is not a directory; give the directory holding artifacts.json")
    artifacts = read_index(root)
    if args.variant:
        artifacts = [a for a in artifacts if a.variant == args.variant]
    if not artifacts:
        what = f" of variant {args.variant!r}" if args.variant else ""
        raise UsageError(f"no artifacts{what} listed in {root / 'artifacts.json'}")

    def rebuild(variant: str):
        from export.model.build import build
        from export.model.variants import get_variant
        classes = {a.outputs[0]["shape"][-1] for a in artifacts if a.variant == variant and a.outputs}
        built = build(get_variant(variant), weights=args.weights,
                      num_classes=classes.pop() if len(classes) == 1 else None)
        return golden.make(built, batch_size=args.batch_size)

    from export.quality.accuracy import parse_max_drop
    from export.quality.evaluation import evaluate, load_sets
    max_drop = parse_max_drop(args.max_accuracy_drop)
    eval_sets = load_sets(root, artifacts, args.eval_data) if args.eval_data else None
    variants = sorted({a.variant for a in artifacts})
    goldens, sources = golden.references(root, variants, rebuild if args.weights else None)
    progress = None if args.json else (lambda what: print(f"checking {what} ...", file=sys.stderr, flush=True))
    report = parity.run_suite(root, artifacts, goldens, sources=sources, batch_sizes=sorted({1, args.batch_size}),
                              require_gpu=args.require_gpu, num_threads=args.threads, progress=progress)
    if eval_sets:
        report.accuracy = evaluate(root, artifacts, eval_sets, max_drop, weights=args.weights,
                                   threads=args.threads, progress=progress)
    if args.report:
        json_path, md_path = report.save(args.report)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(parity.render_markdown(report, full=False))
        if args.report:
            print(f"wrote {json_path} and {md_path}")
    return 0 if report else 1


@command("bundle")
def cmd_bundle(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from export.cli.bundle import signing_key
    from export.pipeline.run import run_bundle
    result = run_bundle(args.config, args.out, weights=args.weights, quiet=args.json, signer=signing_key(args),
                        wait=args.wait, runs=args.runs)
    if args.json:
        _print_json({k: v for k, v in result.items() if k not in ("report", "artifacts")})
        return 0 if result["published"] else 1
    console = Console()
    if not result["published"]:
        console.print(f"[red]parity failed[/red]: bundle NOT published; report: {result['report']}")
        for failure in result["failures"][:20]:
            console.print(f"  - {failure}")
        return 1
    table = Table(title=f"bundle {result['bundle']} ({result['seconds']} s)")
    for col in ("variant", "format", "precision", "size", "export s", "parity"):
        table.add_column(col, justify="right" if col in ("size", "export s") else "left")
    verdicts: dict[str, list[str]] = {}
    for r in result["report"].results:  # the CPU row first, then any GPU row ("GPU skipped") or hint row
        where = " ".join(w for w in (r.device_requested if r.device_requested != "CPU" else "",
                                     r.precision_hint) if w)
        verdicts.setdefault(r.key, []).append(f"{where} {r.status}".strip())
    for a in result["artifacts"]:
        table.add_row(a.variant, a.format, a.precision, f"{a.bytes / 1e6:.1f} MB", f"{a.seconds:.1f}",
                      ", ".join(verdicts.get(a.key, ["n/a"])))
    console.print(table)
    console.print(f"tarball {result['tarball']}\nsha256  {result['sha256']}")
    return 0


@command("bench")
def cmd_bench(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from export.bench import report as bench_report
    from export.bench import run as bench
    from export.bundle import layout as bundle
    from export.core.errors import UsageError
    batch_sizes = bench.parse_batch_sizes(args.batch_sizes)
    path = Path(args.bundle)
    if path.is_file() and not args.out:
        raise UsageError(f"{path} is a file: bench writes into a bundle directory; give dist/<name>-<version> "
                         "(or --out DIR to benchmark a .tar.gz)")

    def progress(what: str, status: str) -> None:
        print(f"bench {what}: {status}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="resnet-deploy-bench.") as scratch:
        root = bundle.open_bundle(path, Path(scratch))
        probe = None if args.no_serving else (lambda threads: _serving_probe(root, threads))
        report = bench.run_bench(root, threads=args.threads, warmup=args.warmup, runs=args.runs,
                              batch_sizes=batch_sizes, out=args.out, variants=args.variant,
                              progress=None if args.json else progress, serving_probe=probe)
    doc = report.to_dict()
    if args.json:
        _print_json(doc)
    else:
        print(bench_report.render_markdown(doc))
        print("wrote " + ", ".join(doc["files"]))
    return 0 if report else 1




def _serving_probe(root, threads: int) -> dict:
    """The local server's load run for the bench targets (serving.tools.loadtest --bench-json), in its
    own process so the bench's process stays free of TensorFlow."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="resnet-deploy-loadtest.") as tmp:
        out = Path(tmp) / "serving.json"
        proc = subprocess.run([sys.executable, "-m", "serving.tools.loadtest", str(root), "--bench-json", str(out),
                               "--threads", str(threads)], capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0 or not out.is_file():
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            return {"error": (lines[-1] if lines else f"exit code {proc.returncode}")[:300]}
        return json.loads(out.read_text())


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _print_chained_traceback(e: BaseException) -> None:
    """The traceback of `e` with every exception it was raised from or during, including those
    that the one-line errors hide with `raise ... from None`."""
    import traceback
    seen: set[int] = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__suppress_context__ = False
        link = link.__cause__ or link.__context__
    traceback.print_exception(e, file=sys.stderr)


def make_parser() -> argparse.ArgumentParser:
    from export.cli.bundle import add_parsers as add_bundle_parsers  # sign, verify
    from export.cli.bundle import add_signing_arguments
    p = _Parser(prog="resnet-deploy", description="Build, export, verify and serve ResNet50 variants.")
    p.add_argument("--debug", action="store_true",
                   help="on an error, print the full chained traceback before the one-line message")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("variants", help="list the registered variants")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("build", help="build a variant and report its parameters")
    s.add_argument("--variant", required=True)
    s.add_argument("--num-classes", type=positive_int, default=None)
    s.add_argument("--weights", default="random:0", help="imagenet | random[:SEED] | FILE.weights.h5 | FILE.keras")
    s.add_argument("--unfreeze-stages", type=int, default=0, help="unfreeze the last N ResNet50 stages")
    s.add_argument("--save", metavar="PATH.keras", help="save the built model as a .keras file")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("bundle", help="build, export, check parity and publish deployment bundles (make export)")
    s.add_argument("--config", default="configs/variants.toml")
    s.add_argument("--out", default="dist")
    s.add_argument("--weights", default=None, help="override the config's weights for every variant")
    s.add_argument("--runs", default="runs", metavar="DIR",
                   help="training runs of variants with `data` (reused while data, settings and weights match)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--wait", action="store_true", help="wait for another run on the same --out instead of refusing")
    add_signing_arguments(s, required=False)

    s = sub.add_parser("bench", help="benchmark every artifact of a bundle (make bench): speed, memory, accuracy")
    s.add_argument("bundle", help="dist/<name>-<version> (a .tar.gz only with --out)")
    s.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all logical CPUs)")
    s.add_argument("--warmup", type=non_negative_int, default=3, help="warm-up runs per batch size (default 3)")
    s.add_argument("--runs", type=positive_int, default=10,
                   help="timed runs at batch 1 (default 10); larger batches run half as many")
    s.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default 1,8)")
    s.add_argument("--variant", action="append", default=None, help="benchmark only this variant (repeatable)")
    s.add_argument("--out", default=None, metavar="DIR",
                   help="write bench.{json,md,png} here instead of BUNDLE/bench/ (the bundle is left untouched)")
    s.add_argument("--no-serving", action="store_true",
                   help="skip the local server's load run (gRPC overhead, batching on/off per backend)")
    s.add_argument("--json", action="store_true", help="print the results as JSON")

    s = sub.add_parser("export", help="export a variant to SavedModel, TFLite and/or ONNX")
    s.add_argument("--variant", required=True)
    s.add_argument("--num-classes", type=positive_int, default=None)
    s.add_argument("--weights", default="random:0", help="imagenet | random[:SEED] | FILE.weights.h5 | FILE.keras")
    s.add_argument("--format", default="all", help="savedmodel | tflite | onnx | all")
    s.add_argument("--precision", action="append", default=None,
                   help="fp32 | fp16 | dynamic | int8 (repeatable; default: every precision of the format)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--version", type=positive_int, default=1, help="SavedModel version directory")
    s.add_argument("--opset", type=int, default=17, help="ONNX opset")
    s.add_argument("--overwrite", action="store_true", help="replace existing artifacts")
    s.add_argument("--json", action="store_true")
    s.add_argument("--wait", action="store_true", help="wait for another run on the same --out instead of refusing")
    s.add_argument("--calibration-data", metavar="DIR", help="int8 calibration images: a class-per-folder tree or "
                                                             "demo:NAME (default: the scikit-image sample photos)")
    s.add_argument("--calibration-count", type=positive_int, default=200,
                   help="a seeded class-stratified sample of at most this many images (default 200)")
    s = sub.add_parser("parity", help="check every artifact in a directory against the Keras reference")
    s.add_argument("--artifacts", required=True, metavar="DIR", help="directory with artifacts.json (an export or bundle)")
    s.add_argument("--variant", help="check only this variant")
    s.add_argument("--weights", help="rebuild the reference of a variant without golden files in DIR from "
                                     "these weights (imagenet | random[:SEED] | FILE), and save its golden files")
    s.add_argument("--batch-size", type=positive_int, default=4, help="batch size N (batch 1 always runs too)")
    s.add_argument("--threads", type=positive_int, default=None, help="CPU threads for LiteRT and ONNX Runtime")
    s.add_argument("--require-gpu", action="store_true", help="fail GPU rows instead of 'skipped: no GPU'")
    s.add_argument("--report", metavar="OUT", help="write parity.json and parity.md into directory OUT")
    s.add_argument("--eval-data", metavar="DIR", help="labeled tree (one folder per class, the model's labels): "
                                                      "judge every artifact's top-1 accuracy against the reference's")
    s.add_argument("--max-accuracy-drop", action="append", metavar="PRECISION=POINTS",
                   help="accuracy points an artifact may lose (repeatable; default fp32=0 fp16=0.5 dynamic=1 int8=2)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    from serving.commands import add_parsers as add_serving_parsers  # serve, predict, status, metadata
    add_serving_parsers(sub, COMMANDS)
    from serving.tools.classify import add_parsers as add_classify_parser  # classify MODEL.tflite IMAGE...
    add_classify_parser(sub, COMMANDS)
    from serving.scoring.command import add_parsers as add_score_parsers  # score (Apache Beam)
    add_score_parsers(sub, COMMANDS)
    from export.cli.k8s import add_parsers as add_k8s_parsers  # k8s
    add_k8s_parsers(sub, COMMANDS)
    from export.cli.train import add_parsers as add_train_parsers  # train, demo-data
    add_train_parsers(sub, COMMANDS)
    add_bundle_parsers(sub, COMMANDS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    # `score` passes options it does not know (Beam's: --runner, --project, ...) through.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "pass_through", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra_args = extra
    try:
        if args.command not in WITHOUT_TENSORFLOW:
            from export import import_tensorflow_quietly
            import_tensorflow_quietly()
        return COMMANDS[args.command](args)
    except ResnetDeployError as e:
        if args.debug:
            _print_chained_traceback(e)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
