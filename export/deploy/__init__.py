"""Files that a deployment reads, written at export time: TF Serving's configs and warmup
records (tfserving.py, warmup.py), the `tensorflow_model_server` flags that `serve` and the
Kubernetes Deployment share (tfserving_flags.py), Kubernetes and KServe manifests
(kubernetes.py, fetch.py), the safe-unpack script their initContainer runs (safe_unpack.py),
and how to serve the OpenVINO IR with OpenVINO Model Server (ovms.py). The serving side reads
them through these same modules."""
