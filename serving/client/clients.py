"""REST and gRPC clients for TF Serving's API (the real server or the local one).

Both clients answer with the same plain shapes: `status()` and `metadata()` return TF Serving's
REST JSON (gRPC answers are converted to it), `predict()` returns each output as a NumPy array.
Any failure raises ServingError with the server's code and message. The REST client needs no
TensorFlow; the gRPC protos import it (tensorflow-serving-api depends on its protos).
"""
from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.core.errors import ServingError
from export.core.registry import DEFAULT_SIGNATURE as DEFAULT_SIGNATURE
from export.core.registry import IMAGE_BYTES_SIGNATURE as IMAGE_BYTES_SIGNATURE
from serving.api.protos import to_dict


def _spec_path(model: str, version: int | None, label: str | None) -> str:
    if version is not None and label is not None:
        raise ServingError("give a model version or a label, not both")
    path = f"/v1/models/{model}"
    if version is not None:
        path += f"/versions/{version}"
    elif label is not None:
        path += f"/labels/{label}"
    return path


class RestClient:
    """TF Serving's REST API at `url` (e.g. http://127.0.0.1:8501)."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import httpx
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx
        try:
            r = self._http.request(method, path, content=None if body is None else json.dumps(body),
                                   headers={"Content-Type": "application/json"})
        except httpx.HTTPError as e:
            raise ServingError(f"cannot reach the REST API at {self.url} ({type(e).__name__}: {e}); "
                               "is the server running (resnet-deploy serve BUNDLE)?") from None
        try:
            doc = r.json()
        except ValueError:
            raise ServingError(f"{method} {self.url}{path}: HTTP {r.status_code}, not JSON: {r.text[:200]!r}") from None
        if r.status_code != 200:
            raise ServingError(f"{method} {path}: HTTP {r.status_code}: {doc.get('error', doc)}")
        return doc

    def status(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        return self._call("GET", _spec_path(model, version, label))

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        return self._call("GET", _spec_path(model, version, label) + "/metadata")

    def predict_json(self, model: str, body: dict, version: int | None = None, label: str | None = None) -> dict:
        """POST a ready-made request body to `:predict`; the response JSON as is."""
        return self._call("POST", _spec_path(model, version, label) + ":predict", body)

    def predict(self, model: str, inputs: dict[str, np.ndarray], signature: str = DEFAULT_SIGNATURE,
                version: int | None = None, label: str | None = None, form: str = "columnar") -> dict[str, np.ndarray]:
        """Predict with named input arrays (object arrays of bytes go as `{"b64"}`), in `form`
        "columnar" (`inputs`) or "row" (`instances`); every output as float32."""
        enc = {k: _to_json(v) for k, v in inputs.items()}
        if form == "columnar":
            body = {"signature_name": signature,
                    "inputs": next(iter(enc.values())) if len(enc) == 1 else enc}
        else:
            n = len(next(iter(inputs.values())))
            rows = next(iter(enc.values())) if len(enc) == 1 else [{k: v[i] for k, v in enc.items()} for i in range(n)]
            body = {"signature_name": signature, "instances": rows}
        doc = self.predict_json(model, body, version, label)
        if "outputs" in doc:
            out = doc["outputs"]
            return {k: np.asarray(v, np.float32) for k, v in out.items()} if isinstance(out, dict) \
                else {"output": np.asarray(out, np.float32)}
        preds = doc["predictions"]
        if preds and isinstance(preds[0], dict):
            return {k: np.asarray([p[k] for p in preds], np.float32) for k in preds[0]}
        return {"output": np.asarray(preds, np.float32)}


def _to_json(a: np.ndarray):
    if a.dtype == np.dtype(object) or a.dtype.kind == "S":
        return [{"b64": base64.b64encode(bytes(b)).decode("ascii")} for b in a.reshape(-1)]
    return a.tolist()


class GrpcClient:
    """TF Serving's gRPC API at `target` (HOST:PORT)."""

    def __init__(self, target: str, timeout: float = 60.0, max_message_bytes: int = 64 << 20) -> None:
        import grpc

        from serving.api import tf_protos
        tf_protos.load()  # without TensorFlow (~5 s), unless this process has imported it already
        from tensorflow_serving.apis import (
            model_service_pb2_grpc,
            prediction_service_pb2_grpc,
        )
        self.target, self.timeout = target, timeout
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, rpc, request):
        import grpc
        try:
            return rpc(request, timeout=self.timeout)
        except grpc.RpcError as e:
            unreachable = e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if unreachable and "connect" in str(e.details()).lower():
                raise ServingError(f"cannot reach the gRPC API at {self.target} ({e.details()}); "
                                   "is the server running (resnet-deploy serve BUNDLE)?") from None
            raise ServingError(f"gRPC {e.code().name}: {e.details()}") from None

    @staticmethod
    def _spec(spec, model: str, version: int | None, label: str | None, signature: str = "") -> None:
        if version is not None and label is not None:
            raise ServingError("give a model version or a label, not both")
        spec.name = model
        if version is not None:
            spec.version.value = version
        elif label is not None:
            spec.version_label = label
        if signature:
            spec.signature_name = signature

    def status(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        from tensorflow_serving.apis import get_model_status_pb2
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, label)
        return to_dict(self._call(self._models.GetModelStatus, request))

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        from tensorflow_serving.apis import get_model_metadata_pb2
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version, label)
        response = self._call(self._predict.GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        spec = to_dict(response.model_spec)
        return {"model_spec": {"name": spec["name"], "signature_name": spec.get("signature_name", ""),
                               "version": spec.get("version", "")},
                "metadata": {"signature_def": to_dict(sig_map)}}

    def predict_request(self, model: str, inputs: dict[str, np.ndarray], signature: str = DEFAULT_SIGNATURE,
                        version: int | None = None, label: str | None = None, output_filter: Sequence[str] = ()):
        """The PredictRequest proto for `inputs` (the client's encoding step, timed apart by the load run)."""
        from tensorflow_serving.apis import predict_pb2
        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        self._spec(request.model_spec, model, version, label, signature)
        for k, v in inputs.items():
            request.inputs[k].CopyFrom(make_tensor_proto(v))
        return request

    def send(self, request):
        """Send a PredictRequest; the raw PredictResponse proto."""
        return self._call(self._predict.Predict, request)

    @staticmethod
    def predict_outputs(response) -> dict[str, np.ndarray]:
        """Every output of a PredictResponse as a NumPy array."""
        return {k: make_ndarray(v) for k, v in response.outputs.items()}

    def predict_response(self, model: str, inputs: dict[str, np.ndarray], signature: str = DEFAULT_SIGNATURE,
                         version: int | None = None, label: str | None = None, output_filter: Sequence[str] = ()):
        """The raw PredictResponse proto."""
        return self.send(self.predict_request(model, inputs, signature, version, label, output_filter))

    def predict(self, model: str, inputs: dict[str, np.ndarray], signature: str = DEFAULT_SIGNATURE,
                version: int | None = None, label: str | None = None, form: str = "") -> dict[str, np.ndarray]:
        return self.predict_outputs(self.predict_response(model, inputs, signature, version, label))


def make_tensor_proto(a: np.ndarray):
    """tf.make_tensor_proto of the array, without TensorFlow (serving.api.tf_protos); ServingError for
    an array it cannot encode."""
    from serving.api import tf_protos
    a = np.asarray(a)
    try:
        return tf_protos.from_ndarray(a)
    except (TypeError, ValueError) as e:
        raise ServingError(f"cannot send a {a.dtype} tensor: {e}") from None


def make_ndarray(proto) -> np.ndarray:
    """tf.make_ndarray of the TensorProto, without TensorFlow (serving.api.tf_protos); ServingError for a
    TensorProto it cannot read."""
    from serving.api import tf_protos
    try:
        return tf_protos.to_ndarray(proto)
    except (TypeError, ValueError) as e:
        raise ServingError(f"cannot read a TensorProto of the answer: {e}") from None


# -- images, labels, top-k --------------------------------------------------------------------

def read_image_bytes(paths: Sequence[str | Path]) -> np.ndarray:
    """The files' bytes as an object array, for `predict_image_bytes`."""
    out = []
    for p in paths:
        try:
            out.append(Path(p).read_bytes())
        except OSError as e:
            raise ServingError(f"cannot read image {p}: {e.strerror}") from None
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr


def load_pixels(paths: Sequence[str | Path], size: int = 224, aspect: str = "stretch") -> np.ndarray:
    """Decoded RGB float32 [N, size, size, 3] in [0, 255] by the image contract's NumPy twin
    (export.images.pil: what `predict_image_bytes` does in the graph), for `serving_default`."""
    from export.images import ImageContract, ImageError, pil
    try:
        return pil.decode_files(list(paths), ImageContract(size, aspect))
    except ImageError as e:
        raise ServingError(str(e)) from None


def read_labels(path: str | Path | None) -> list[str] | None:
    if path is None:
        return None
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as e:
        raise ServingError(f"cannot read labels file {path}: {e.strerror}") from None


def top_k(probabilities: np.ndarray, k: int = 5, labels: list[str] | None = None) -> list[dict]:
    """The k most probable classes of one row: index, label (or class index) and probability."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i] if labels and i < len(labels) else str(int(i)),
             "probability": float(probabilities[i])} for i in order]


def input_size(metadata: dict, default: int = 224) -> int:
    """The image size of serving_default's `image` input in a metadata answer."""
    try:
        sig = metadata["metadata"]["signature_def"]["signature_def"][DEFAULT_SIGNATURE]
        dims = next(iter(sig["inputs"].values()))["tensor_shape"]["dim"]
        return int(dims[1]["size"])
    except (KeyError, IndexError, StopIteration, ValueError):
        return default


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
