"""FLOP maths for the bench: multiply-accumulates of Keras' ResNet50 and of a declared head, so the
bench can say how many GFLOP/s an artifact achieved against the machine's matmul ceiling."""
from __future__ import annotations

from typing import Any


def _out(n: int, stride: int) -> int:
    return -(-n // stride)


def resnet50_macs(size: int = 224) -> tuple[int, int, int]:
    """Multiply-accumulates of Keras' ResNet50 (v1, no top) at size x size, and its output H, W.

    Counts the conv layers (BatchNorm, ReLU, adds and pooling are < 1 % and left out):
    2 x 3.86 G = 7.7 GFLOP at 224 x 224.
    """
    h = _out(size, 2)
    macs = h * h * 7 * 7 * 3 * 64                      # conv1, stride 2
    h = _out(h, 2)                                     # max-pool 3x3, stride 2
    cin = 64
    for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            s = stride if b == 0 else 1
            ho = _out(h, s)
            if b == 0:
                macs += ho * ho * cin * 4 * filters    # projection shortcut (1x1, stride s)
            macs += ho * ho * cin * filters            # 1x1 (stride s: Keras v1)
            macs += ho * ho * 9 * filters * filters    # 3x3
            macs += ho * ho * filters * 4 * filters    # 1x1 expand
            h, cin = ho, 4 * filters
    return macs, h, cin


def head_macs(head: list[dict[str, Any]], num_classes: int, h: int, cin: int) -> int:
    """Multiply-accumulates of a declared head (conv2d 'same', dense) and the final logits Dense."""
    macs, spatial = 0, True
    for layer in head:
        kind = layer["kind"]
        if kind == "conv2d" and spatial:
            k = int(layer.get("kernel_size", 1))
            macs += h * h * k * k * cin * int(layer["filters"])
            cin = int(layer["filters"])
        elif kind == "gap":
            spatial = False
        elif kind == "dense":
            macs += cin * int(layer["units"])
            cin = int(layer["units"])
    return macs + cin * num_classes


def gflop_per_image(variant_meta: dict[str, Any]) -> dict[str, float]:
    """GFLOP (2 x MACs) per image of a variant: backbone, head and total, from the manifest's spec."""
    spec = variant_meta["spec"]
    shape = (variant_meta.get("inputs", {}).get("image", {}) or {}).get("shape") or []
    size = int(shape[1]) if len(shape) == 4 and shape[1] else int(spec.get("input_size", 224))
    backbone, h, cin = resnet50_macs(size)
    head = head_macs(spec.get("head", []), int(variant_meta["num_classes"]), h, cin)
    return {"input_size": size, "backbone": round(2 * backbone / 1e9, 4), "head": round(2 * head / 1e9, 6),
            "total": round(2 * (backbone + head) / 1e9, 6)}
