"""BuiltModel, the record of a built variant, apart from export.model.build so that a process that
only reads a SavedModel (the OpenVINO converter task) can name one without importing Keras and
TensorFlow (about 5 CPU seconds per process)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from export.model.variants import VariantSpec

if TYPE_CHECKING:
    import keras


@dataclass
class BuiltModel:
    """A built variant: the Keras model plus what exporters and manifests need to know (`model` is
    None where a task works from the SavedModel)."""

    model: keras.Model
    spec: VariantSpec
    num_classes: int
    input_size: int
    weights: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
