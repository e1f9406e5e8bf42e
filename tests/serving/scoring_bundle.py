"""A tiny real bundle for the scoring tests: the tiny Keras model (32x32, 10 classes) exported by
the project's own exporters (SavedModel with warmup, TFLite fp32 + int8, ONNX fp32, OpenVINO fp16), with
models.config, batching.config and manifest.json as `make export` writes them; and an image
folder with photos, a nested folder, a corrupt JPEG and a text file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL = "tiny"
LABELS = [f"label_{i}" for i in range(10)]
#: Small batches, so that a dozen images make several RunInference batches.
MAX_BATCH = 4


def make_bundle(root: Path) -> Path:
    from export.bundle import layout as bundle_mod
    from export.bundle.manifest import Manifest, ParitySummary, VariantRecord
    from export.deploy import tfserving as config
    from export.formats import tool_versions
    from export.model.build import BuiltModel, io_spec, param_counts
    from export.model.variants import VariantSpec
    from export.pipeline.single import export_artifacts
    from tests.helpers import TINY_CLASSES, TINY_SIZE, tiny_model
    out = root / "tiny-bundle-1"
    spec = VariantSpec(name=MODEL, head=(), num_classes=TINY_CLASSES, input_size=TINY_SIZE)
    built = BuiltModel(model=tiny_model(logit_scale=4.0), spec=spec, num_classes=TINY_CLASSES,
                       input_size=TINY_SIZE, labels=LABELS)
    arts = export_artifacts(built, out, [("savedmodel", "fp32"), ("tflite", "fp32"), ("tflite", "int8"),
                                         ("onnx", "fp32"), ("openvino", "fp16")])
    (out / "models.config").write_text(config.bundle_models_config({MODEL: [1]}))
    (out / "batching.config").write_text(config.batching_config(max_batch_size=MAX_BATCH))
    (out / "monitoring.config").write_text(config.monitoring_config())
    bundle_mod.write_manifest(out, Manifest(
        name="tiny-bundle", version=1, created_at="2026-01-01T00:00:00+00:00", tool_versions=tool_versions(),
        config="tests/serving/scoring_bundle.py",
        variants={MODEL: VariantRecord(spec=spec.to_dict(), num_classes=TINY_CLASSES, labels=LABELS,
                                       params=param_counts(built.model), **io_spec(built.model), weights={})},
        artifacts=[a.relative_to(out) for a in arts], parity=ParitySummary(passed=True)))
    return out


def make_images(root: Path) -> tuple[Path, list[Path], list[Path]]:
    """(folder, good image paths, bad file paths): 8 JPEGs/PNGs of the sample photos at
    different sizes (2 in a subfolder), a truncated JPEG and a text file."""
    from PIL import Image

    from export.model import samples
    folder = root / "images"
    (folder / "more").mkdir(parents=True)
    good = []
    for i, name in enumerate(samples.PHOTO_NAMES[:8]):
        size = 40 + 8 * i
        img = Image.fromarray(samples.load_photo(name, size))
        path = folder / ("more" if i >= 6 else "") / f"{name}.{'png' if i % 2 else 'jpg'}"
        img.save(path)
        good.append(path)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:40])
    notes = folder / "notes.txt"
    notes.write_text("not an image\n")
    return folder, sorted(good), [notes, truncated]


def rows_by_path(paths: list[str]) -> dict[str, dict]:
    """Every JSON line of the given shard files, by its `path`."""
    import json
    rows = {}
    for shard in paths:
        for line in Path(shard).read_text().splitlines():
            row = json.loads(line)
            rows[row["path"]] = row
    return rows


def top_k_arrays(top_k: list[dict]) -> tuple[list[int], np.ndarray]:
    return [t["index"] for t in top_k], np.array([t["probability"] for t in top_k])
