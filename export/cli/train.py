"""`resnet-deploy train` and `resnet-deploy demo-data`: argument parsing and the handlers.

    resnet-deploy demo-data lfw_subset|digits --out DIR
    resnet-deploy train --variant NAME --data DIR --out RUN_DIR [options]
    resnet-deploy train --config configs/variants.toml [--runs runs]    # make train

Importing this module is cheap (argparse only); the handlers import TensorFlow when they run.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from export import import_tensorflow_quietly
from export.core.argtypes import int_at_least
from export.core.errors import UsageError

_positive = int_at_least(1)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_parsers(sub, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add `train` and `demo-data` to the `resnet-deploy` subparsers and `commands` table."""
    from export.training.data import DEMO_DATASETS

    s = sub.add_parser("demo-data", help="write a demo data set shipped in an installed package as an image folder")
    s.add_argument("name", metavar="NAME", help=f"one of: {', '.join(DEMO_DATASETS)}")
    s.add_argument("--out", required=True, metavar="DIR", help="folder to write (DIR/<class>/*.png)")
    s.add_argument("--max-per-class", type=_positive, default=None,
                   help="a seeded sample of at most N images per class")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    s.add_argument("--json", action="store_true")
    commands["demo-data"] = cmd_demo_data

    s = sub.add_parser("train", help="fine-tune a variant's head on a class-per-folder image tree (make train)")
    s.add_argument("--variant", help="the head to train (see `resnet-deploy variants`)")
    s.add_argument("--data", metavar="DIR", help="one sub-folder of images per class")
    s.add_argument("--out", metavar="RUN_DIR", help="run directory to write (model.keras, metrics.json, ...)")
    s.add_argument("--weights", default=None,
                   help="imagenet | random[:SEED] (default random:0) | FILE.weights.h5 | FILE.keras")
    s.add_argument("--num-classes", type=_positive, default=None, help="checked against the class folders")
    s.add_argument("--input-size", type=int_at_least(32), default=None, help="pixels (default: the variant's, 224)")
    s.add_argument("--epochs", type=_positive, default=200,
                   help="phase 1 epochs at most (default 200; EarlyStopping decides)")
    s.add_argument("--batch-size", type=_positive, default=32)
    s.add_argument("--learning-rate", type=_positive_float, default=None,
                   help="Adam's (default 1e-3)")
    s.add_argument("--l2", type=float, default=None,
                   help="L2 of the dense head's L-BFGS fit (default: 1e-4..1e-1, the validation split picks)")
    s.add_argument("--solver", choices=("auto", "lbfgs", "adam"), default="auto",
                   help="fast path: lbfgs (convex; the dense head), adam (model.fit), auto (lbfgs where it applies)")
    s.add_argument("--no-standardize", action="store_true",
                   help="fit the head on raw features (default: scaled per channel, folded into its first layer)")
    val = s.add_mutually_exclusive_group()
    val.add_argument("--val-split", type=_fraction, default=0.2, help="share of each class held out (default 0.2)")
    val.add_argument("--val-data", metavar="DIR", help="a separate validation folder with the same classes")
    s.add_argument("--seed", type=int, default=0, help="split, shuffling and dropout seed")
    s.add_argument("--patience", type=_positive, default=10, help="EarlyStopping patience on val_loss (default 10)")
    s.add_argument("--max-per-class", type=int_at_least(2), default=None,
                   help="train on a seeded sample of at most N images per class")
    s.add_argument("--unfreeze-stages", type=int_at_least(0), default=0,
                   help="phase 2: unfreeze the last N ResNet50 stages (1-5; BatchNorm stays frozen)")
    s.add_argument("--fine-tune-epochs", type=int_at_least(0), default=0, help="phase 2 epochs at most")
    s.add_argument("--fine-tune-learning-rate", type=_positive_float, default=None,
                   help="phase 2 learning rate (default: --learning-rate / 10)")
    s.add_argument("--no-feature-cache", action="store_true",
                   help="train phase 1 through the full graph instead of on cached backbone features (slow)")
    s.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="feature cache (default $RESNET_DEPLOY_CACHE or ~/.cache/resnet-deploy/features)")
    s.add_argument("--distribute", choices=("none", "mirrored"), default="none",
                   help="mirrored: tf.distribute.MirroredStrategy over all local GPUs")
    s.add_argument("--overwrite", action="store_true", help="replace RUN_DIR if it exists")
    s.add_argument("--wait", action="store_true", help="wait for another run writing beside RUN_DIR instead of refusing")
    s.add_argument("--config", metavar="TOML",
                   help="train every variant of a bundle config that has `data` (make train)")
    s.add_argument("--runs", metavar="DIR", default="runs", help="with --config: where the cached runs live")
    s.add_argument("--json", action="store_true", help="print the metrics as JSON (epoch lines go to stderr)")
    commands["train"] = cmd_train


def cmd_demo_data(args: argparse.Namespace) -> int:
    from export.training.data import write_demo
    result = write_demo(args.name, args.out, max_per_class=args.max_per_class, seed=args.seed, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        counts = ", ".join(f"{k}: {v}" for k, v in result["images_per_class"].items())
        print(f"wrote {result['images']} images of {args.name} ({result['package']}) to {args.out} ({counts})")
    return 0


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from export.core.processes import keep_freed_buffers
    keep_freed_buffers()  # glibc's malloc as the export's training tasks have it (before TensorFlow allocates)
    if args.config:
        return _train_config(args)
    missing = [f"--{name}" for name in ("variant", "data", "out") if not getattr(args, name)]
    if missing:
        raise UsageError(f"train needs {', '.join(missing)} (or --config FILE to train the configured variants)")
    from export.training.data import scan_folder
    from export.training.settings import TrainSettings
    settings = TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, val_split=args.val_split,
        seed=args.seed, patience=args.patience, max_per_class=args.max_per_class,
        unfreeze_stages=args.unfreeze_stages, fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate, feature_cache=not args.no_feature_cache,
        input_size=args.input_size, l2=args.l2, solver=args.solver, standardize=not args.no_standardize).check()
    scan_folder(args.data, "--data")  # the folders only (train decodes them): a typo is said at once
    if args.val_data:
        scan_folder(args.val_data, "--val-data")
    import_tensorflow_quietly()  # ~5 s: only once the settings and folders are known good (export.cli.app)
    from export.training.train import train
    verbose = 0 if args.json else (1 if sys.stdout.isatty() else 2)
    metrics = train(args.variant, args.data, args.out, weights=args.weights or "random:0", num_classes=args.num_classes,
                    settings=settings, val_data=args.val_data, distribute=args.distribute, overwrite=args.overwrite,
                    cache_dir=args.cache_dir, verbose=verbose, log=_log if args.json else None,
                    extra_config={"argv": sys.argv[1:]}, wait=args.wait)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        v, t = metrics["val"], metrics["train"]
        print(f"{args.variant}: val accuracy {v['accuracy']:.3f}{probe_note(metrics)}, loss {v['loss']:.3f} on "
              f"{v['images']} images, train accuracy {t['accuracy']:.3f}, {metrics['seconds']['total']:.0f} s; "
              f"wrote {args.out}")
    return 0


def probe_note(metrics: dict) -> str:
    """' (probe 0.917)': the logistic-regression baseline on the same features and split, when there is one."""
    probe = metrics.get("probe")
    return f" (probe {probe['val_accuracy']:.3f})" if probe else ""


def _train_config(args: argparse.Namespace) -> int:
    given = [f"--{n.replace('_', '-')}" for n in ("variant", "data", "out", "val_data", "num_classes")
             if getattr(args, n)]
    if given:
        raise UsageError(f"--config trains what the config lists; drop {', '.join(given)}")
    from export.pipeline.config import load_config
    cfg = load_config(args.config, args.weights)
    import_tensorflow_quietly()
    from export.training.runs import ensure_run, maps_sharers
    with_data = [v for v in cfg["variants"] if v.get("data")]
    trained = []
    for v, share_maps in zip(with_data, maps_sharers(with_data), strict=True):
        run = ensure_run(v, args.runs, log=_log, wait=args.wait, share_maps=share_maps)
        trained.append(run.summary())
        if not args.json:
            state = "cached" if run.cached else f"trained in {run.metrics['seconds']['total']:.0f} s"
            print(f"{v['name']}: val accuracy {run.val_accuracy:.3f}{probe_note(run.metrics)} on {v['data']} "
                  f"({state}) -> {run.path}")
    if args.json:
        print(json.dumps(trained, indent=2))
    if not trained:
        raise UsageError(f"{args.config} lists no variant with `data`; add data = \"demo:NAME\" or a folder")
    return 0
