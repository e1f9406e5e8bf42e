"""`resnet-deploy` subcommands. Thin: parse arguments, call one function, print the result.

Any ResnetDeployError becomes one line on stderr (`error: ...`) and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from export.errors import ResnetDeployError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = fn
        return fn
    return register


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


@command("variants")
def cmd_variants(args: argparse.Namespace) -> int:
    from export.variants import list_variants
    specs = list_variants()
    if args.json:
        _print_json([s.to_dict() for s in specs])
        return 0
    for s in specs:
        print(f"{s.name:10s} {s.num_classes:3d} classes  {s.input_size}px  {s.description}")
    return 0


@command("build")
def cmd_build(args: argparse.Namespace) -> int:
    from export.build import build, io_spec, param_counts
    from export.variants import get_variant
    spec = get_variant(args.variant)
    built = build(spec, weights=args.weights, num_classes=args.num_classes,
                  unfreeze_stages=args.unfreeze_stages)
    if args.save:
        from export.atomic import save_keras_atomic
        save_keras_atomic(built.model, args.save)
    record = {"variant": built.spec.name, "num_classes": built.num_classes,
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="resnet-deploy", description="Build, export, verify and serve ResNet50 variants.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("variants", help="list the registered variants")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("build", help="build a variant and report its parameters")
    s.add_argument("--variant", required=True)
    s.add_argument("--num-classes", type=_positive_int, default=None)
    s.add_argument("--weights", default="random:0", help="imagenet | random[:SEED] | FILE.weights.h5 | FILE.keras")
    s.add_argument("--unfreeze-stages", type=int, default=0, help="unfreeze the last N ResNet50 stages")
    s.add_argument("--save", metavar="PATH.keras", help="save the built model as a .keras file")
    s.add_argument("--json", action="store_true")
    from serving.commands import add_parsers as add_serving_parsers  # serve, predict, status, metadata
    add_serving_parsers(sub, COMMANDS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.command != "variants":
            from export import import_tensorflow_quietly
            import_tensorflow_quietly()
        return COMMANDS[args.command](args)
    except ResnetDeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
