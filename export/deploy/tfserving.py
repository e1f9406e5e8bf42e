"""TF Serving's configuration files for a bundle, written and read with TF Serving's own protos.

- `models.config`: a ModelServerConfig text proto (`--model_config_file`), one entry per
  variant with a specific-versions policy and version labels (`stable`).
- `batching.config`: BatchingParameters text proto (`--batching_parameters_file`), tuned for CPU.
- `monitoring.config`: MonitoringConfig text proto (`--monitoring_config_file`), Prometheus.

Paths: TF Serving needs absolute `base_path`s (or ones relative to its working directory),
so the files are generated for the container layout: the bundle directory is mounted at
`/models` (the `tensorflow/serving` image's MODEL_BASE_PATH) and each variant's versions live
at `/models/tfserving/<variant>/<version>/`. `base_prefix` changes that; `rebase_models_config`
rewrites a config for a bundle at another place (e.g. a local `tensorflow_model_server`).

tensorflow-serving-api ships the ModelServerConfig protos but not BatchingParameters or
MonitoringConfig, so those two are declared here from TF Serving's .proto files
(session_bundle_config.proto, monitoring_config.proto: same package, field names and numbers)
in a private descriptor pool; the text format is therefore the one TF Serving reads.
"""
from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from export.core.errors import BundleError

#: Where the bundle directory is mounted in the TF Serving container.
DEFAULT_BASE_PREFIX = "/models"
#: Prometheus scrape path TF Serving uses by default (PrometheusExporter::kPrometheusPath).
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

#: CPU defaults for BatchingParameters; see `batching_config` for the reasoning.
BATCHING_DEFAULTS = {
    "max_batch_size": 16,
    "batch_timeout_micros": 2000,
    "num_batch_threads": 4,
    "max_enqueued_batches": 64,
}


# -- protos TF Serving defines but tensorflow-serving-api does not ship ---------------------

def _declare_missing_protos():
    """BatchingParameters and MonitoringConfig: the real modules if installed, else declared."""
    try:  # a future tensorflow-serving-api may ship them
        from tensorflow_serving.config.monitoring_config_pb2 import MonitoringConfig
        from tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import (
            BatchingParameters,
        )
        return BatchingParameters, MonitoringConfig
    except ImportError:
        pass
    from google.protobuf import (
        descriptor_pb2,
        descriptor_pool,
        message_factory,
        wrappers_pb2,
    )

    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    def field(msg, name, number, ftype, type_name=None, repeated=False):
        f = msg.field.add(name=name, number=number, type=ftype,
                          label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
        if type_name:
            f.type_name = type_name

    # tensorflow_serving/servables/tensorflow/session_bundle_config.proto (BatchingParameters)
    batching = descriptor_pb2.FileDescriptorProto(
        name="resnet_deploy/tensorflow_serving/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    m = batching.message_type.add(name="BatchingParameters")
    i64, s = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    field(m, "max_batch_size", 1, F.TYPE_MESSAGE, i64)
    field(m, "batch_timeout_micros", 2, F.TYPE_MESSAGE, i64)
    field(m, "max_enqueued_batches", 3, F.TYPE_MESSAGE, i64)
    field(m, "num_batch_threads", 4, F.TYPE_MESSAGE, i64)
    field(m, "thread_pool_name", 5, F.TYPE_MESSAGE, s)
    field(m, "allowed_batch_sizes", 6, F.TYPE_INT64, repeated=True)
    field(m, "pad_variable_length_inputs", 7, F.TYPE_BOOL)
    pool.Add(batching)

    # tensorflow_serving/config/monitoring_config.proto
    monitoring = descriptor_pb2.FileDescriptorProto(
        name="resnet_deploy/tensorflow_serving/monitoring_config.proto",
        package="tensorflow.serving", syntax="proto3")
    p = monitoring.message_type.add(name="PrometheusConfig")
    field(p, "enable", 1, F.TYPE_BOOL)
    field(p, "path", 2, F.TYPE_STRING)
    m = monitoring.message_type.add(name="MonitoringConfig")
    field(m, "prometheus_config", 1, F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    pool.Add(monitoring)

    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
            get(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")))


BatchingParameters, MonitoringConfig = _declare_missing_protos()
ModelServerConfig = model_server_config_pb2.ModelServerConfig


def _parse(text: str, message, what: str):
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise BundleError(f"{what} is not a valid {message.DESCRIPTOR.name} text proto: {e}") from None


# -- models.config ----------------------------------------------------------------------------

def model_base_path(variant: str, base_prefix: str = DEFAULT_BASE_PREFIX) -> str:
    """The base_path TF Serving polls for `variant`: `<base_prefix>/tfserving/<variant>`."""
    return posixpath.join(base_prefix, "tfserving", variant)


def models_config(models: Sequence[tuple[str, str, Iterable[int]]],
                  labels: Mapping[str, int] | Mapping[str, Mapping[str, int]] | None = None) -> str:
    """A ModelServerConfig text proto serving each `(name, base_path, versions)`.

    `labels` maps a label to a version for every model (`{"stable": 1}`), or a model name to
    its own label map; by default `stable` points at each model's highest version. TF Serving
    only accepts a label on a version it has loaded, so every label must name a listed version.
    """
    config = ModelServerConfig()
    seen: set[str] = set()
    for name, base_path, versions in models:
        versions = sorted({int(v) for v in versions})
        if not name or name in seen:
            raise BundleError(f"model names must be unique and non-empty, got {name!r} twice or empty")
        if not versions or versions[0] < 1:
            raise BundleError(f"model {name!r}: versions must be integers >= 1, got {versions}")
        seen.add(name)
        if labels is None:
            model_labels: Mapping[str, int] = {"stable": versions[-1]}
        elif labels and all(isinstance(v, Mapping) for v in labels.values()):
            model_labels = labels.get(name, {"stable": versions[-1]})  # type: ignore[assignment]
        else:
            model_labels = labels  # type: ignore[assignment]
        entry = config.model_config_list.config.add(
            name=name, base_path=base_path, model_platform="tensorflow")
        entry.model_version_policy.specific.versions.extend(versions)
        for label, version in model_labels.items():
            if int(version) not in versions:
                raise BundleError(f"model {name!r}: label {label!r} points at version {version}, "
                                  f"which is not served (versions {versions})")
            entry.version_labels[label] = int(version)
    return text_format.MessageToString(config)


def bundle_models_config(variants: Mapping[str, Iterable[int]], base_prefix: str = DEFAULT_BASE_PREFIX,
                         labels: Mapping[str, int] | None = None) -> str:
    """models.config for a bundle: each variant at `<base_prefix>/tfserving/<variant>`."""
    return models_config([(v, model_base_path(v, base_prefix), vs) for v, vs in variants.items()], labels)


def parse_models_config(text: str):
    """The ModelServerConfig in `text` (BundleError if it does not parse or lists no model)."""
    config = _parse(text, ModelServerConfig(), "models.config")
    if not config.model_config_list.config:
        raise BundleError("models.config lists no model (model_config_list is empty)")
    return config


def served_models(text: str) -> list[dict]:
    """models.config as plain data: name, base_path, versions (sorted), labels, per model."""
    out = []
    for c in parse_models_config(text).model_config_list.config:
        policy = c.model_version_policy
        versions = sorted(policy.specific.versions) if policy.WhichOneof("policy_choice") == "specific" else []
        out.append({"name": c.name, "base_path": c.base_path, "platform": c.model_platform,
                    "versions": versions, "labels": dict(c.version_labels)})
    return out


def rebase_models_config(text: str, old_prefix: str, new_prefix: str) -> str:
    """`text` with every base_path under `old_prefix` moved under `new_prefix` (an absolute
    path), e.g. from the container's `/models` to where the bundle really is on this host."""
    config = parse_models_config(text)
    old = old_prefix.rstrip("/")
    for c in config.model_config_list.config:
        if c.base_path == old or c.base_path.startswith(old + "/"):
            c.base_path = new_prefix.rstrip("/") + c.base_path[len(old):]
    return text_format.MessageToString(config)


# -- batching.config --------------------------------------------------------------------------

def batching_config(max_batch_size: int = BATCHING_DEFAULTS["max_batch_size"],
                    batch_timeout_micros: int = BATCHING_DEFAULTS["batch_timeout_micros"],
                    num_batch_threads: int = BATCHING_DEFAULTS["num_batch_threads"],
                    max_enqueued_batches: int = BATCHING_DEFAULTS["max_enqueued_batches"]) -> str:
    """BatchingParameters text proto for `--enable_batching --batching_parameters_file`.

    CPU tuning (TF Serving's batching guide: on CPU start with num_batch_threads = cores and a
    small timeout, then tune):
    - max_batch_size 16: a ResNet50 forward pass on CPU is ~10-50 ms per image, so 16 images
      already amortise the per-call overhead; bigger batches only add queueing latency.
    - batch_timeout_micros 2000: 2 ms waiting for peers is small next to one inference, and
      under load full batches form anyway (a request waits at most this long for company).
    - num_batch_threads 4: batches run in parallel, one per core on a typical 4-core serving
      host; set it to the host's core count.
    - max_enqueued_batches 64: bounds memory and tail latency; past it TF Serving answers
      UNAVAILABLE at once instead of queueing without limit.
    """
    for name, value, low in (("max_batch_size", max_batch_size, 1), ("batch_timeout_micros", batch_timeout_micros, 0),
                             ("num_batch_threads", num_batch_threads, 1),
                             ("max_enqueued_batches", max_enqueued_batches, 1)):
        if not isinstance(value, int) or value < low:
            raise BundleError(f"batching {name} must be an integer >= {low}, got {value!r}")
    params = BatchingParameters()
    params.max_batch_size.value = max_batch_size
    params.batch_timeout_micros.value = batch_timeout_micros
    params.num_batch_threads.value = num_batch_threads
    params.max_enqueued_batches.value = max_enqueued_batches
    return text_format.MessageToString(params)


def parse_batching_config(text: str):
    """The BatchingParameters in `text` (BundleError if it does not parse)."""
    return _parse(text, BatchingParameters(), "batching.config")


def batching_settings(text: str) -> dict[str, int]:
    """batching.config as plain ints, TF Serving's defaults for unset fields filled from ours."""
    params = parse_batching_config(text)
    return {name: (getattr(params, name).value if params.HasField(name) else default)
            for name, default in BATCHING_DEFAULTS.items()}


# -- monitoring.config ------------------------------------------------------------------------

def monitoring_config(path: str = DEFAULT_PROMETHEUS_PATH) -> str:
    """MonitoringConfig text proto enabling TF Serving's Prometheus endpoint at `path`
    (served on the REST port; scrape `http://HOST:8501<path>`)."""
    if not path.startswith("/"):
        raise BundleError(f"the Prometheus path must start with '/', got {path!r}")
    config = MonitoringConfig()
    config.prometheus_config.enable = True
    config.prometheus_config.path = path
    return text_format.MessageToString(config)


def parse_monitoring_config(text: str):
    """The MonitoringConfig in `text` (BundleError if it does not parse)."""
    return _parse(text, MonitoringConfig(), "monitoring.config")

