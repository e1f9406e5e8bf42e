"""`resnet-deploy classify MODEL.tflite IMAGE... [--top-k K] [--json]`: the on-device path on a desktop.

LiteRT runs the .tflite file (XNNPACK, as on a phone's CPU); the class names come from the
model's TFLite metadata (the labels file packed into it), else from `labels.txt` beside the
model (what the exporter writes), else `--labels FILE`. JPEG/PNG/GIF/BMP files are decoded and
resized exactly as the SavedModel's `predict_image_bytes` signature does (the same function),
so this answers like TF Serving given the same files.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from export.core.argtypes import int_at_least
from export.core.errors import UsageError

TFLITE_IDENTIFIER = b"TFL3"  # bytes 4..8 of every TFLite flatbuffer


def add_parsers(sub, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add `classify` to the `resnet-deploy` subparsers and `commands` table."""
    p = sub.add_parser("classify", help="classify image files with a .tflite model on LiteRT "
                                        "(labels from its metadata)")
    p.add_argument("model", metavar="MODEL.tflite")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG, GIF or BMP files")
    p.add_argument("--top-k", type=int_at_least(1), default=5, help="classes to show per image (default 5)")
    p.add_argument("--labels", metavar="labels.txt", help="class names, one a line, for a model without metadata")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="LiteRT CPU threads (default: up to 4)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    commands["classify"] = cmd_classify


def check_model_file(path: Path) -> bytes:
    """The bytes of a .tflite file; UsageError if it is missing or not a TFLite flatbuffer."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such model file: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory; give a .tflite file "
                         "(e.g. tflite/<variant>/model_fp32.tflite)") from None
    except OSError as e:
        raise UsageError(f"cannot read model {path}: {e.strerror}") from None
    if data[4:8] != TFLITE_IDENTIFIER:
        raise UsageError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier); give a .tflite file")
    return data


def resolve_labels(path: Path, data: bytes, labels_file: str | None) -> tuple[list[str], str, dict[str, Any] | None]:
    """(labels, where they came from, metadata summary): --labels, else the metadata's labels of the
    `probabilities` output, else labels.txt beside the model; UsageError if none is found."""
    from export.core.errors import ExportError
    from export.deploy.tflite_metadata import PRIMARY_OUTPUT, aspect_of, read_metadata
    try:
        md = read_metadata(data)
    except ExportError as e:
        raise UsageError(f"{path}: {e}") from None
    summary = None if md is None else {"name": md.name, "version": md.version, "author": md.author,
                                       "license": md.license, "aspect": aspect_of(md.input_description)}
    if labels_file:
        return _read_labels(Path(labels_file)), labels_file, summary
    out = md.output(PRIMARY_OUTPUT) if md else None
    if out is not None and out.labels:
        return out.labels, f"metadata ({out.labels_file})", summary
    beside = path.with_name("labels.txt")
    if beside.is_file():
        return _read_labels(beside), str(beside), summary
    what = "has no TFLite metadata" if md is None else "has metadata without labels"
    raise UsageError(f"{path} {what} and there is no labels.txt beside it; pass --labels FILE "
                     "(or re-export it: resnet-deploy export writes metadata into every .tflite)")


def _read_labels(path: Path) -> list[str]:
    try:
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read labels file {path}: {getattr(e, 'strerror', None) or e}") from None
    if not labels:
        raise UsageError(f"labels file {path} is empty; it needs one class name a line")
    return labels


def load_image(path: Path, size: int, aspect: str = "stretch") -> np.ndarray:
    """One image file as float32 [1, size, size, 3] in [0, 255] by the image contract's NumPy twin
    (what the SavedModel's `predict_image_bytes` does in the graph); UsageError if it cannot be read or decoded."""
    from export.images import ImageContract, ImageError, pil
    try:
        return pil.decode_file(path, ImageContract(size, aspect))[None]
    except ImageError as e:
        raise UsageError(str(e)) from None


def classify(model: str | Path, images: list[str], top_k: int = 5, labels_file: str | None = None,
             num_threads: int | None = None) -> dict[str, Any]:
    """Top-k classes of every image with `model` on LiteRT: {"model", "labels_source",
    "metadata", "precision_io", "predictions": [{"image", "top_k": [{index, label, probability}]}]}."""
    from export.runtimes.litert import LiteRTRunner
    path = Path(model)
    data = check_model_file(path)
    for image in images:  # every file is checked before any is run
        if not Path(image).is_file():
            raise UsageError(f"cannot read image {image}: no such file")
    runner = LiteRTRunner(path, num_threads=num_threads)
    with runner:  # a corrupt file fails here, in LiteRT's words
        labels, source, summary = resolve_labels(path, data, labels_file)
        size = runner.inputs["image"].shape[1] if "image" in runner.inputs else None
        if "probabilities" not in runner.outputs or size is None:
            raise UsageError(f"{path} has {sorted(runner.inputs)} -> {runner.outputs}, not a fixed-size 'image' -> "
                             "'probabilities': not a resnet-deploy classifier")
        predictions = []
        for image in images:
            pixels = load_image(Path(image), size, (summary or {}).get("aspect", "stretch"))
            probs = runner.infer({"image": pixels})["probabilities"][0]
            if len(probs) != len(labels):
                raise UsageError(f"{path} has {len(probs)} classes but {source} lists {len(labels)} labels")
            order = np.argsort(-probs, kind="stable")[:top_k]
            predictions.append({"image": image, "top_k": [
                {"index": int(i), "label": labels[i], "probability": round(float(probs[i]), 6)} for i in order]})
    return {"model": str(path), "device": runner.device, "labels_source": source, "metadata": summary,
            "quantization": dict(runner.quantization), "predictions": predictions}


def cmd_classify(args: argparse.Namespace) -> int:
    result = classify(args.model, args.images, args.top_k, args.labels, args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    md = result["metadata"]
    about = f"{md['name']} v{md['version']}" if md else "no metadata"
    print(f"{result['model']} ({about}; labels from {result['labels_source']}; {result['device']})")
    for p in result["predictions"]:
        print(p["image"])
        for rank, t in enumerate(p["top_k"], 1):
            print(f"  {rank}. {t['label']:<24s} {t['probability']:.4f}")
    return 0
