"""Apache Beam ModelHandlers for a bundle's artifacts, as RunInference uses them.

Which handler per format, and why (checked with Beam 2.77, TensorFlow 2.21, Keras 3.15):
- `onnx`: Beam's own `OnnxModelHandlerNumpy`. It opens the model through Beam's FileSystems
  (so gs:// and s3:// bundles work on any runner); `OnnxHandler` only adds an inference_fn
  that returns every output by name (Beam's default keeps the first) and picks the providers
  the worker has (CUDA when present) at load time.
- `savedmodel`: Beam's `TFModelHandlerNumpy` does not work here. Its module imports
  `tensorflow_hub`, which neither Beam nor this project installs, and its loader calls
  `tf.keras.models.load_model`, which Keras 3 refuses for a SavedModel folder ("the legacy
  SavedModel format is not supported by load_model() in Keras 3"). `RunnerHandler` runs the
  SavedModel's `serving_default` signature with the project's TensorFlowRunner instead (what
  `resnet-deploy serve` and the parity suite run).
- `tflite`: Beam has no LiteRT handler; `RunnerHandler` runs the project's LiteRTRunner
  (XNNPACK; full-integer models are quantized and dequantized as on a device).
- any other registered format (`openvino`): `RunnerHandler` with the registry's Runner.
Models on a remote filesystem are copied to the worker's local disk first.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy

#: The model input every artifact of a bundle takes (float32 NHWC RGB in [0, 255]).
INPUT = "image"


def is_local(uri: str) -> bool:
    return FileSystems.get_scheme(uri) in (None, "file")


def local_copy(uri: str) -> Path:
    """`uri` itself when local, else the file or directory tree copied to a temporary folder
    on this worker (through Beam's FileSystems: gs://, s3://, hdfs:// with Beam's extras)."""
    if is_local(uri):
        return Path(uri.removeprefix("file://"))
    base = uri.rstrip("/")
    folder = Path(tempfile.mkdtemp(prefix="resnet-deploy-model."))
    local = folder / Path(base).name
    tree = FileSystems.match([base + "/**"])[0].metadata_list  # a SavedModel folder
    # a file, with its siblings of the same stem (OpenVINO's model.bin beside model.xml)
    stem = base.rsplit("/", 1)[0] + "/" + Path(base).stem + ".*"
    files = ([(m.path, local / m.path[len(base) + 1:]) for m in tree]
             or [(m.path, folder / m.path.rsplit("/", 1)[1]) for m in FileSystems.match([stem])[0].metadata_list])
    for src, target in files:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileSystems.open(src) as fin, open(target, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return local


def _results(batch: Sequence[np.ndarray], outputs: dict[str, np.ndarray], model_id: str) -> list[PredictionResult]:
    """One PredictionResult per example, with every output's row by name."""
    return [PredictionResult(x, {k: np.asarray(v[i]) for k, v in outputs.items()}, model_id)
            for i, x in enumerate(batch)]


class RunnerHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """A project Runner (export/runtimes) behind Beam's ModelHandler interface: load once per
    worker process (RunInference shares it), infer on a stacked batch, every output by name."""

    def __init__(self, uri: str, *, num_threads: int | None = None, min_batch_size: int = 1,
                 max_batch_size: int = 16) -> None:
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._uri = uri
        self._num_threads = num_threads

    def load_model(self) -> Any:
        from export.runtimes import runner_for
        runner = runner_for(local_copy(self._uri), num_threads=self._num_threads)
        return runner.load()

    def run_inference(self, batch: Sequence[np.ndarray], model: Any,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        return _results(batch, model.infer({INPUT: np.stack(batch)}), self._uri)

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return "resnet_deploy_runner"


def _all_outputs(session, batch: Sequence[np.ndarray], inference_args: dict[str, Any] | None = None):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT: np.stack(batch)}), strict=True))


class OnnxHandler(OnnxModelHandlerNumpy):
    """Beam's ONNX Runtime handler with every output by name (a dict, which Beam splits per
    example), the worker's own providers and an optional thread count (SessionOptions are
    made on the worker: they do not pickle)."""

    def __init__(self, uri: str, *, num_threads: int | None = None, min_batch_size: int = 1,
                 max_batch_size: int = 16) -> None:
        super().__init__(uri, inference_fn=_all_outputs, min_batch_size=min_batch_size,
                         max_batch_size=max_batch_size)
        self._num_threads = num_threads

    def load_model(self):
        import onnxruntime as ort
        available = ort.get_available_providers()
        self._providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self._num_threads:
            options.intra_op_num_threads = self._num_threads
        self._session_options = options
        try:
            return super().load_model()
        finally:
            self._session_options = None


#: Formats whose Beam handler works as is (see the module doc); the registry's Runner serves the rest.
BEAM_HANDLERS: dict[str, type[OnnxHandler]] = {"onnx": OnnxHandler}


def make_handler(fmt: str, uri: str, *, num_threads: int | None = None, max_batch_size: int = 16) -> ModelHandler:
    """The handler for an artifact of format `fmt` at `uri` (see the module doc for the choice)."""
    handler: type[OnnxHandler | RunnerHandler] = BEAM_HANDLERS.get(fmt, RunnerHandler)
    return handler(uri, num_threads=num_threads, max_batch_size=max_batch_size)
