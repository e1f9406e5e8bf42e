"""Kubernetes and KServe manifests for a bundle: TF Serving with several replicas.

`render(info, storage_uri)` returns `{relative path: YAML}` for
- `kubernetes/`: a ConfigMap (models.config, batching.config, monitoring.config and the
  safe-unpack script), a Deployment of the `tensorflow/serving` image whose initContainers
  download the bundle tarball from the storage URI, check its sha256 and unpack it with the
  bundle's own rules, a Service (8500 gRPC, 8501 REST), a HorizontalPodAutoscaler and a
  PodDisruptionBudget;
- `kserve/inferenceservice.yaml`: one `serving.kserve.io/v1beta1` InferenceService per model
  (KServe's TF Serving runtime serves one model each), reading `tfserving/<model>/`.

The storage URI is where `dist/` was uploaded: `<uri>/<bundle>.tar.gz` (+ `.sha256`) for the
Deployment and `<uri>/<bundle>/` for KServe. Every document is validated before anything is
written: built-in kinds strictly with kubernetes-validate for KUBERNETES_VERSION, the
InferenceService against the JSON schema beside this module.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from export.core.errors import BundleError, ExportError, UsageError
from export.deploy import fetch
from export.deploy.tfserving_flags import GRPC_PORT, REST_PORT, model_server_flags

if TYPE_CHECKING:
    from export.bench.document import BenchReport

#: The Kubernetes version the built-in kinds are validated for (named in the README).
KUBERNETES_VERSION = "1.33.0"
KSERVE_SCHEMA = Path(__file__).with_name("inferenceservice-v1beta1.schema.json")
#: Where the ConfigMap's files appear in the TF Serving container.
CONFIG_DIR = "/etc/tfserving"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
#: Memory when there is no bench.json to size it from (one ResNet50 SavedModel is ~100 MB of
#: weights; TF Serving's runtime and three variants fit in 2 GiB with room for batches).
DEFAULT_MEMORY_MIB, DEFAULT_MEMORY_PER_MODEL_MIB = 2048, 1024
MEMORY_HEADROOM = 1.25
DEFAULT_CPU = 2


@dataclass(frozen=True)
class BundleInfo:
    """What the manifests need from a bundle: its name, served models and config files,
    the TensorFlow that exported it, its bench results and (when packed) the tarball digest."""

    name: str
    models: tuple[tuple[str, tuple[int, ...]], ...]
    models_config: str
    batching_config: str | None = None
    monitoring_config: str | None = None
    tensorflow_version: str | None = None
    bench: BenchReport | None = None
    tarball_sha256: str | None = None

    @classmethod
    def from_dir(cls, root: Path, tarball_sha256: str | None = None) -> BundleInfo:
        """Read a bundle directory; BundleError without models.config."""
        root = Path(root)
        cfg = root / "models.config"
        if not cfg.is_file():
            raise BundleError(f"{root} has no models.config: not a bundle made by `make export` "
                              "(the Deployment serves what models.config lists)")
        from export.bench.document import BenchReport, bench_dir
        manifest = _read_json(root / "manifest.json") or {}
        # `make bench` writes beside the bundle (<bundle>.bench/); bundles benched before that, inside it.
        bench_json = next((p for p in (bench_dir(root) / "bench.json", root / "bench" / "bench.json")
                           if p.is_file()), None)
        bench_doc = _read_json(bench_json) if bench_json else None
        bench = BenchReport.from_dict(bench_doc, source=str(bench_json)) if bench_doc else None

        def text(name: str) -> str | None:
            return (root / name).read_text() if (root / name).is_file() else None
        models_config = cfg.read_text()
        return cls(name=root.name, models=served_models(models_config), models_config=models_config,
                   batching_config=text("batching.config"), monitoring_config=text("monitoring.config"),
                   tensorflow_version=manifest.get("tool_versions", {}).get("tensorflow"),
                   bench=bench, tarball_sha256=tarball_sha256)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def served_models(models_config: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(name, versions) of every model in a models.config text (BundleError if it lists none)."""
    from export.deploy.tfserving import served_models as parse
    return tuple((m["name"], tuple(m["versions"])) for m in parse(models_config))


def tf_serving_image(tensorflow_version: str | None = None) -> str:
    """`tensorflow/serving:<version>` for the TensorFlow that exported the bundle (else the
    installed one, which is requirements.lock's pin): the same kernels that wrote the graph."""
    if not tensorflow_version:
        from importlib.metadata import version
        tensorflow_version = version("tensorflow")
    return f"tensorflow/serving:{tensorflow_version}"


def k8s_name(text: str, prefix: str = "tfserving-") -> str:
    """A DNS-1035 label (Service names need one): lower case, '-' for anything else, <= 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", (prefix + text).lower()).strip("-")
    return name[:63].rstrip("-")


def _mib(value: float) -> str:
    return f"{max(64, math.ceil(value / 64) * 64)}Mi"


def memory_for(bench: BenchReport | None, models: list[str]) -> tuple[str, str]:
    """(memory quantity, how it was sized) for a TF Serving process holding `models`.

    From bench.json: the TensorFlow runtime's own RSS (peak minus what loading took, the most
    of any SavedModel row) plus each model's load, times MEMORY_HEADROOM for batches in flight.
    """
    rows = {r.variant: r for r in (bench.artifacts if bench else [])
            if r.format == "savedmodel" and not r.error and r.peak_rss_mb and r.rss_load_mb is not None}
    if not all(m in rows for m in models):
        default = DEFAULT_MEMORY_MIB if len(models) > 1 else DEFAULT_MEMORY_PER_MODEL_MIB
        return _mib(default), "default (no bench.json with a SavedModel row per model; run `make bench` and re-render)"
    base = max(float(rows[m].peak_rss_mb or 0) - float(rows[m].rss_load_mb or 0) for m in models)
    loads = {m: float(rows[m].rss_load_mb or 0) for m in models}
    total = (base + sum(loads.values())) * MEMORY_HEADROOM
    parts = " + ".join(f"{m} {v:.0f}" for m, v in loads.items())
    return _mib(total), f"bench.json peak RSS: runtime {base:.0f} MiB + {parts} MiB, x{MEMORY_HEADROOM}"


def cpu_for(batching_config: str | None) -> int:
    """The batching config's num_batch_threads (TF Serving's guide: one per core), else 2."""
    from export.deploy.tfserving import batching_settings
    return batching_settings(batching_config)["num_batch_threads"] if batching_config else DEFAULT_CPU


@dataclass(frozen=True)
class _Names:
    """What every document of one rendering shares: name, namespace, labels, annotations."""

    name: str
    namespace: str | None
    labels: dict[str, str]
    notes: dict[str, str]

    @property
    def selector(self) -> dict[str, str]:
        return {k: self.labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}

    def meta(self, name: str | None = None, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name or self.name}
        if self.namespace:
            meta["namespace"] = self.namespace
        meta["labels"] = self.labels if labels is None else labels
        meta.update(extra)
        return meta


def _config_data(info: BundleInfo) -> dict[str, str]:
    data = {"models.config": info.models_config, "safe_unpack.py": fetch.unpack_script()}
    if info.batching_config:
        data["batching.config"] = info.batching_config
    if info.monitoring_config:
        data["monitoring.config"] = info.monitoring_config
    return data


def _server(info: BundleInfo, memory: str) -> dict[str, Any]:
    """The TF Serving container: image, flags, ports, probes, resources, mounts."""
    flags = model_server_flags(f"{CONFIG_DIR}/models.config",
                               f"{CONFIG_DIR}/batching.config" if info.batching_config else None,
                               f"{CONFIG_DIR}/monitoring.config" if info.monitoring_config else None,
                               grpc_port=GRPC_PORT, rest_port=REST_PORT)
    first, versions = info.models[0]
    status = {"httpGet": {"path": f"/v1/models/{first}/versions/{max(versions) if versions else 1}", "port": "http"}}
    return {
        "name": "tfserving", "image": tf_serving_image(info.tensorflow_version),
        "command": ["/usr/bin/tensorflow_model_server"], "args": flags,
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "http", "containerPort": REST_PORT}],
        # TF Serving opens its ports only once every model in models.config has loaded its
        # initial version (ServerCore's fast initial load), so the status answer means ready.
        "startupProbe": {**status, "periodSeconds": 10, "failureThreshold": 60},
        "readinessProbe": {**status, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 20, "failureThreshold": 3},
        "resources": {"requests": {"cpu": str(cpu_for(info.batching_config)), "memory": memory},
                      "limits": {"memory": memory}},
        "volumeMounts": [{"name": "bundle", "mountPath": "/models", "subPath": info.name, "readOnly": True},
                         {"name": "tfserving-config", "mountPath": CONFIG_DIR, "readOnly": True}],
    }


def _deployment(info: BundleInfo, source: fetch.StorageSource, n: _Names, replicas: int,
                data: dict[str, str]) -> dict[str, Any]:
    memory, memory_note = memory_for(info.bench, [m for m, _ in info.models])
    init, volumes = fetch.init_containers(source, info.name, info.tarball_sha256)
    server = _server(info, memory)
    for c in [*init, server]:
        c["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    pod_notes = {"resnet-deploy/config-sha256": hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(),
                 "resnet-deploy/memory": memory_note}
    if info.monitoring_config:
        pod_notes.update({"prometheus.io/scrape": "true", "prometheus.io/port": str(REST_PORT),
                          "prometheus.io/path": PROMETHEUS_PATH})
    configs = [{"key": k, "path": k} for k in ("models.config", "batching.config", "monitoring.config") if k in data]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": n.meta(annotations=n.notes),
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": n.selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": n.labels, "annotations": pod_notes},
                "spec": {
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": init, "containers": [server],
                    "volumes": [{"name": "bundle", "emptyDir": {}},
                                {"name": "tfserving-config", "configMap": {"name": n.name, "items": configs}},
                                {"name": "unpack-script", "configMap": {
                                    "name": n.name, "items": [{"key": "safe_unpack.py", "path": "safe_unpack.py"}]}},
                                *volumes],
                },
            },
        },
    }


def _inference_service(info: BundleInfo, source: fetch.StorageSource, n: _Names, model: str, replicas: int,
                       max_replicas: int) -> dict[str, Any]:
    memory, memory_note = memory_for(info.bench, [model])
    labels = {"app.kubernetes.io/part-of": "resnet-deploy", "resnet-deploy/bundle": n.labels["resnet-deploy/bundle"]}
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": n.meta(model, labels, annotations={**n.notes, "resnet-deploy/memory": memory_note}),
        "spec": {"predictor": {
            "minReplicas": replicas, "maxReplicas": max_replicas, "scaleMetric": "cpu", "scaleTarget": 70,
            "tensorflow": {
                "storageUri": fetch.model_uri(source, info.name, model),
                "runtimeVersion": tf_serving_image(info.tensorflow_version).rpartition(":")[2],
                "protocolVersion": "v1",
                "resources": {"requests": {"cpu": "1", "memory": memory}, "limits": {"memory": memory}},
            }}},
    }


def render_documents(info: BundleInfo, storage_uri: str, *, replicas: int = 2, max_replicas: int | None = None,
                     namespace: str | None = None, placeholder: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The manifests as Python objects, `{relative path: [documents]}` (see the module doc)."""
    source = fetch.parse_storage_uri(storage_uri)
    check_scaling(replicas, max_replicas, namespace)
    max_replicas = max_replicas or max(replicas * 3, replicas + 1)
    name = k8s_name(info.name)
    notes = {"resnet-deploy/storage-uri": storage_uri}
    if placeholder:
        notes["resnet-deploy/placeholder-storage-uri"] = "true: re-render with resnet-deploy k8s --storage-uri"
    n = _Names(name, namespace, {"app.kubernetes.io/name": "tfserving", "app.kubernetes.io/instance": name,
                                 "app.kubernetes.io/part-of": "resnet-deploy",
                                 "resnet-deploy/bundle": k8s_name(info.name, "")}, notes)
    data = _config_data(info)
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": n.meta(), "data": data}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": n.meta(),
               "spec": {"type": "ClusterIP", "selector": n.selector, "ports": [
                   {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"},
                   {"name": "http", "port": REST_PORT, "targetPort": "http", "appProtocol": "http"}]}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": n.meta(),
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": replicas, "maxReplicas": max_replicas,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": n.meta(),
           "spec": {"maxUnavailable": 1, "selector": {"matchLabels": n.selector}}}
    return {"kubernetes/configmap.yaml": [configmap],
            "kubernetes/deployment.yaml": [_deployment(info, source, n, replicas, data)],
            "kubernetes/service.yaml": [service], "kubernetes/hpa.yaml": [hpa], "kubernetes/pdb.yaml": [pdb],
            "kserve/inferenceservice.yaml": [_inference_service(info, source, n, model, replicas, max_replicas)
                                             for model, _ in info.models]}


def check_scaling(replicas: int, max_replicas: int | None, namespace: str | None) -> None:
    """UsageError for a replica count below 1, a maximum below it, or a bad namespace name."""
    if not isinstance(replicas, int) or replicas < 1:
        raise UsageError(f"--replicas must be an integer >= 1, got {replicas!r}")
    if max_replicas is not None and max_replicas < replicas:
        raise UsageError(f"--max-replicas {max_replicas} is below --replicas {replicas}")
    if namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", namespace or "-"):
        raise UsageError(f"--namespace {namespace!r} is not a Kubernetes namespace name "
                         "(lower-case letters, digits and '-', starting and ending with a letter or digit)")


def validate(files: dict[str, list[dict[str, Any]]]) -> None:
    """Built-in kinds strictly with kubernetes-validate for KUBERNETES_VERSION; the
    InferenceService against KSERVE_SCHEMA. ExportError naming the document and field."""
    import jsonschema
    import kubernetes_validate
    schema = json.loads(KSERVE_SCHEMA.read_text())
    for path, docs in files.items():
        for doc in docs:
            what = f"{path}: {doc['kind']} {doc['metadata']['name']!r}"
            if doc["apiVersion"].startswith("serving.kserve.io/"):
                try:
                    jsonschema.validate(doc, schema)
                except jsonschema.ValidationError as e:
                    where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                    raise ExportError(f"{what} fails the InferenceService schema at {where}: {e.message}") from None
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:  # a jsonschema.ValidationError
                where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                raise ExportError(f"{what} is not valid for Kubernetes {KUBERNETES_VERSION} at {where}: "
                                  f"{e.message}") from None


class _BlockStrings(yaml.SafeDumper):
    """YAML with multi-line strings (config files, the unpack script) as `|` blocks, and no
    anchors or aliases (kubectl diffs and humans read the documents one by one)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStrings.add_representer(str, _str)


def to_yaml(docs: list[dict[str, Any]], header: str) -> str:
    """The documents as one YAML stream (`---` between them) after a comment header."""
    body = "---\n".join(yaml.dump(d, Dumper=_BlockStrings, sort_keys=False, width=120) for d in docs)
    return header + body


def render(info: BundleInfo, storage_uri: str, *, replicas: int = 2, max_replicas: int | None = None,
           namespace: str | None = None, placeholder: bool = False) -> dict[str, str]:
    """`{relative path: YAML text}` for the bundle's manifests, validated (see `validate`)."""
    files = render_documents(info, storage_uri, replicas=replicas, max_replicas=max_replicas,
                             namespace=namespace, placeholder=placeholder)
    validate(files)
    header = (f"# Rendered by resnet-deploy for bundle {info.name}, storage URI {storage_uri}\n"
              + ("# PLACEHOLDER storage URI: re-render with `resnet-deploy k8s BUNDLE --storage-uri URI`\n"
                 if placeholder else "")
              + f"# Validated for Kubernetes {KUBERNETES_VERSION} (kubernetes-validate, strict) "
                "and, for KServe, against export/deploy/inferenceservice-v1beta1.schema.json\n")
    return {path: to_yaml(docs, header) for path, docs in files.items()}


def write(out: Path, files: dict[str, str]) -> list[Path]:
    """Write the rendered files under `out`; each top-level folder (kubernetes/, kserve/) is
    staged beside its final place and swapped in whole, so a reader never sees a mix."""
    import tempfile

    from export.core.atomic import ensure_writable_dir, replace_dir
    out = ensure_writable_dir(out)
    written = []
    for top in sorted({p.split("/")[0] for p in files}):
        stage = Path(tempfile.mkdtemp(prefix=f".{top}.", suffix=".partial", dir=out))
        for rel, text in files.items():
            if rel.split("/")[0] == top:
                (stage / rel.partition("/")[2]).write_text(text)
                written.append(out / rel)
        replace_dir(stage, out / top)
    return written
