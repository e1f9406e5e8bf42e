"""Build a VariantSpec into a Keras functional model with preprocessing baked in.

The model takes `image` (float32 NHWC RGB in [0, 255]), applies ResNet50's own "caffe"
preprocessing inside the graph, runs the (frozen) backbone and the declared head, and returns
`{"logits": ..., "probabilities": ...}`. Layer names are deterministic.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops, regularizers

from export.core.errors import UsageError, WeightsError
from export.model import weights as weights_mod
from export.model.built import BuiltModel
from export.model.variants import HeadLayer, VariantSpec

#: ResNet50 stage prefixes, last first: `unfreeze_stages=N` makes the first N trainable.
RESNET50_STAGES = ("conv5", "conv4", "conv3", "conv2", "conv1")
#: The BGR means that keras.applications.resnet50.preprocess_input ("caffe" mode) subtracts.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def preprocess_layer(name: str = "preprocess") -> layers.Conv2D:
    """RGB [0, 255] -> BGR minus the ImageNet means (resnet50.preprocess_input, "caffe" mode) as a
    frozen 1x1 Conv2D: the kernel permutes the channels, the bias subtracts the means.

    A built-in layer, so a saved .keras file loads with plain `keras.models.load_model` (safe
    mode) in a Python that never imported this project; exact in float32 (x*1 + 0*y + b), and
    a plain convolution in TFLite and ONNX. Zeros initialisers draw nothing from the seeded
    random stream, so `random:SEED` weights of the rest of the model are unchanged by it.
    """
    return layers.Conv2D(3, 1, name=name, trainable=False, kernel_initializer="zeros",
                         bias_initializer="zeros")


def preprocess_weights() -> list[np.ndarray]:
    """The kernel [1, 1, 3 (RGB in), 3 (BGR out)] and bias (-BGR means) of `preprocess_layer`."""
    kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
    for out_channel, in_channel in enumerate((2, 1, 0)):
        kernel[0, 0, in_channel, out_channel] = 1.0
    return [kernel, -np.asarray(CAFFE_BGR_MEAN, dtype=np.float32)]


def _head_layer(layer: HeadLayer, name: str) -> layers.Layer:
    kw: dict[str, Any] = layer.kwargs()
    if layer.kind == "gap":
        return layers.GlobalAveragePooling2D(name=name)
    if layer.kind == "dropout":
        return layers.Dropout(kw["rate"], name=name)
    l2 = kw.pop("l2", None)
    reg = regularizers.L2(l2) if l2 else None
    if layer.kind == "conv2d":
        return layers.Conv2D(name=name, kernel_regularizer=reg, **kw)
    if layer.kind == "dense":
        return layers.Dense(name=name, kernel_regularizer=reg, **kw)
    raise UsageError(f"unknown head layer kind {layer.kind!r}")


def set_trainable_stages(backbone: keras.Model, unfreeze_stages: int) -> None:
    """Freeze the backbone, then unfreeze its last N stages (BatchNorm layers stay frozen,
    as fine-tuning guides advise, so small batches don't wreck the running statistics)."""
    if not 0 <= unfreeze_stages <= len(RESNET50_STAGES):
        raise UsageError(f"unfreeze_stages must be 0..{len(RESNET50_STAGES)}, got {unfreeze_stages}")
    backbone.trainable = unfreeze_stages > 0
    prefixes = RESNET50_STAGES[:unfreeze_stages]
    for layer in backbone.layers:
        trainable = bool(prefixes) and layer.name.startswith(prefixes)
        layer.trainable = trainable and not isinstance(layer, layers.BatchNormalization)


def build_architecture(
    spec: VariantSpec,
    num_classes: int | None = None,
    input_size: int | None = None,
    unfreeze_stages: int = 0,
    backbone_weights: str | None = None,
) -> keras.Model:
    """The variant's Keras model with freshly initialised weights (`build` also loads weights).

    `backbone_weights` is passed to keras.applications.ResNet50 ("imagenet" or None).
    """
    k = spec.num_classes if num_classes is None else num_classes
    if not isinstance(k, int) or k < 1:
        raise UsageError(f"--num-classes must be an integer >= 1, got {k!r}")
    size = input_size or spec.input_size
    if size < 32:
        raise UsageError(f"input size must be >= 32 pixels, got {size}")

    image = keras.Input((size, size, 3), dtype="float32", name="image")
    pre = preprocess_layer()
    x = pre(image)
    pre.set_weights(preprocess_weights())
    backbone = keras.applications.ResNet50(
        include_top=False, weights=backbone_weights, input_shape=(size, size, 3), name="resnet50")
    set_trainable_stages(backbone, unfreeze_stages)
    x = backbone(x)
    for i, layer in enumerate(spec.head):
        x = _head_layer(layer, f"head_{i}_{layer.kind}")(x)
    logits = layers.Dense(k, name="logits")(x)
    probabilities = layers.Softmax(name="probabilities")(logits)
    return keras.Model(image, {"logits": logits, "probabilities": probabilities},
                       name=f"resnet50_{spec.name}")


def param_counts(model: keras.Model) -> dict[str, int]:
    """Trainable, non-trainable and total parameter counts, as model.summary() reports them."""
    def count(ws) -> int:
        return int(sum(int(ops.size(w)) for w in ws))
    trainable = count(model.trainable_weights)
    non_trainable = count(model.non_trainable_weights)
    return {"trainable": trainable, "non_trainable": non_trainable, "total": trainable + non_trainable}


def io_spec(model: keras.Model) -> dict[str, dict[str, dict[str, Any]]]:
    """Names, dtypes and shapes (None = any) of the model's inputs and outputs."""
    def one(t) -> dict[str, Any]:
        return {"dtype": str(t.dtype), "shape": [None if d is None else int(d) for d in t.shape]}
    outputs = model.output if isinstance(model.output, dict) else {"output": model.output}
    return {"inputs": {t.name: one(t) for t in model.inputs},
            "outputs": {name: one(t) for name, t in outputs.items()}}


def build(
    spec: VariantSpec,
    weights: str = "random:0",
    num_classes: int | None = None,
    input_size: int | None = None,
    unfreeze_stages: int = 0,
    labels: list[str] | None = None,
) -> BuiltModel:
    """Build `spec` and load `weights` (imagenet | random[:SEED] | a .weights.h5/.keras file)."""
    from export.model import samples

    source = weights_mod.parse_weights(weights)
    k = spec.num_classes if num_classes is None else num_classes
    size = input_size or spec.input_size
    labels = list(labels) if labels else spec.default_labels(k)
    if len(labels) != k:
        raise UsageError(f"{len(labels)} labels given for {k} classes; give exactly one per class")
    details: dict[str, Any] = {}
    if source.kind == "imagenet":
        weights_mod.seed_everything(0)
        try:
            model = build_architecture(spec, k, size, unfreeze_stages, backbone_weights="imagenet")
        except UsageError:
            raise
        except Exception as e:  # noqa: BLE001 -- the converter/runtime raises many types; each becomes one user-facing line
            raise WeightsError(
                "cannot get the ImageNet weights (no network, and not in the Keras cache "
                "~/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5): copy that "
                "file there, or use --weights random[:SEED] or a .weights.h5/.keras file "
                f"({weights_mod.first_line(e)})"
            ) from None
    else:
        weights_mod.seed_everything(source.seed if source.kind == "random" else 0)
        model = build_architecture(spec, k, size, unfreeze_stages)
        if source.kind == "random":
            details = weights_mod.calibrate(model, samples.photos(size))
        else:
            weights_mod.load_file(model, str(source.path))
    return BuiltModel(model, spec, k, size, weights_mod.provenance(source, details), labels)
