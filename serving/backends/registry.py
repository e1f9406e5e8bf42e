"""The model registry of the local server: a bundle's models.config read as TF Serving reads it, one
servable per configured version, and lookups by name, version or label with TF Serving's error
codes and messages."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export.core.errors import BundleError
from export.core.registry import FORMATS
from export.deploy import tfserving as config_mod
from serving.api.status import ServingStatus
from serving.backends.servables import BACKENDS, RunnerServable, SavedModelServable, Servable


def artifact_path(bundle: Path, variant: str, backend: str, precision: str | None, version: int = 1) -> Path:
    """Where a bundle keeps `variant`'s artifact of format `backend` at `precision` (default: the
    format's first), as the format's exporter lays it out (export.core.registry)."""
    spec = FORMATS[backend]
    precision = precision or spec.precisions[0]
    if precision not in spec.precisions:
        raise BundleError(f"--backend {backend}:{precision}: {backend} has precisions {', '.join(spec.precisions)}")
    path = spec.target_path(bundle, variant, precision, version)
    if not path.exists():
        raise BundleError(f"--backend {backend}{':' + precision if precision != spec.precisions[0] else ''}: "
                          f"{path} is not in the bundle")
    return path


def backend_choice(backend: str, choice: str) -> tuple[str | None, str | None]:
    """The artifact precision and runner precision hint that `--backend BACKEND:CHOICE` names.

    Without precision hints CHOICE is the precision (default: the format's first). With them
    (OpenVINO: f32, bf16) CHOICE is a hint (`openvino:bf16`: the fp16 IR at the bf16 hint), a
    precision (`openvino:int8`: the int8 IR at the first hint) or both (`openvino:int8-bf16`).
    """
    spec = FORMATS[backend]
    if not spec.precision_hints:
        return choice or None, None
    if not choice:
        return None, spec.precision_hints[0]
    if choice in spec.precision_hints:
        return None, choice
    precision, _, hint = choice.partition("-")
    hint = hint or spec.precision_hints[0]
    if precision not in spec.precisions or hint not in spec.precision_hints:
        options = [*spec.precision_hints, *spec.precisions[1:],
                   *(f"{p}-{h}" for p in spec.precisions[1:] for h in spec.precision_hints[1:])]
        raise BundleError(f"--backend {backend}:{choice}: choose one of "
                          f"{', '.join(f'{backend}:{o}' for o in options)}")
    return precision, hint


@dataclass
class ModelEntry:
    name: str
    versions: dict[int, Servable]
    labels: dict[str, int]



def _aspect(bundle: Path, model: str) -> str:
    """The image contract aspect policy of `model` in the bundle's manifest ("stretch" if unrecorded)."""
    import json
    try:
        variants = json.loads((bundle / "manifest.json").read_text()).get("variants", {})
        return str(((variants.get(model) or {}).get("image") or {}).get("aspect", "stretch"))
    except (OSError, ValueError, AttributeError):
        return "stretch"

class ModelRegistry:
    """The served models, looked up as TF Serving's ServerCore does."""

    def __init__(self, models: list[ModelEntry]) -> None:
        self.models = {m.name: m for m in models}

    @classmethod
    def from_bundle(cls, bundle: str | Path, backend: str = "savedmodel",
                    only: list[str] | None = None) -> ModelRegistry:
        """Load every model (all configured versions) of the bundle directory `bundle`, or only
        the models named in `only` (BundleError for a name the bundle lacks)."""
        bundle = Path(bundle)
        backend, _, precision = backend.partition(":")
        if backend not in BACKENDS:
            raise BundleError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        models = []
        listed = bundle_models(bundle)
        unknown = sorted(set(only or []) - {m["name"] for m in listed})
        if unknown:
            raise BundleError(f"--model {', '.join(unknown)}: not in {bundle} (it has "
                              f"{', '.join(m['name'] for m in listed)})")
        if backend == "savedmodel":  # the one backend that runs TensorFlow: imported once the bundle checks out
            from export import import_tensorflow_quietly
            import_tensorflow_quietly()
        for m in listed:
            if only and m["name"] not in only:
                continue
            versions: dict[int, Servable] = {}
            for v in m["versions"]:
                if backend == "savedmodel":
                    versions[v] = SavedModelServable(m["name"], v, Path(m["local_path"]) / str(v))
                else:
                    file_precision, hint = backend_choice(backend, precision)
                    path = artifact_path(bundle, m["name"], backend, file_precision, v)
                    versions[v] = RunnerServable(m["name"], v, path, backend, hint, _aspect(bundle, m["name"]))
            models.append(ModelEntry(m["name"], versions, m["labels"]))
        return cls(models)

    def close(self) -> None:
        for m in self.models.values():
            for s in m.versions.values():
                s.close()

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names (latest version when neither version nor label)."""
        model = self.models.get(name)
        if label is not None:
            if model is None or label not in model.labels:
                raise ServingStatus.invalid(f"Unrecognized servable version label: {label}")
            version = model.labels[label]
        if model is None:
            raise ServingStatus.not_found(
                f"Servable not found for request: {'Latest' if version is None else 'Specific'}"
                f"({name}{'' if version is None else f', {version}'})")
        if version is None:
            return model.versions[max(model.versions)]
        if version not in model.versions:
            raise ServingStatus.not_found(f"Servable not found for request: Specific({name}, {version})")
        return model.versions[version]

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[int]:
        """The versions GetModelStatus reports (all AVAILABLE here), TF Serving's messages."""
        model = self.models.get(name)
        if label is not None:
            return [self.resolve(name, label=label).version]
        if model is None:
            raise ServingStatus.not_found(f"Could not find any versions of model {name}")
        if version is None:
            return sorted(model.versions)
        if version not in model.versions:
            raise ServingStatus.not_found(f"Could not find version {version} of model {name}")
        return [version]


def bundle_models(bundle: Path) -> list[dict]:
    """The bundle's models from its models.config (base paths mapped into `bundle`), or, without
    one, every `tfserving/<name>/<version>/` with a `stable` label on the newest version."""
    cfg = bundle / "models.config"
    if not bundle.is_dir():
        raise BundleError(f"{bundle} is not a bundle directory (no such directory)")
    if cfg.is_file():
        models = config_mod.served_models(cfg.read_text())
        for m in models:
            base = m["base_path"]
            prefix = config_mod.DEFAULT_BASE_PREFIX
            if base == prefix or base.startswith(prefix + "/"):
                local = bundle / base[len(prefix):].lstrip("/")
            else:
                local = bundle / base if not Path(base).is_absolute() else Path(base)
            m["local_path"] = str(local)
            if not m["versions"]:  # latest policy: the newest version on disk
                found = _versions_on_disk(local)
                m["versions"] = found[-1:]
            if not m["versions"]:
                raise BundleError(f"model {m['name']}: no version directory under {local}")
        return models
    root = bundle / "tfserving"
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    models = []
    for name in names:
        versions = _versions_on_disk(root / name)
        if versions:
            models.append({"name": name, "local_path": str(root / name), "versions": versions,
                           "labels": {"stable": versions[-1]}})
    if not models:
        raise BundleError(f"{bundle} has no models.config and no tfserving/<model>/<version>/ SavedModel")
    return models


def _versions_on_disk(path: Path) -> list[int]:
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit()
                  and (p / "saved_model.pb").is_file())
