"""The serving API both front ends (REST in server.py, gRPC in grpc_service.py) share:
resolve a model, validate the request, batch and run it; status, metadata and metrics.

Its own module so that the two front ends depend on it and not on each other.
"""
from __future__ import annotations

import threading
from functools import partial

import numpy as np

from serving.api import tensors
from serving.api.metrics import ServerMetrics
from serving.api.status import ServingStatus
from serving.backends.batching import Batcher, BatchingOptions
from serving.backends.registry import ModelRegistry
from serving.backends.servables import DEFAULT_SIGNATURE, Servable


class ServingCore:
    """The API both front ends share: resolve, validate, batch, run; plus status and metadata."""

    def __init__(self, registry: ModelRegistry, batching: BatchingOptions) -> None:
        self.registry = registry
        self.batching = batching
        self._batchers: dict[tuple[str, int, str], Batcher] = {}
        self._lock = threading.Lock()
        self.metrics = ServerMetrics(registry.models, self._batch_stats)

    def _batcher(self, servable: Servable, signature: str) -> Batcher:
        key = (servable.name, servable.version, signature)
        with self._lock:
            if key not in self._batchers:
                self._batchers[key] = Batcher(partial(servable.run, signature), self.batching,
                                              name=f"{servable.name}-v{servable.version}-{signature}")
            return self._batchers[key]

    @staticmethod
    def signature(servable: Servable, name: str):
        sig = servable.signatures.get(name or DEFAULT_SIGNATURE)
        if sig is None:
            raise ServingStatus.invalid(f'Serving signature name: "{name}" not found in signature def')
        return sig

    def predict(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sig = self.signature(servable, signature)
        tensors.check_inputs(sig, inputs)
        return self._batcher(servable, sig.name).run(inputs)

    def record(self, model: str, api: str, code: str, seconds: float) -> None:
        self.metrics.record(model, api, code, seconds)

    def status_response(self, name: str, version: int | None, label: str | None):
        from serving.api import tf_protos
        tf_protos.load()
        from tensorflow_serving.apis import get_model_status_pb2
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in self.registry.status(name, version, label):
            entry = response.model_version_status.add(
                version=v, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
            entry.status.error_code = 0
        return response

    def metadata_response(self, name: str, version: int | None, label: str | None):
        from serving.api import tf_protos
        tf_protos.load()
        from tensorflow_serving.apis import get_model_metadata_pb2
        servable = self.registry.resolve(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_def_map())
        return response

    def _batch_stats(self) -> list[tuple[str, int, str, int, int]]:
        with self._lock:
            return [(model, version, sig, b.rows_run, b.batches_run)
                    for (model, version, sig), b in self._batchers.items()]

    def prometheus_text(self) -> str:
        return self.metrics.text()

    def close(self) -> None:
        for b in list(self._batchers.values()):
            b.close()
        self.registry.close()
