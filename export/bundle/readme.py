"""The bundle's README.md: what is inside, how to serve it, how to run it on a device.

The sections are f-string templates over the manifest's variant records and the artifact list;
the parity table and the on-device and OpenVINO sections come from their own modules.
"""
from __future__ import annotations

from typing import Any


def _weights_note(variant: dict[str, Any]) -> str:
    """`weights random:0, head not trained`, or for a trained variant where it started and how it scores."""
    training = variant.get("training")
    if not training:
        untrained = ", head not trained" if variant["weights"].get("kind") in ("random", "imagenet") else ""
        return f"weights `{variant['weights']['source']}`{untrained}"
    images = sum(training["images_per_class"].values())
    probe = training.get("probe_val_accuracy")  # what a logistic regression reaches on the same features
    probe_note = f"; probe {probe:.3f}" if probe is not None else ""
    return (f"trained from `{training['weights']}` on `{training['data']}` ({images} images): "
            f"**val accuracy {training['val_accuracy']:.3f}** ({training['val_images']} images{probe_note})")


def render_readme(bundle_name: str, model_prefix: str, version: int, variants: dict[str, Any],
                  artifacts: list, parity_markdown: str) -> str:
    """The bundle's README: what is inside, how to serve it, how to run it on a device."""
    names = sorted(variants)
    first = names[0]
    rows = "\n".join(
        f"| `{a.variant}` | {a.format} | {a.precision} | `{a.path}` | {a.bytes / 1e6:.1f} MB |"
        for a in sorted(artifacts, key=lambda a: (a.variant, a.format, a.precision)))
    from export.bundle.image_section import image_section
    from export.deploy.ondevice import readme_section
    contract = variants[first].get("image") or {}
    device_section = readme_section(first, sorted(a.precision for a in artifacts
                                                  if a.variant == first and a.format == "tflite"),
                                    int(contract.get("size", 224)), str(contract.get("aspect", "stretch")))
    return f"""# {bundle_name}

A resnet-deploy deployment bundle: ResNet50 variants {', '.join(f'`{n}`' for n in names)}, each as a
TensorFlow SavedModel (TF Serving), TFLite, ONNX and OpenVINO IR, with the parity report that
proves they answer alike. Every file is listed with its sha256 in `manifest.json`; check it with

    resnet-deploy verify {bundle_name}            # or {bundle_name}.tar.gz
    sha256sum -c {bundle_name}.tar.gz.sha256      # the tarball, from the directory holding it

{_models_section(names, variants, rows)}

{image_section(variants)}{_serving_section(bundle_name, first, version)}

{_scoring_section(bundle_name, first)}

{device_section}
{_openvino_section(bundle_name, artifacts)}## Parity

{parity_markdown}

{BENCH_README_SECTION}"""


def _models_section(names: list[str], variants: dict[str, Any], rows: str) -> str:
    labels = "\n".join(f"- `{v}`: {variants[v]['num_classes']} classes "
                       f"({', '.join(variants[v]['labels'][:5])}{', …' if len(variants[v]['labels']) > 5 else ''}); "
                       f"{_weights_note(variants[v])}" for v in names)
    return f"""## Models

{labels}

Inputs and outputs (every format): input `image`, float32 NHWC RGB in [0, 255] (ResNet50's
preprocessing is inside the graph); outputs `logits` and `probabilities`. The SavedModels
also have the signature `predict_image_bytes` (input `image_bytes`: encoded JPEG/PNG/GIF/BMP/WebP).
`model_int8.tflite` is full-integer: uint8 `image` (raw pixels) and uint8 outputs, with the
quantization parameters (real = scale × (q − zero_point)) in `manifest.json`.

| variant | format | precision | path | size |
|---|---|---|---|---|
{rows}"""


def _serving_section(bundle_name: str, first: str, version: int) -> str:
    return f"""## Serve with TensorFlow Serving

With the `tensorflow/serving` image (the bundle mounted at `/models`, where `models.config`
expects it):

    docker run --rm -p 8500:8500 -p 8501:8501 \\
      -v "$PWD/{bundle_name}:/models:ro" tensorflow/serving \\
      --model_config_file=/models/models.config \\
      --enable_batching --batching_parameters_file=/models/batching.config \\
      --monitoring_config_file=/models/monitoring.config

With the binary, put (or link) the bundle at `/models`, or rewrite the `base_path`s in
`models.config` to where it lies, then:

    tensorflow_model_server --port=8500 --rest_api_port=8501 \\
      --model_config_file=/models/models.config \\
      --enable_batching --batching_parameters_file=/models/batching.config \\
      --monitoring_config_file=/models/monitoring.config

`resnet-deploy serve {bundle_name}` does this for you (or, without TF Serving installed, prints
the docker command and starts a local TF Serving-compatible server on the same ports).

Query it:

    curl http://localhost:8501/v1/models/{first}
    curl -X POST http://localhost:8501/v1/models/{first}:predict \\
      -d '{{"signature_name": "predict_image_bytes", "instances": [{{"b64": "'$(base64 -w0 cat.jpg)'"}}]}}'
    resnet-deploy predict --rest http://localhost:8501 --model {first} cat.jpg

Version `{version}` of every model carries the label `stable`
(`/v1/models/{first}/labels/stable:predict`). Prometheus metrics:
`http://localhost:8501/monitoring/prometheus/metrics`."""


def _scoring_section(bundle_name: str, first: str) -> str:
    return f"""## Kubernetes, KServe and batch scoring

`deploy/kubernetes/` (TF Serving Deployment, Service, HPA, PDB, ConfigMap) and
`deploy/kserve/inferenceservice.yaml` were rendered for the `storage_uri` of the export config;
if their header says PLACEHOLDER, upload this folder and its tarball, then render them for the
real location (the tarball's sha256 pinned) and apply:

    resnet-deploy k8s {bundle_name} --storage-uri gs://BUCKET/PATH     # or s3://, pvc://CLAIM/PATH
    kubectl apply -f {bundle_name}.deploy/kubernetes/

Score a folder of images offline on Apache Beam (DirectRunner here; Dataflow, Flink or Spark
with Beam's options):

    resnet-deploy score {bundle_name} --model {first} --input photos/ --output scores/{first}"""


def _openvino_section(bundle_name: str, artifacts: list) -> str:
    """The OpenVINO section when the bundle has OpenVINO IRs (export.deploy.ovms), else nothing."""
    variants = sorted({a.variant for a in artifacts if a.format == "openvino"})
    if not variants:
        return ""
    from export.deploy.ovms import readme_section
    int8 = sorted({a.variant for a in artifacts if a.format == "openvino" and a.precision == "int8"})
    return readme_section(bundle_name, variants, int8) + "\n"


#: The README's last section.
BENCH_README_SECTION = """## Benchmarks

`make bench` (or `resnet-deploy bench <bundle>`) measures every artifact on the machine it runs
on: load time, latency p50/p90 and the slowest run at batch 1 and 8, throughput, peak memory,
top-1 agreement with the fp32 reference, and the machine's own float32 matmul ceiling; every
`.tflite` also at 1 and 2 LiteRT threads (batch 1), what one and two of a phone's cores give. It
checks this folder against `manifest.json` first and refuses a changed one, and it writes
nothing here: `bench.md` (tables), `bench.json` and `bench.png` (latency vs size) go to
`<name>-<version>.bench/` beside this folder, so the checksums and the signature still hold.
"""
