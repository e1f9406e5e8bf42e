"""Batch scoring of an image collection on Apache Beam RunInference.

    files (fileio.MatchFiles + ReadMatches) -> decode + resize (the SavedModel's bytes
    signature, run eagerly) -> RunInference(KeyedModelHandler) -> top-k JSON lines, sharded

Files that cannot be read or decoded, and batches whose inference fails, go to a dead-letter
output with the reason; they never fail the pipeline. DirectRunner (in process) is the
default; any other runner comes from Beam's own options, passed through unchanged. The rows
are the ones `resnet-deploy predict --json` prints for the same images (path, top-k with
index, label and probability), plus the model name, version, format and precision.

`plan()` checks everything a user can get wrong before Beam starts (bundle, model, format,
inputs that match nothing, an output prefix that cannot be written) and raises one clear
error; `run()` builds and runs the pipeline.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from export.core.errors import BundleError, UsageError

NAMESPACE = "resnet_deploy"
DEAD_LETTER_SUFFIX = "-dead-letter"
DEFAULT_MAX_BATCH = 16


@dataclass(frozen=True)
class ScoreJob:
    """A checked scoring request: which artifact, which files, where the rows go."""

    bundle: str
    model: str
    format: str
    precision: str
    version: int
    artifact: str
    input_size: int
    labels: tuple[str, ...]
    pattern: str
    output: str
    top_k: int = 5
    max_batch_size: int = DEFAULT_MAX_BATCH
    num_shards: int = 0
    num_threads: int | None = None
    aspect: str = "stretch"  # the variant's image contract aspect policy (manifest variants.<model>.image)
    files_matched: int = 0


@dataclass
class ScoreSummary:
    """What a run did: rows written, dead letters, seconds, images per second, output files."""

    scored: int
    dead_letter: int
    seconds: float
    images_per_second: float
    outputs: list[str] = field(default_factory=list)
    dead_letter_outputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _join(base: str, *parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.join(base.rstrip("/"), *parts)


def _read_json(uri: str) -> dict[str, Any]:
    from apache_beam.io.filesystems import FileSystems
    try:
        with FileSystems.open(uri) as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:  # Beam's BeamIOError is an OSError
        raise BundleError(f"cannot read {uri}: {str(e).splitlines()[0]}; give a bundle directory made by "
                          "`make export` (dist/<name>-<version>)") from None


def input_pattern(inputs: str) -> str:
    """A directory (local, or any URI ending in '/') means every file below it."""
    import os
    if inputs.endswith("/") or (("://" not in inputs) and os.path.isdir(inputs)):
        return _join(inputs, "**")
    return inputs


def check_output(prefix: str) -> None:
    """Create and delete a probe file next to where the shards will go (any Beam filesystem)."""
    from apache_beam.io.filesystems import FileSystems
    probe = f"{prefix}.resnet-deploy-write-check"
    try:
        FileSystems.create(probe).close()
        FileSystems.delete([probe])
    except Exception as e:  # noqa: BLE001 - each filesystem raises its own kind
        raise UsageError(f"--output {prefix}: cannot write there ({str(e).splitlines()[0]}); "
                         "give a writable prefix such as out/scores or gs://BUCKET/scores") from None


def default_precision(fmt: str, available: list[str]) -> str:
    """fp32 when the bundle has it for the format, else the format's own first precision (OpenVINO's
    IR is fp16): `--format openvino` without `--precision` scores the artifact that is there."""
    from export.core.registry import get_format
    return "fp32" if "fp32" in available or not available else get_format(fmt).precisions[0]


def plan(bundle: str, model: str, inputs: str, output: str, fmt: str = "savedmodel", precision: str | None = None,
         *, top_k: int = 5, max_batch_size: int | None = None, num_shards: int = 0,
         num_threads: int | None = None) -> ScoreJob:
    """Resolve the artifact and the files to score; one UsageError/BundleError per mistake."""
    import os

    from apache_beam.io.filesystems import FileSystems

    from export.core.registry import get_format
    get_format(fmt)  # UsageError naming the known formats
    from export.bundle.manifest import Manifest
    uri = _join(bundle, "manifest.json")
    manifest = Manifest.from_dict(_read_json(uri), source=uri)
    if model not in manifest.variants:
        raise UsageError(f"unknown model {model!r}: bundle {bundle} has {', '.join(sorted(manifest.variants)) or 'none'}")
    found = [a for a in manifest.artifacts if a.variant == model and a.format == fmt]
    precision = precision or default_precision(fmt, [a.precision for a in found])
    match = [a for a in found if a.precision == precision]
    if not match:
        have = ", ".join(sorted(a.precision for a in found)) or "none"
        raise UsageError(f"bundle {bundle} has no {fmt} {precision} artifact of {model!r} "
                         f"({fmt} precisions there: {have})")
    artifact = match[0]
    pattern = input_pattern(inputs)
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - BeamIOError, or a filesystem Beam lacks the extra for
        raise UsageError(f"--input {inputs}: {str(e).splitlines()[0]}") from None
    if not matched:
        raise UsageError(f"--input {inputs} matches no file (pattern {pattern}); give an image folder or a glob "
                         "such as 'photos/*.jpg'")
    if output.endswith("/") or (("://" not in output) and os.path.isdir(output)):
        output = _join(output, "scores")
    check_output(output)
    batching = max_batch_size or _bundle_max_batch(bundle)
    return ScoreJob(bundle=bundle, model=model, format=fmt, precision=precision,
                    version=int(artifact.details.get("version", manifest.version)),
                    artifact=_join(bundle, artifact.path), input_size=int(artifact.inputs[0]["shape"][1]),
                    labels=tuple(manifest.variants[model].labels), pattern=pattern, output=output,
                    top_k=top_k, max_batch_size=batching, num_shards=num_shards, num_threads=num_threads,
                    files_matched=len(matched),
                    aspect=str((manifest.variants[model].image or {}).get("aspect", "stretch")))


def _bundle_max_batch(bundle: str) -> int:
    """The bundle's batching.config max_batch_size: the batch TF Serving was tuned for."""
    from apache_beam.io.filesystems import FileSystems

    from export.deploy.tfserving import batching_settings
    try:
        with FileSystems.open(_join(bundle, "batching.config")) as f:
            return batching_settings(f.read().decode())["max_batch_size"]
    except (OSError, BundleError):
        return DEFAULT_MAX_BATCH


# -- the pipeline's steps (module level, so every runner can pickle them by reference) ----------

def dead_letter(job: ScoreJob, path: str, stage: str, reason: str) -> dict[str, Any]:
    return {"path": path, "stage": stage, "reason": reason, "model": job.model, "version": job.version}


def decode(readable, job: ScoreJob):
    """A fileio ReadableFile -> (path, float32 [size, size, 3]) or a tagged dead letter."""
    import apache_beam as beam

    from export.images import ImageContract, ImageError, pil
    path = readable.metadata.path
    try:
        data = readable.read()
    except OSError as e:
        yield beam.pvalue.TaggedOutput("dead", dead_letter(job, path, "read", f"cannot read: {e}"))
        return
    try:
        pixels = pil.decode(data, ImageContract(job.input_size, job.aspect))
    except ImageError as e:
        yield beam.pvalue.TaggedOutput("dead", dead_letter(job, path, "decode", str(e)))
        return
    yield path, pixels


def failed_batch(failure, job: ScoreJob):
    """RunInference's dead letter (a batch of (path, pixels) and the error) -> one row per path."""
    batch, error = failure
    if isinstance(error, tuple):  # (type, repr, traceback) as Beam passes it on
        kind, text = getattr(error[0], "__name__", str(error[0])), str(error[1])
    else:
        kind, text = type(error).__name__, str(error)
    reason = f"inference failed: {kind}: {text.strip().splitlines()[0] if text.strip() else ''}"
    for path, _pixels in batch:
        yield dead_letter(job, path, "inference", reason)


def to_row(keyed, job: ScoreJob) -> dict[str, Any]:
    """(path, PredictionResult) -> the JSON row: `predict --json`'s top_k plus model facts."""
    from serving.client.clients import top_k
    path, result = keyed
    probabilities = np.asarray(result.inference["probabilities"], dtype=np.float32)
    return {"path": path, "model": job.model, "version": job.version, "format": job.format,
            "precision": job.precision, "top_k": top_k(probabilities, job.top_k, list(job.labels))}


def _count(name: str):
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    counter = Metrics.counter(NAMESPACE, name)

    def inc(x):
        counter.inc()
        return x
    return beam.Map(inc)


def build(pipeline, job: ScoreJob, handler=None):
    """Add the scoring steps to `pipeline`; returns (rows, dead letters) PCollections of dicts."""
    import apache_beam as beam
    from apache_beam.io import fileio
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    from serving.scoring.handlers import make_handler
    handler = handler or make_handler(job.format, job.artifact, num_threads=job.num_threads,
                                      max_batch_size=job.max_batch_size)
    files = (pipeline | "Match" >> fileio.MatchFiles(job.pattern)
             | "Read" >> fileio.ReadMatches(skip_directories=True))
    decoded = files | "Decode" >> beam.FlatMap(decode, job).with_outputs("dead", main="pixels")
    scored, failed = decoded.pixels | "RunInference" >> RunInference(
        KeyedModelHandler(handler)).with_exception_handling()
    rows = scored | "ToRow" >> beam.Map(to_row, job) | "CountScored" >> _count("scored")
    dead = ((decoded.dead, failed.failed_inferences | "Explode" >> beam.FlatMap(failed_batch, job))
            | "DeadLetters" >> beam.Flatten() | "CountDead" >> _count("dead_letter"))
    return rows, dead


def _write(pcoll, prefix: str, label: str, num_shards: int):
    import apache_beam as beam
    return (pcoll | f"{label}Json" >> beam.Map(lambda row: json.dumps(row, sort_keys=False))
            | f"{label}Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl", num_shards=num_shards))


def pipeline_options(runner: str = "DirectRunner", beam_args: list[str] | tuple[str, ...] = ()):
    """Beam's PipelineOptions for `--runner` plus the user's Beam flags, unchanged; an
    unknown runner or an option Beam does not know is a UsageError (Beam would only warn)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import create_runner
    flags = [f"--runner={runner}", *beam_args]
    options = PipelineOptions(flags)
    log = logging.getLogger("apache_beam.options.pipeline_options")
    level = log.level
    log.setLevel(logging.ERROR)  # it would warn "Discarding unparseable args"; we raise instead
    try:
        unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                         - set(options.get_all_options()))
    finally:
        log.setLevel(level)
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join('--' + u for u in unknown)}: neither `score`'s nor "
                         "one of Apache Beam's pipeline options (see `resnet-deploy score --help`)")
    try:
        create_runner(runner)
    except ValueError as e:
        raise UsageError(f"--runner {runner}: {str(e).strip().splitlines()[0]}") from None
    except ImportError as e:
        raise UsageError(f"--runner {runner} needs Beam's extra for it ({e}); e.g. pip install "
                         "'apache-beam[gcp]==2.77.*' for DataflowRunner") from None
    return options


def run(job: ScoreJob, runner: str = "DirectRunner", beam_args: list[str] | tuple[str, ...] = ()) -> ScoreSummary:
    """Build and run the pipeline until it finishes; counts come from Beam's metrics."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.metrics.metric import MetricsFilter
    options = pipeline_options(runner, beam_args)
    start = time.perf_counter()
    pipeline = beam.Pipeline(options=options)
    rows, dead = build(pipeline, job)
    _write(rows, job.output, "Scores", job.num_shards)
    _write(dead, job.output + DEAD_LETTER_SUFFIX, "DeadLetter", job.num_shards)
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start
    counts = {}
    for name in ("scored", "dead_letter"):
        found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_name(name))["counters"]
        counts[name] = int(sum(c.committed or 0 for c in found))

    def shards(prefix: str) -> list[str]:
        """This run's shards: of the `-of-N` groups under the prefix (an older run may have left
        another shard count), the one written last."""
        groups: dict[str, list] = {}
        for m in FileSystems.match([f"{prefix}-{'[0-9]' * 5}-of-*.jsonl"])[0].metadata_list:
            groups.setdefault(m.path.rpartition("-of-")[2], []).append(m)
        newest = max(groups.values(), key=lambda ms: max(m.last_updated_in_seconds for m in ms), default=[])
        return sorted(m.path for m in newest)
    return ScoreSummary(scored=counts["scored"], dead_letter=counts["dead_letter"], seconds=round(seconds, 2),
                        images_per_second=round(counts["scored"] / seconds, 2) if seconds else 0.0,
                        outputs=shards(job.output), dead_letter_outputs=shards(job.output + DEAD_LETTER_SUFFIX))
