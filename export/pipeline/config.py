"""The bundle config (`configs/variants.toml`): its keys, their defaults, and the one-line errors
that name what is wrong before anything is created or locked."""
from __future__ import annotations

from pathlib import Path

from export.core.errors import UsageError
from export.pipeline import gate as gate_bundle
from export.training.settings import check_training_keys

_VARIANT_KEYS = {"name", "num_classes", "labels", "weights", "precisions", "description", "data", "train",
                 *gate_bundle.VARIANT_KEYS}
_TOP_KEYS = {"name", "version", "weights", "variants", "author", "license", "storage_uri", "card", *gate_bundle.TOP_KEYS}
#: Free-text keys (TFLite metadata) and their defaults.
_TEXT_KEYS = {"author": "resnet-deploy", "license": "unspecified"}


def load_config(path: str | Path, weights_override: str | None = None) -> dict:
    """Read and validate the bundle config (TOML); UsageError naming the file and key."""
    import re
    import tomllib
    path = Path(path)
    try:
        cfg = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path} is not valid TOML: {e}") from None
    unknown = set(cfg) - _TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    name = cfg.get("name", "resnet50-heads")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"{path}: name {name!r} must be letters, digits, '.', '_' or '-'")
    version = cfg.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise UsageError(f"{path}: version must be an integer >= 1, got {version!r}")
    text = {k: cfg.get(k, default) for k, default in _TEXT_KEYS.items()}
    for key, value in [*text.items(), *((f"description of {v.get('name', '?')!r}", v["description"])
                                        for v in cfg.get("variants") or [] if "description" in v)]:
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"{path}: {key} must be a non-empty string, got {value!r}")
    variants = cfg.get("variants") or []
    if not variants:
        raise UsageError(f"{path}: no [[variants]] listed")
    seen = set()
    for v in variants:
        bad = set(v) - _VARIANT_KEYS
        if bad:
            raise UsageError(f"{path}: variant {v.get('name', '?')!r} has unknown key(s) {sorted(bad)}; "
                             f"allowed: {sorted(_VARIANT_KEYS)}")
        if "name" not in v:
            raise UsageError(f"{path}: every [[variants]] entry needs a name")
        if v["name"] in seen:
            raise UsageError(f"{path}: variant {v['name']!r} is listed twice")
        seen.add(v["name"])
        v["weights"] = weights_override or v.get("weights") or cfg.get("weights", "random:0")
        check_training_keys(v, f"{path}: variant {v['name']!r}")
    from export.deploy.fetch import PLACEHOLDER_STORAGE_URI, parse_storage_uri
    storage_uri = cfg.get("storage_uri", PLACEHOLDER_STORAGE_URI)
    if not isinstance(storage_uri, str):
        raise UsageError(f"{path}: storage_uri must be a string such as 'gs://BUCKET/models', got {storage_uri!r}")
    parse_storage_uri(storage_uri, what=f"{path}: storage_uri")
    from export.bundle.card import check_config as check_card
    return {"name": name, "version": version, "variants": variants, "path": str(path), **text,
            "storage_uri": storage_uri, "gate": gate_bundle.check_config(cfg, path), "card": check_card(cfg.get("card"), path)}
