"""TF Serving's gRPC services for the local server: PredictionService (Predict,
GetModelMetadata) and ModelService (GetModelStatus), from tensorflow-serving-api's definitions.

Every failure is a ServingStatus turned into the matching gRPC status code; Classify, Regress,
MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED (the generated defaults).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING

from serving.api import tensors
from serving.api.status import ServingStatus

if TYPE_CHECKING:
    from serving.api.core import ServingCore

log = logging.getLogger("resnet_deploy.serving")


def _spec_of(model_spec) -> tuple[str, int | None, str | None]:
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return model_spec.name, version, label


def _grpc_call(core: ServingCore, api: str, fn: Callable):
    def handler(request, context):
        start = time.perf_counter()
        model = request.model_spec.name
        try:
            response = fn(request)
            core.record(model, api, "OK", time.perf_counter() - start)
            return response
        except ServingStatus as e:
            core.record(model, api, e.code, time.perf_counter() - start)
            context.abort(e.grpc_code, e.message)
        except Exception as e:
            import grpc
            log.exception("internal error answering gRPC %s", api)
            core.record(model, api, "INTERNAL", time.perf_counter() - start)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")
    return handler


def create_grpc_server(core: ServingCore, max_message_bytes: int, max_workers: int = 32):
    """A grpc.Server with PredictionService (Predict, GetModelMetadata) and ModelService."""
    import grpc

    from serving.api import tf_protos
    tf_protos.load()  # without TensorFlow, which only the SavedModel backend needs
    from tensorflow_serving.apis import (
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    def predict(request):
        name, version, label = _spec_of(request.model_spec)
        servable = core.registry.resolve(name, version, label)
        sig = core.signature(servable, request.model_spec.signature_name)
        inputs = {k: tensors.proto_to_array(k, v, max_message_bytes) for k, v in request.inputs.items()}
        outputs = core.predict(servable, sig.name, inputs)
        wanted = list(request.output_filter) or sorted(outputs)
        for w in wanted:
            if w not in outputs:
                raise ServingStatus.invalid(f"output tensor alias not found in signature: {w} Outputs expected to be "
                                            f"in the set {{{','.join(sorted(outputs))}}}.")
        response = predict_pb2.PredictResponse()
        response.model_spec.name, response.model_spec.signature_name = servable.name, sig.name
        response.model_spec.version.value = servable.version
        for w in wanted:
            response.outputs[w].CopyFrom(tensors.array_to_proto(outputs[w]))
        return response

    def metadata(request):
        fields = list(request.metadata_field)
        if not fields:
            raise ServingStatus.invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != "signature_def":
                raise ServingStatus.invalid(f"Metadata field {f} is not supported")
        return core.metadata_response(*_spec_of(request.model_spec))

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        Predict = staticmethod(_grpc_call(core, "predict", predict))
        GetModelMetadata = staticmethod(_grpc_call(core, "metadata", metadata))

    class Model(model_service_pb2_grpc.ModelServiceServicer):
        GetModelStatus = staticmethod(_grpc_call(
            core, "status", lambda r: core.status_response(*_spec_of(r.model_spec))))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                         options=[("grpc.max_receive_message_length", max_message_bytes),
                                  ("grpc.max_send_message_length", max_message_bytes),
                                  ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Model(), server)
    return server
