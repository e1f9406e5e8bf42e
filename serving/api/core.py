"""The serving API both front ends (REST in server.py, gRPC in grpc_service.py) share:
resolve a model, validate the request, batch and run it; status, metadata and metrics.

Its own module so that the two front ends depend on it and not on each other.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from functools import partial

import numpy as np

from serving.api import tensors
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
        self.metrics: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

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
        with self._lock:
            self.metrics[(model, api, code)] += 1
            acc = self.latency[api]
            acc[0] += seconds
            acc[1] += 1

    def status_response(self, name: str, version: int | None, label: str | None):
        from tensorflow_serving.apis import get_model_status_pb2
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in self.registry.status(name, version, label):
            entry = response.model_version_status.add(
                version=v, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
            entry.status.error_code = 0
        return response

    def metadata_response(self, name: str, version: int | None, label: str | None):
        from tensorflow_serving.apis import get_model_metadata_pb2
        servable = self.registry.resolve(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_def_map())
        return response

    def prometheus_text(self) -> str:
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for (model, api, code), n in sorted(self.metrics.items()):
                lines.append(f':tensorflow:serving:request_count{{model_name="{model}",api="{api}",'
                             f'status="{code}"}} {n}')
            lines.append("# TYPE :tensorflow:serving:request_latency_seconds summary")
            for api, (total, count) in sorted(self.latency.items()):
                lines.append(f':tensorflow:serving:request_latency_seconds_sum{{api="{api}"}} {total:.6f}')
                lines.append(f':tensorflow:serving:request_latency_seconds_count{{api="{api}"}} {int(count)}')
            lines.append("# TYPE :tensorflow:serving:batching_session:processed_batch_size summary")
            for (model, version, sig), b in sorted(self._batchers.items()):
                labels = f'model_name="{model}",version="{version}",signature="{sig}"'
                lines.append(f":tensorflow:serving:batching_session:processed_batch_size_sum{{{labels}}} {b.rows_run}")
                lines.append(f":tensorflow:serving:batching_session:processed_batch_size_count{{{labels}}} {b.batches_run}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        for b in list(self._batchers.values()):
            b.close()
        self.registry.close()
