"""`resnet-deploy variants | build | export | parity`: one variant at a time, from the registry to
artifacts and their parity check."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from export.core.argtypes import positive_int


def add_parsers(sub, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add `variants`, `build`, `export` and `parity` to the subparsers and the `commands` table."""
    s = sub.add_parser("variants", help="list the registered variants")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("build", help="build a variant and report its parameters")
    s.add_argument("--variant", required=True)
    s.add_argument("--num-classes", type=positive_int, default=None)
    s.add_argument("--weights", default="random:0", help="imagenet | random[:SEED] | FILE.weights.h5 | FILE.keras")
    s.add_argument("--unfreeze-stages", type=int, default=0, help="unfreeze the last N ResNet50 stages")
    s.add_argument("--save", metavar="PATH.keras", help="save the built model as a .keras file")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("export", help="export a variant to SavedModel, TFLite and/or ONNX")
    s.add_argument("--variant", help="the head (optional with --run or a run's model.keras: its config.json names it)")
    s.add_argument("--num-classes", type=positive_int, default=None, help="default: the variant's, or the model's")
    s.add_argument("--weights", default=None, help="imagenet | random[:SEED] (default) | FILE.weights.h5 | FILE.keras")
    s.add_argument("--run", metavar="RUN_DIR", help="a training run: its model.keras, labels.txt and variant")
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
    s.add_argument("--calibration-count", type=positive_int, default=100,  # labeled_sets.DEFAULT_CALIBRATION_COUNT
                   help="a seeded class-stratified sample of at most this many images (default 100)")
    s = sub.add_parser("parity", help="check every artifact in a directory against the Keras reference")
    s.add_argument("--artifacts", required=True, metavar="DIR", help="directory with artifacts.json (an export or bundle)")
    s.add_argument("--variant", help="check only this variant")
    s.add_argument("--weights", help="rebuild the reference of a variant without golden files in DIR from "
                                     "these weights (imagenet | random[:SEED] | FILE), and save its golden files")
    s.add_argument("--run", metavar="RUN_DIR", help="like --weights RUN_DIR/model.keras; labels from its labels.txt")
    s.add_argument("--batch-size", type=positive_int, default=4, help="batch size N (batch 1 always runs too)")
    s.add_argument("--threads", type=positive_int, default=None, help="CPU threads for LiteRT and ONNX Runtime")
    s.add_argument("--require-gpu", action="store_true", help="fail GPU rows instead of 'skipped: no GPU'")
    s.add_argument("--report", metavar="OUT", help="write parity.json and parity.md into directory OUT")
    s.add_argument("--eval-data", metavar="DIR", help="labeled tree (one folder per class, the model's labels): "
                                                      "judge every artifact's top-1 accuracy against the reference's")
    s.add_argument("--max-accuracy-drop", action="append", metavar="PRECISION=POINTS",
                   help="accuracy points an artifact may lose (repeatable; default fp32=0 fp16=0.5 dynamic=1 int8=2)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    from export.cli.file_parity import add_arguments as add_file_parity_arguments  # parity --files DIR
    add_file_parity_arguments(s)
    commands.update(variants=cmd_variants, build=cmd_build, export=cmd_export, parity=cmd_parity)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))

def cmd_variants(args: argparse.Namespace) -> int:
    from export.model.variants import list_variants
    specs = list_variants()
    if args.json:
        print_json([s.to_dict() for s in specs])
        return 0
    for s in specs:
        print(f"{s.name:10s} {s.num_classes:3d} classes  {s.input_size}px  {s.description}")
    return 0


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
        print_json(record)
    else:
        p = record["params"]
        print(f"{built.spec.name}: {built.num_classes} classes, {p['trainable']:,} trainable + "
              f"{p['non_trainable']:,} non-trainable = {p['total']:,} parameters "
              f"(weights {built.weights['source']})")
        if args.save:
            print(f"saved {args.save}")
    return 0


def _required_variant(args: argparse.Namespace) -> str:
    from export.core.errors import UsageError
    if not args.variant:
        raise UsageError("--variant is needed (or --run RUN_DIR / --weights RUN_DIR/model.keras of a training run)")
    return str(args.variant)


def cmd_export(args: argparse.Namespace) -> int:
    from export import import_tensorflow_quietly
    from export.core.locks import exclusive_output
    from export.model.variants import get_variant
    from export.pipeline.single import check_destination, export_artifacts, resolve_targets
    from export.quality import golden
    from export.training.runs import run_model
    run = run_model(args.weights, args.run)  # --run DIR or --weights RUN/model.keras: classes and labels from it
    spec = get_variant(run.check_variant(args.variant) if run else _required_variant(args))
    weights = str(run.path) if run else (args.weights or "random:0")
    num_classes, labels = (run.check_classes(args.num_classes), run.labels) if run else (args.num_classes, None)
    size = run.input_size if run else None
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
            cal = calibration_set(args.calibration_data, size or spec.input_size, count=args.calibration_count)
            calibration = {"calibration": cal.images, "calibration_record": cal.record}
        import_tensorflow_quietly()  # ~5 s: only once the arguments are known good (export.cli.app)
        from export.model.build import build
        built = build(spec, weights=weights, num_classes=num_classes, labels=labels, input_size=size)
        artifacts = export_artifacts(built, args.out, targets, version=args.version, opset=args.opset,
                                     overwrite=args.overwrite, progress=progress, calibration=calibration)
        # The reference outputs go beside the artifacts, so `parity --artifacts OUT` needs nothing else.
        golden.save(args.out, golden.make(built))
    records: list[dict[str, Any]] = [{"path": a.path, "format": a.format, "precision": a.precision, "bytes": a.bytes,
                "sha256": a.sha256, "seconds": a.seconds} for a in artifacts]
    if args.json:
        print_json(records)
    else:
        for r in records:
            print(f"{r['format']:10s} {r['precision']:8s} {r['bytes'] / 1e6:8.1f} MB {r['seconds']:7.1f} s  "
                  f"{r['sha256'][:12]}  {r['path']}")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from pathlib import Path

    from export.core.errors import UsageError
    from export.formats import read_index
    from export.quality import golden, parity
    from export.training.runs import run_model
    root = Path(args.artifacts)
    if not root.is_dir():
        raise UsageError(f"--artifacts {root} is not a directory; give the directory holding artifacts.json")
    if args.files:
        from export.cli import file_parity
        return file_parity.run(args)
    run = run_model(args.weights, args.run)  # the reference's weights and labels from a training run
    artifacts = read_index(root)
    variant = run.check_variant(args.variant) if run else args.variant
    weights = str(run.path) if run else args.weights
    if variant:
        artifacts = [a for a in artifacts if a.variant == variant]
    if not artifacts:
        what = f" of variant {variant!r}" if variant else ""
        raise UsageError(f"no artifacts{what} listed in {root / 'artifacts.json'}")

    def rebuild(variant: str):
        from export.model.build import build
        from export.model.variants import get_variant
        classes = {a.outputs[0]["shape"][-1] for a in artifacts if a.variant == variant and a.outputs}
        built = build(get_variant(variant), weights=weights, num_classes=run.num_classes if run else
                      (classes.pop() if len(classes) == 1 else None), labels=run.labels if run else None,
                      input_size=run.input_size if run else None)
        return golden.make(built, batch_size=args.batch_size)

    from export.quality.accuracy import parse_max_drop
    from export.quality.evaluation import evaluate, load_sets
    max_drop = parse_max_drop(args.max_accuracy_drop)
    eval_sets = load_sets(root, artifacts, args.eval_data, run.labels if run else None) if args.eval_data else None
    variants = sorted({a.variant for a in artifacts})
    goldens, sources = golden.references(root, variants, rebuild if weights else None)
    progress = None if args.json else (lambda what: print(f"checking {what} ...", file=sys.stderr, flush=True))
    report = parity.run_suite(root, artifacts, goldens, sources=sources, batch_sizes=sorted({1, args.batch_size}),
                              require_gpu=args.require_gpu, num_threads=args.threads, progress=progress)
    if eval_sets:
        report.accuracy = evaluate(root, artifacts, eval_sets, max_drop, weights=weights,
                                   threads=args.threads, progress=progress)
    if args.report:
        json_path, md_path = report.save(args.report)
    if args.json:
        print_json(report.to_dict())
    else:
        print(parity.render_markdown(report, full=False))
        if args.report:
            print(f"wrote {json_path} and {md_path}")
    return 0 if report else 1
