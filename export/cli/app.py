"""`resnet-deploy`: the parser and main. Each command group has its own module (export.cli.model,
bundle, bench, train, k8s, report; serving's commands come from serving/), which adds its subparsers and
its functions to COMMANDS. Thin: parse arguments, call one function, print the result.

Any ResnetDeployError becomes one line on stderr (`error: ...`) and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from export.core.errors import ResnetDeployError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
#: Subcommands that never need TensorFlow in the process (a REST client call must not pay for
#: importing it); every other command imports it first, quietly (see import_tensorflow_quietly).
#: `bundle` and `bench` run their TensorFlow work in worker processes: TensorFlow in the parent
#: would hold ~650 MB for nothing (measured: 665 MB of make export's 6.1 GiB peak).
WITHOUT_TENSORFLOW = {"variants", "predict", "status", "metadata", "k8s", "sign", "bundle", "bench", "demo-data",
                      "report", "verify",  # verify imports it (quietly) for its parity step only
                      "classify"}  # LiteRT and MediaPipe's metadata reader (tflite_metadata.tensorflow_hidden)
#: Commands that import it themselves (quietly), once their arguments have been checked: a bad
#: --format or --out is said at once, not after TensorFlow's ~5 s import; `serve` imports it only
#: for the local server's SavedModel backend (serving.backends.registry), never for the process that runs
#: tensorflow_model_server nor for the ONNX, TFLite and OpenVINO backends.
TENSORFLOW_AFTER_CHECKS = {"export", "score", "serve", "train"}


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
    p = _Parser(prog="resnet-deploy", description="Build, export, verify and serve ResNet50 variants.")
    p.add_argument("--debug", action="store_true",
                   help="on an error, print the full chained traceback before the one-line message")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from export.cli import bench, bundle, k8s, model, report, train
    model.add_parsers(sub, COMMANDS)  # variants, build, export, parity
    bundle.add_parsers(sub, COMMANDS)  # bundle, sign, verify
    bench.add_parsers(sub, COMMANDS)  # bench
    from serving.commands import add_parsers as add_serving_parsers  # serve, predict, status, metadata
    add_serving_parsers(sub, COMMANDS)
    from serving.tools.classify import add_parsers as add_classify_parser  # classify MODEL.tflite IMAGE...
    add_classify_parser(sub, COMMANDS)
    from serving.scoring.command import add_parsers as add_score_parsers  # score (Apache Beam)
    add_score_parsers(sub, COMMANDS)
    k8s.add_parsers(sub, COMMANDS)  # k8s
    train.add_parsers(sub, COMMANDS)  # train, demo-data
    report.add_parsers(sub, COMMANDS)  # report
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    # `score` passes options it does not know (Beam's: --runner, --project, ...) through.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "pass_through", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra_args = extra
    try:
        if args.command not in WITHOUT_TENSORFLOW | TENSORFLOW_AFTER_CHECKS:
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
