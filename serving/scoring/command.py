"""`resnet-deploy score`: batch-score an image collection with a bundle's model on Apache Beam.

Options this parser does not know (`--project`, `--region`, `--flink_master`, ...) are passed
to Beam unchanged. Importing this module is cheap (argparse only).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from export.core.argtypes import int_at_least
from export.core.registry import FORMATS


def add_parsers(sub, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add `score` to the `resnet-deploy` subparsers and `commands` table."""
    p = sub.add_parser("score", help="batch-score images with a bundle's model on Apache Beam RunInference "
                                     "(DirectRunner here; Dataflow, Flink or Spark with Beam's options)",
                       epilog="Any other option is one of Apache Beam's pipeline options and goes to Beam unchanged, "
                              "e.g. --direct_num_workers=2 --direct_running_mode=multi_processing, or --project, "
                              "--region and --temp_location for DataflowRunner, --flink_master for FlinkRunner.")
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle directory (local, or gs://... with Beam's GCP extra)")
    p.add_argument("--model", required=True, help="model (variant) name, e.g. dense")
    p.add_argument("--input", required=True, metavar="DIR_OR_GLOB",
                   help="an image folder (every file below it) or a glob such as 'photos/*.jpg'")
    p.add_argument("--output", required=True, metavar="PREFIX",
                   help="rows go to PREFIX-SSSSS-of-NNNNN.jsonl, unreadable images to PREFIX-dead-letter-*.jsonl")
    p.add_argument("--format", default="savedmodel",
                   help=f"{' | '.join(FORMATS)} (default savedmodel)")
    p.add_argument("--precision", default=None,
                   help="the artifact's precision (default fp32, or the format's own: fp16 for openvino)")
    p.add_argument("--top-k", type=int_at_least(1), default=5)
    p.add_argument("--max-batch-size", type=int_at_least(1), default=None,
                   help="RunInference's BatchElements maximum (default: the bundle's batching.config)")
    p.add_argument("--num-shards", type=int_at_least(0), default=0, help="output shards (0: the runner decides)")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="ONNX Runtime / LiteRT threads per model")
    p.add_argument("--runner", default="DirectRunner",
                   help="Beam runner: DirectRunner (default), DataflowRunner, FlinkRunner, SparkRunner, ...")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(pass_through=True)
    commands["score"] = cmd_score


#: Warnings Beam 2.77 logs that say nothing about a scoring run: the BigQuery client libraries
#: (imported with the GCP IO, never used here), and the model-memory metric, lost because
#: apache_beam.ml.inference.base imports `resource` in one try with its ModelManager, which
#: needs torch, so without torch it believes `resource` is missing.
BEAM_NOISE = ("apitools not found", "Resource module is not available")


def quiet_beam_logging() -> None:
    """Beam logs through the root logger, and its first warning would configure logging to
    print on its own. Install that handler first (WARNING and up, as Beam would), minus
    BEAM_NOISE and BatchElements' polyfit warning, so that an error stays one line."""
    import logging
    import warnings
    # BatchElements fits batch size against time with np.polyfit; a poor fit is not the user's problem.
    warnings.filterwarnings("ignore", message="Polyfit may be poorly conditioned", module="apache_beam")
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(lambda record: not record.getMessage().startswith(BEAM_NOISE))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


def cmd_score(args: argparse.Namespace) -> int:
    quiet_beam_logging()
    from serving.scoring import pipeline as scoring
    beam_args = list(getattr(args, "extra_args", []) or [])
    scoring.pipeline_options(args.runner, beam_args)  # a bad runner or option fails before any work
    job = scoring.plan(args.bundle, args.model, args.input, args.output, args.format, args.precision,
                       top_k=args.top_k, max_batch_size=args.max_batch_size, num_shards=args.num_shards,
                       num_threads=args.threads)
    from export import import_tensorflow_quietly
    import_tensorflow_quietly()  # only now (export.cli.app TENSORFLOW_AFTER_CHECKS): bad input is said at once
    if not args.json:
        print(f"scoring {job.files_matched} file(s) matching {job.pattern} with {job.model} version {job.version} "
              f"({job.format} {job.precision}) on {args.runner}", flush=True)
    summary = scoring.run(job, args.runner, beam_args)
    if args.json:
        print(json.dumps({"job": {"model": job.model, "version": job.version, "format": job.format,
                                  "precision": job.precision, "input": job.pattern, "output": job.output},
                          **summary.to_dict()}, indent=2))
        return 0
    print(f"scored {summary.scored} image(s), {summary.dead_letter} to the dead-letter output, in "
          f"{summary.seconds} s ({summary.images_per_second} images/s)")
    for path in summary.outputs + summary.dead_letter_outputs:
        print(f"wrote {path}")
    return 0
