"""Kubernetes / KServe manifests (export/deploy/): rendered for a bundle, validated offline
(kubernetes-validate strict for the README's Kubernetes version; the project's KServe schema),
the safe-unpack script the initContainer runs, and each bad input by message. No TensorFlow."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from export.core.errors import BundleError, ExportError, UsageError
from export.deploy import fetch, kubernetes, safe_unpack
from export.deploy.tfserving_flags import model_server_flags
from tests.helpers import ROOT, run_main

pytestmark = pytest.mark.unit

MODELS = {"dense": [3], "conv": [3]}


def write_bundle(root: Path, bench: dict | None = None, bench_inside: bool = False) -> Path:
    """A bundle directory with what the manifests read: the three TF Serving configs (written
    by the project's writers), manifest.json and, optionally, the bench's bench.json where `make
    bench` writes it (`<bundle>.bench/`), or inside the bundle as bench runs before it did."""
    from export.deploy import tfserving as config
    root.mkdir(parents=True)
    (root / "models.config").write_text(config.bundle_models_config(MODELS))
    (root / "batching.config").write_text(config.batching_config(num_batch_threads=3))
    (root / "monitoring.config").write_text(config.monitoring_config())
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "name": root.name,
                                                    "tool_versions": {"tensorflow": "2.21.0"}, "files": {}}))
    if bench is not None:
        from export.bench.document import BENCH_FORMAT_VERSION
        where = root / "bench" if bench_inside else root.with_name(root.name + ".bench")
        where.mkdir()
        (where / "bench.json").write_text(json.dumps({
            "format_version": BENCH_FORMAT_VERSION, "bundle": root.name, "created_at": "2026-01-01T00:00:00+00:00",
            "environment": {}, "settings": {}, "ceiling": {}, "flops": {}, **bench}))
    return root


def bench_row(variant: str, fmt: str, peak: float, load: float) -> dict:
    return {"key": f"{variant}/{fmt}_fp32", "variant": variant, "format": fmt, "precision": "fp32", "path": "x",
            "bytes": 1, "gflop_per_image": 7.7, "error": None, "peak_rss_mb": peak, "rss_load_mb": load}


def docs(files: dict[str, str]) -> dict[str, list[dict]]:
    return {path: [d for d in yaml.safe_load_all(text) if d] for path, text in files.items()}


@pytest.fixture
def bundle(tmp_path):
    return write_bundle(tmp_path / "resnet50-heads-3")


def lock_pin(package: str) -> str:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(package + "=="):
            return line.split("==")[1].strip()
    raise AssertionError(f"{package} is not pinned")


def test_manifests_render_and_validate(bundle):
    info = kubernetes.BundleInfo.from_dir(bundle)
    files = docs(kubernetes.render(info, "gs://my-bucket/models", replicas=3, namespace="ml"))
    assert sorted(files) == ["kserve/inferenceservice.yaml", "kubernetes/configmap.yaml",
                             "kubernetes/deployment.yaml", "kubernetes/hpa.yaml", "kubernetes/pdb.yaml",
                             "kubernetes/service.yaml"]
    for documents in files.values():  # re-validate what was written, from the YAML text
        for d in documents:
            assert d["metadata"]["namespace"] == "ml"
            if d["kind"] != "InferenceService":
                kubernetes_validate.validate(d, kubernetes.KUBERNETES_VERSION, strict=True)

    (cm,) = files["kubernetes/configmap.yaml"]
    assert cm["data"]["models.config"] == (bundle / "models.config").read_text()
    assert cm["data"]["batching.config"] == (bundle / "batching.config").read_text()
    assert cm["data"]["safe_unpack.py"] == Path(safe_unpack.__file__).read_text()

    (dep,) = files["kubernetes/deployment.yaml"]
    pod = dep["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == f"tensorflow/serving:{lock_pin('tensorflow')}"
    assert server["args"] == model_server_flags("/etc/tfserving/models.config", "/etc/tfserving/batching.config",
                                                "/etc/tfserving/monitoring.config", grpc_port=8500, rest_port=8501)
    assert server["readinessProbe"]["httpGet"] == {"path": "/v1/models/dense/versions/3", "port": "http"}
    assert server["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert server["resources"]["requests"]["cpu"] == "3"  # batching.config's num_batch_threads
    assert "default" in dep["spec"]["template"]["metadata"]["annotations"]["resnet-deploy/memory"]
    assert {m["mountPath"]: m.get("subPath") for m in server["volumeMounts"]} == {
        "/models": "resnet50-heads-3", "/etc/tfserving": None}
    fetch_c, unpack_c = pod["initContainers"]
    assert fetch_c["command"] == ["gcloud", "storage", "cp", "gs://my-bucket/models/resnet50-heads-3.tar.gz",
                                  "gs://my-bucket/models/resnet50-heads-3.tar.gz.sha256", "/download/"]
    assert unpack_c["command"] == ["python3", "/opt/resnet-deploy/safe_unpack.py",
                                   "/download/resnet50-heads-3.tar.gz", "/bundle", "--sha256-file",
                                   "/download/resnet50-heads-3.tar.gz.sha256", "--remove-archive"]
    assert dep["spec"]["replicas"] == 3

    (svc,) = files["kubernetes/service.yaml"]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("grpc", 8500), ("http", 8501)]
    (hpa,) = files["kubernetes/hpa.yaml"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    (pdb,) = files["kubernetes/pdb.yaml"]
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"] == dep["spec"]["selector"]

    isvcs = files["kserve/inferenceservice.yaml"]
    assert [i["metadata"]["name"] for i in isvcs] == ["dense", "conv"]
    tf = isvcs[0]["spec"]["predictor"]["tensorflow"]
    assert tf["storageUri"] == "gs://my-bucket/models/resnet50-heads-3/tfserving/dense"
    assert tf["runtimeVersion"] == lock_pin("tensorflow") and tf["protocolVersion"] == "v1"


def test_serve_and_the_deployment_share_one_flag_builder(bundle):
    from serving.commands import docker_command
    cmd = docker_command(bundle, 8501, 8500)
    assert cmd[cmd.index("tensorflow/serving") + 1:] == model_server_flags(
        "/models/models.config", "/models/batching.config", "/models/monitoring.config")


@pytest.mark.parametrize("bench_inside", [False, True], ids=["beside", "inside (older bundles)"])
def test_memory_is_sized_from_the_bench_peak_rss(tmp_path, bench_inside):
    bench = {"artifacts": [bench_row("dense", "savedmodel", 900, 300), bench_row("conv", "savedmodel", 1000, 420),
                           bench_row("dense", "onnx", 5000, 4000)]}
    info = kubernetes.BundleInfo.from_dir(write_bundle(tmp_path / "b-1", bench, bench_inside))
    files = docs(kubernetes.render(info, "s3://bucket/models"))
    (dep,) = files["kubernetes/deployment.yaml"]
    (server,) = dep["spec"]["template"]["spec"]["containers"]
    # runtime = max(peak - load) = 600; (600 + 300 + 420) * 1.25 = 1650 -> 1664Mi (64 MiB steps)
    assert server["resources"]["requests"]["memory"] == server["resources"]["limits"]["memory"] == "1664Mi"
    assert "bench.json peak RSS: runtime 600 MiB + dense 300 + conv 420 MiB" in \
        dep["spec"]["template"]["metadata"]["annotations"]["resnet-deploy/memory"]
    dense, conv = files["kserve/inferenceservice.yaml"]
    assert dense["spec"]["predictor"]["tensorflow"]["resources"]["limits"]["memory"] == "1152Mi"  # (600+300)*1.25
    assert conv["spec"]["predictor"]["tensorflow"]["resources"]["limits"]["memory"] == "1280Mi"   # 1275 -> 1280


def test_s3_and_pvc_sources_and_a_pinned_digest(bundle):
    info = kubernetes.BundleInfo.from_dir(bundle, tarball_sha256="ab" * 32)
    s3 = docs(kubernetes.render(info, "s3://bucket/models/"))["kubernetes/deployment.yaml"][0]
    fetch_c, unpack_c = s3["spec"]["template"]["spec"]["initContainers"]
    assert fetch_c["command"] == ["aws", "s3", "cp", "s3://bucket/models/", "/download/", "--recursive",
                                  "--exclude", "*", "--include", "resnet50-heads-3.tar.gz"]
    assert unpack_c["command"][-3:] == ["--sha256", "ab" * 32, "--remove-archive"]
    pvc = docs(kubernetes.render(info, "pvc://model-store/releases"))
    pod = pvc["kubernetes/deployment.yaml"][0]["spec"]["template"]["spec"]
    (unpack_c,) = pod["initContainers"]  # the claim is mounted: nothing to download
    assert unpack_c["command"][2:4] == ["/source/releases/resnet50-heads-3.tar.gz", "/bundle"]
    assert {"name": "source", "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True}} in pod["volumes"]
    assert pvc["kserve/inferenceservice.yaml"][0]["spec"]["predictor"]["tensorflow"]["storageUri"] == \
        "pvc://model-store/releases/resnet50-heads-3/tfserving/dense"


def test_validation_catches_what_the_api_server_would_reject(bundle):
    """The validators are strict: an unknown field or a wrong type in a rendered document fails."""
    files = kubernetes.render_documents(kubernetes.BundleInfo.from_dir(bundle), "gs://b/m")
    kubernetes.validate(files)
    bad = copy.deepcopy(files)
    bad["kubernetes/deployment.yaml"][0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"][
        "paht"] = "/typo"
    with pytest.raises(ExportError, match=r"deployment.yaml: Deployment .* not valid for Kubernetes 1\.33\.0.*paht"):
        kubernetes.validate(bad)
    bad = copy.deepcopy(files)
    bad["kubernetes/service.yaml"][0]["spec"]["ports"][0]["port"] = "8500"
    with pytest.raises(ExportError, match=r"service\.yaml: Service .* at spec/ports/0/port"):
        kubernetes.validate(bad)
    bad = copy.deepcopy(files)
    bad["kserve/inferenceservice.yaml"][0]["spec"]["predictor"]["tensorflow"]["storageURI"] = "gs://b/m"
    with pytest.raises(ExportError, match=r"InferenceService 'dense' fails the InferenceService schema.*storageURI"):
        kubernetes.validate(bad)
    bad = copy.deepcopy(files)
    bad["kserve/inferenceservice.yaml"][1]["spec"]["predictor"]["scaleMetric"] = "gpu"
    with pytest.raises(ExportError, match="at spec/predictor/scaleMetric: 'gpu' is not one of"):
        kubernetes.validate(bad)


def test_a_model_name_kserve_refuses_is_caught(tmp_path):
    root = write_bundle(tmp_path / "b-1")
    from export.deploy import tfserving as config
    (root / "models.config").write_text(config.bundle_models_config({"Dense_V2": [1]}))
    with pytest.raises(ExportError, match="InferenceService 'Dense_V2' fails the InferenceService schema at "
                                          "metadata/name"):
        kubernetes.render(kubernetes.BundleInfo.from_dir(root), "gs://b/m")


@pytest.mark.parametrize("uri,message", [
    ("ftp://host/models", "--storage-uri scheme ftp:// is not one KServe supports (gs://, s3://, pvc://"),
    ("file:///srv/models", "--storage-uri scheme file:// is not one KServe supports"),
    ("my-bucket/models", "--storage-uri 'my-bucket/models' has no scheme"),
    ("https://example.com/models", "--storage-uri https:// is read by KServe, but these manifests need"),
    ("hdfs://nn/models", "--storage-uri hdfs:// is read by KServe"),
    ("gs:///models", "--storage-uri 'gs:///models' names no bucket"),
    ("pvc:///models", "names no claim"),
    ("s3://bucket/models?versionId=3", "has a query, fragment or whitespace"),
])
def test_bad_storage_uri_is_one_clear_error(bundle, uri, message):
    with pytest.raises(UsageError) as e:
        kubernetes.render(kubernetes.BundleInfo.from_dir(bundle), uri)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs,message", [
    ({"replicas": 0}, "--replicas must be an integer >= 1, got 0"),
    ({"replicas": 4, "max_replicas": 2}, "--max-replicas 2 is below --replicas 4"),
    ({"namespace": "ML_team"}, "--namespace 'ML_team' is not a Kubernetes namespace name"),
])
def test_bad_scaling_is_one_clear_error(bundle, kwargs, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        kubernetes.render(kubernetes.BundleInfo.from_dir(bundle), "gs://b/m", **kwargs)


def test_a_bundle_without_models_config_is_refused(bundle):
    (bundle / "models.config").unlink()
    with pytest.raises(BundleError, match=r"has no models\.config"):
        kubernetes.BundleInfo.from_dir(bundle)


# -- the CLI ------------------------------------------------------------------------------------

def test_k8s_cli_writes_validated_manifests_beside_the_bundle(bundle):
    tar, digest = _pack(bundle)
    r = run_main("k8s", str(bundle), "--storage-uri", "gs://my-bucket/models", "--replicas", "2",
                "--namespace", "serving")
    assert r.returncode == 0, r.stderr
    out = bundle.with_name("resnet50-heads-3.deploy")
    assert f"tarball sha256 pinned: {digest}" in r.stdout and "kubectl apply -n serving -f" in r.stdout
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["kserve/inferenceservice.yaml", "kubernetes/configmap.yaml", "kubernetes/deployment.yaml",
                       "kubernetes/hpa.yaml", "kubernetes/pdb.yaml", "kubernetes/service.yaml"]
    dep = yaml.safe_load((out / "kubernetes/deployment.yaml").read_text())
    assert dep["spec"]["template"]["spec"]["initContainers"][1]["command"][-3:-1] == ["--sha256", digest]
    # the tarball itself renders the same manifests (unpacked with the safe rules, digest hashed)
    r = run_main("k8s", str(tar), "--storage-uri", "gs://my-bucket/models", "--namespace", "serving",
                "--out", str(bundle.parent / "from-tar"))
    assert r.returncode == 0, r.stderr
    assert (bundle.parent / "from-tar/kubernetes/deployment.yaml").read_text() == \
        (out / "kubernetes/deployment.yaml").read_text()


@pytest.mark.parametrize("args,message", [
    (["--storage-uri", "ftp://host/x"], "error: --storage-uri scheme ftp:// is not one KServe supports"),
    (["--storage-uri", "gs://b/m", "--out", "{bundle}/deploy"], "error: --out {bundle}/deploy is inside the bundle"),
    (["--storage-uri", "gs://b/m", "--replicas", "0"], "error: argument --replicas: must be >= 1, got 0"),
])
def test_k8s_cli_errors_are_one_line_exit_2(bundle, args, message):
    args = [a.format(bundle=bundle) for a in args]
    r = run_main("k8s", str(bundle), *args)
    assert r.returncode == 2 and r.stderr.startswith(message.format(bundle=bundle)) and r.stderr.count("\n") == 1, \
        r.stderr
    assert not (bundle / "deploy").exists() and not bundle.with_name(bundle.name + ".deploy").exists()


def test_k8s_cli_without_models_config(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_main("k8s", str(tmp_path / "empty"), "--storage-uri", "gs://b/m")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "has no models.config" in r.stderr


# -- the initContainer's safe-unpack script -------------------------------------------------------

def _pack(bundle: Path) -> tuple[Path, str]:
    from export.bundle.packing import pack
    return pack(bundle)


def _script(*args: str) -> subprocess.CompletedProcess:
    """safe_unpack.py run as the container runs it: a plain `python3 FILE` (no project imports)."""
    return subprocess.run([sys.executable, "-I", str(Path(safe_unpack.__file__)), *args], capture_output=True,
                          text=True, timeout=60)


def test_unpack_script_checks_the_digest_and_unpacks(bundle, tmp_path):
    tar, digest = _pack(bundle)
    r = _script(str(tar), str(tmp_path / "dest"), "--sha256-file", f"{tar}.sha256")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == tmp_path / "dest" / bundle.name
    assert (tmp_path / "dest" / bundle.name / "models.config").read_text() == (bundle / "models.config").read_text()
    r = _script(str(tar), str(tmp_path / "other"), "--sha256", "0" * 64)
    assert r.returncode == 1 and r.stderr == (f"error: sha256 mismatch for {tar}: expected {'0' * 64}, got {digest}; "
                                              "the download is corrupt or not the bundle the manifests were "
                                              "rendered for\n")
    assert not (tmp_path / "other").exists()
    r = _script(str(tar), str(tmp_path / "third"))
    assert r.returncode == 1 and "no checksum given" in r.stderr


def test_unpack_script_refuses_what_verify_refuses(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("b/link")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(info)
    digest = safe_unpack.sha256_of(evil)
    r = _script(str(evil), str(tmp_path / "dest"), "--sha256", digest, "--remove-archive")
    assert r.returncode == 1 and r.stderr.startswith("error: refusing to unpack: link 'b/link' points outside")
    assert evil.exists() and not list((tmp_path / "dest").rglob("*"))


def test_placeholder_uri_renders_marked_manifests(bundle):
    files = kubernetes.render(kubernetes.BundleInfo.from_dir(bundle), fetch.PLACEHOLDER_STORAGE_URI,
                              placeholder=True)
    assert all("PLACEHOLDER storage URI" in text for text in files.values())
    dep = yaml.safe_load(files["kubernetes/deployment.yaml"].split("\n", 3)[3])
    assert dep["metadata"]["annotations"]["resnet-deploy/placeholder-storage-uri"].startswith("true")


@pytest.mark.parametrize("value,message", [
    ("'ftp://x/y'", "storage_uri scheme ftp:// is not one KServe supports"),
    ("3", "storage_uri = 3: input should be a valid string; expected a string such as 'gs://BUCKET/models'"),
])
def test_config_storage_uri_is_checked_when_the_config_is_read(tmp_path, value, message):
    from export.pipeline.config import load_config
    cfg = tmp_path / "v.toml"
    cfg.write_text(f"name = 'x'\nstorage_uri = {value}\n[[variants]]\nname = 'dense'\n")
    with pytest.raises(UsageError, match=f"{cfg}: {message}"):
        load_config(cfg)
    cfg.write_text("name = 'x'\nstorage_uri = 's3://bucket/models'\n[[variants]]\nname = 'dense'\n")
    assert load_config(cfg)["storage_uri"] == "s3://bucket/models"
