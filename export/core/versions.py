"""Which versions of the tools did the work: one reader for artifacts, manifests, golden files,
the bench and training runs, each naming the packages it depends on."""
from __future__ import annotations

from collections.abc import Iterable

#: The converters and runtimes an artifact depends on (Artifact.tool_versions, manifest.json).
CONVERTERS = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "openvino", "nncf")


def tool_versions(packages: Iterable[str] = CONVERTERS) -> dict[str, str]:
    """{package: installed version} for each of `packages` that is installed (the others left out)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
