"""How to serve a bundle's OpenVINO IR: OpenVINO Model Server, the local server, TF Serving's bf16.

OpenVINO Model Server (OVMS) answers TF Serving's REST and gRPC Predict APIs and reads the
layout the exporter writes (`openvino/<variant>/<version>/model.xml`). It has NOT been run on
the machines that built and tested this project (no OVMS binary or image there), so the bundle
README says so; the local server (`serve --backend openvino`) is what the tests exercise.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

#: The image and ports of the OVMS commands in the README (gRPC 9000 and REST 8000 by its docs).
OVMS_IMAGE = "openvino/model_server:latest"


def ovms_config(variants: list[str], precision_hint: str = "bf16", int8_variants: Sequence[str] = ()) -> dict[str, Any]:
    """An OVMS config.json serving every variant's IR from a bundle mounted at /models, and the int8
    IR of `int8_variants` as model `<variant>_int8` (its own directory: OVMS reads one IR per version)."""
    names = [*variants, *(f"{v}_int8" for v in int8_variants)]
    return {"model_config_list": [
        {"config": {"name": v, "base_path": f"/models/openvino/{v}", "target_device": "CPU",
                    "plugin_config": {"INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": "LATENCY"}}}
        for v in names]}


def readme_section(bundle_name: str, variants: list[str], int8_variants: Sequence[str] = ()) -> str:
    """The bundle README's OpenVINO section (Markdown)."""
    first = variants[0]
    config = json.dumps(ovms_config(variants, int8_variants=int8_variants), indent=2)
    int8 = "" if not int8_variants else f"""
`openvino/<variant>_int8/<version>/model.xml` + `model.bin` is the int8 IR (NNCF post-training
quantization, calibrated on the variant's data; with its eval set, NNCF's accuracy control kept the
most sensitive layers in float: `manifest.json` lists them under the artifact's `keep_float`). It is
its own OVMS model, `<variant>_int8`, since OVMS reads one IR per version directory. Locally:

    resnet-deploy serve {bundle_name} --backend openvino:int8     # or openvino:int8-bf16
"""
    return f"""## Serve the OpenVINO IR (CPUs with AMX or AVX512-BF16)

`openvino/<variant>/<version>/model.xml` + `model.bin` is the OpenVINO IR of each variant
(fp16 weights; the same `image` -> `logits`, `probabilities` I/O, batch dimension dynamic).
OpenVINO computes it in bf16 on CPUs with AMX-BF16 or AVX512-BF16 (its default there) and in
f32 elsewhere; `parity.md` has a row for each (`@ f32`, `@ bf16`) and `make bench`'s `bench.md` their speed.

Locally, through the TF Serving-compatible server of resnet-deploy:

    resnet-deploy serve {bundle_name} --backend openvino:bf16     # or openvino:f32
{int8}
With OpenVINO Model Server, which answers the same TF Serving REST and gRPC APIs
(**not run on the machines that built and tested this bundle**: no OVMS there). One model:

    docker run --rm -p 9000:9000 -p 8000:8000 -v "$PWD/{bundle_name}:/models:ro" {OVMS_IMAGE} \\
      --model_name {first} --model_path /models/openvino/{first} --port 9000 --rest_port 8000 \\
      --target_device CPU --plugin_config '{{"INFERENCE_PRECISION_HINT": "bf16"}}'

Every variant: save this as `ovms.json` beside the bundle and pass `--config_path`:

```json
{config}
```

    docker run --rm -p 9000:9000 -p 8000:8000 -v "$PWD/{bundle_name}:/models:ro" \\
      -v "$PWD/ovms.json:/config/ovms.json:ro" {OVMS_IMAGE} \\
      --config_path /config/ovms.json --port 9000 --rest_port 8000

Query it like TF Serving, with pixels (the IR has no `predict_image_bytes` signature):

    resnet-deploy predict --rest http://localhost:8000 --model {first} --pixels cat.jpg

On a CPU without bf16 units set `"INFERENCE_PRECISION_HINT": "f32"` instead.

TF Serving (2.15 and later) can also run the SavedModel in bf16, with
`--mixed_precision=bfloat16` (oneDNN's auto-mixed-precision graph rewrite; nothing to
re-export). On the CPU this project measured it on (AVX512-BF16, no AMX) it gained nothing at
batch 1 and about 1.45x at batch 8 over fp32, about half of what the OpenVINO IR gains, and it is
not in this bundle's parity report: measure it on your CPU first.
"""
