"""The variant registry: each head on top of ResNet50 is declared as data, not code.

A `VariantSpec` lists the head's layers as `HeadLayer(kind, params)` entries; `build.py`
turns each kind into a Keras layer. A fourth head is one more `register_variant` call.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from export.core.errors import UsageError

#: Layer kinds a head may use, and the parameters each accepts (checked at registration).
HEAD_LAYER_KINDS: dict[str, frozenset[str]] = {
    "conv2d": frozenset({"filters", "kernel_size", "padding", "activation", "l2"}),
    "dropout": frozenset({"rate"}),
    "gap": frozenset(),
    "dense": frozenset({"units", "activation", "l2"}),
}


@dataclass(frozen=True)
class HeadLayer:
    """One layer of a head: a kind from HEAD_LAYER_KINDS and its keyword parameters."""

    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, kind: str, **params: Any) -> HeadLayer:
        return cls(kind, tuple(sorted(params.items())))

    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.kwargs()}


@dataclass(frozen=True)
class VariantSpec:
    """A ResNet50 variant: the head between the backbone and the final `logits` Dense."""

    name: str
    head: tuple[HeadLayer, ...]
    num_classes: int
    input_size: int = 224
    description: str = ""
    labels: tuple[str, ...] = field(default=())
    #: The image contract's aspect policy for this head: "stretch" (the whole image) or "center_crop".
    aspect: str = "stretch"

    @property
    def pools_first(self) -> bool:
        """Whether the head starts with GlobalAveragePooling2D (export.training.head_fit.pools_first on the model)."""
        return bool(self.head) and self.head[0].kind == "gap"

    def image_contract(self, input_size: int | None = None):
        """The image contract (export.images) of this variant at `input_size` (default: its own)."""
        from export.images import ImageContract
        return ImageContract(size=input_size or self.input_size, aspect=self.aspect)

    def default_labels(self, num_classes: int | None = None) -> list[str]:
        """Class names: the declared labels if they fit, else `class_0 … class_{K-1}`."""
        k = num_classes or self.num_classes
        if len(self.labels) == k:
            return list(self.labels)
        return [f"class_{i}" for i in range(k)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["head"] = [layer.to_dict() for layer in self.head]
        d["labels"] = list(self.labels)
        return d


_REGISTRY: dict[str, VariantSpec] = {}


def register_variant(spec: VariantSpec) -> VariantSpec:
    """Add a variant; a duplicate name or an unknown layer kind/parameter raises ValueError."""
    if spec.name in _REGISTRY:
        raise ValueError(f"variant {spec.name!r} is already registered")
    if spec.aspect not in ("stretch", "center_crop"):
        raise ValueError(f"variant {spec.name!r}: aspect must be 'stretch' or 'center_crop', got {spec.aspect!r}")
    if spec.num_classes < 1:
        raise ValueError(f"variant {spec.name!r}: num_classes must be >= 1")
    for layer in spec.head:
        allowed = HEAD_LAYER_KINDS.get(layer.kind)
        if allowed is None:
            raise ValueError(f"variant {spec.name!r}: unknown head layer kind {layer.kind!r}")
        unknown = set(layer.kwargs()) - allowed
        if unknown:
            raise ValueError(f"variant {spec.name!r}: {layer.kind} does not take {sorted(unknown)}")
    if not any(layer.kind == "gap" for layer in spec.head):
        raise ValueError(f"variant {spec.name!r}: the head must pool the feature map ('gap')")
    _REGISTRY[spec.name] = spec
    return spec


def get_variant(name: str) -> VariantSpec:
    """The registered spec called `name`, or a UsageError listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UsageError(f"unknown variant {name!r}; choose one of: {known}") from None


def list_variants() -> list[VariantSpec]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


_CONV = dict(kernel_size=3, padding="same", activation="relu")

register_variant(VariantSpec(
    name="dense",
    head=(HeadLayer.of("gap"),),
    num_classes=10,
    description="GlobalAveragePooling2D -> Dense(num_classes)",
))
register_variant(VariantSpec(
    name="conv",
    head=(
        HeadLayer.of("conv2d", filters=256, **_CONV),
        HeadLayer.of("conv2d", filters=128, **_CONV),
        HeadLayer.of("gap"),
    ),
    num_classes=5,
    description="Conv2D(256,3x3) -> Conv2D(128,3x3) -> GAP -> Dense(num_classes)",
))
register_variant(VariantSpec(
    name="dropout",
    head=(
        HeadLayer.of("conv2d", filters=256, l2=0.01, **_CONV),
        HeadLayer.of("dropout", rate=0.3),
        HeadLayer.of("conv2d", filters=128, l2=0.01, **_CONV),
        HeadLayer.of("gap"),
        HeadLayer.of("dropout", rate=0.5),
    ),
    num_classes=2,
    description="Conv2D(256, L2) -> Dropout(0.3) -> Conv2D(128, L2) -> GAP -> Dropout(0.5) -> Dense",
))
