"""The `tensorflow_model_server` command-line flags for a bundle, in one place.

`resnet-deploy serve` (the binary, or the `docker run tensorflow/serving` line it prints) and
the Kubernetes Deployment both take their flags from `model_server_flags`, so the server runs
the same way on a laptop and in a cluster.
"""
from __future__ import annotations

#: The ports TF Serving listens on inside the tensorflow/serving image (and in the Deployment).
GRPC_PORT, REST_PORT = 8500, 8501


def model_server_flags(models_config: str, batching_config: str | None = None,
                       monitoring_config: str | None = None, *, grpc_port: int | None = None,
                       rest_port: int | None = None) -> list[str]:
    """Flags serving `models_config` (a path as the server sees it), with batching and
    Prometheus monitoring when their config paths are given. Ports are left out when None
    (the tensorflow/serving image's entrypoint already passes 8500 and 8501)."""
    flags = []
    if grpc_port is not None:
        flags.append(f"--port={grpc_port}")
    if rest_port is not None:
        flags.append(f"--rest_api_port={rest_port}")
    flags.append(f"--model_config_file={models_config}")
    if batching_config:
        flags += ["--enable_batching=true", f"--batching_parameters_file={batching_config}"]
    if monitoring_config:
        flags.append(f"--monitoring_config_file={monitoring_config}")
    return flags
