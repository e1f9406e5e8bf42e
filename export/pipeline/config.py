"""The bundle config (`configs/variants.toml`): its schema (pydantic models: the keys, their types
and defaults) and the one-line errors that name the key, the value and what is allowed, before
anything is created or locked.

The schema checks shapes; what needs the project's knowledge is checked after it, by its owner:
the training keys (export.training.settings), the gate keys (export.pipeline.gate) and the
storage URI (export.deploy.fetch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from export.core.errors import UsageError
from export.deploy.fetch import PLACEHOLDER_STORAGE_URI
from export.pipeline import gate as gate_bundle
from export.training.settings import check_training_keys

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
#: A non-empty string (the TFLite metadata's free text).
Text = Annotated[StrictStr, Field(min_length=1, pattern=r"\S")]
#: export.core.registry.Precision's values (tests/export/test_config_card.py holds them equal).
PrecisionName = Literal["fp32", "fp16", "dynamic", "int8"]


class VariantEntry(BaseModel):
    """One [[variants]] table. `data` and `train` (training) and the gate's keys are typed Any
    here: their owners check them, with messages that know what a folder or a demo set is."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: StrictStr
    num_classes: Annotated[StrictInt, Field(ge=1)] | None = None
    labels: list[StrictStr] | None = None
    weights: StrictStr | None = None
    precisions: list[PrecisionName] | None = None
    description: Text | None = None
    data: Any = None
    train: Any = None
    calibration: Any = None
    calibration_count: Any = None
    eval_data: Any = None


class BundleConfig(BaseModel):
    """The whole file: the bundle's name and version, defaults for its variants, the TFLite
    metadata's free text, where it will be uploaded, and the accuracy gate's keys (Any: see above)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[StrictStr, Field(pattern=NAME_PATTERN)] = "resnet50-heads"
    version: Annotated[StrictInt, Field(ge=1)] = 1
    weights: StrictStr = "random:0"
    variants: Annotated[list[VariantEntry], Field(min_length=1)]
    author: Text = "resnet-deploy"
    license: Text = "unspecified"
    storage_uri: StrictStr = PLACEHOLDER_STORAGE_URI
    max_accuracy_drop: Any = None
    on_accuracy_fail: Any = None
    calibration_count: Any = None
    card: Any = None  # MODEL_CARD.md's human parts: export.bundle.card checks them


#: What a key holds, said after pydantic's own words where they alone would not help.
_EXPECTED = {"name": "letters, digits, '.', '_' or '-'", "storage_uri": "a string such as 'gs://BUCKET/models'",
             "weights": "imagenet | random[:SEED] | FILE.weights.h5 | FILE.keras",
             "variants": "at least one [[variants]] table with a name"}


def schema_error(path: str | Path, raw: dict[str, Any], error: ValidationError) -> str:
    """The first of pydantic's errors as one line: `FILE: [variant 'x': ]KEY = VALUE: what is wrong`
    (pydantic's words name the allowed values of a choice; a few keys add what they expect), or
    `unknown key 'k'; allowed: ...` listing the known keys."""
    first = error.errors()[0]
    loc: list[Any] = list(first["loc"])
    where, fields = "", BundleConfig.model_fields
    if loc[:1] == ["variants"] and len(loc) > 2 and isinstance(loc[1], int):
        entry = raw["variants"][loc[1]]
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"variant {name!r}: " if isinstance(name, str) else f"variants[{loc[1]}]: "
        fields, loc = VariantEntry.model_fields, loc[2:]
    key = ".".join(str(part) for part in loc)
    expected = _EXPECTED.get(str(loc[0])) if loc and not where else None
    if first["type"] == "extra_forbidden":
        return f"{path}: {where}unknown key {key!r}; allowed: {', '.join(sorted(fields))}"
    if first["type"] == "missing":
        return f"{path}: {where}{key} is required" + (f" ({expected})" if expected else "")
    what = first["msg"][0].lower() + first["msg"][1:]
    hint = f"; expected {expected}" if expected else ""
    return f"{path}: {where}{key} = {first['input']!r}: {what}{hint}"


def load_config(path: str | Path, weights_override: str | None = None) -> dict:
    """Read and validate the bundle config (TOML); UsageError naming the file, the key, the value
    and what is allowed. Returns the file's tables (keys as written) with the defaults filled in."""
    import tomllib
    path = Path(path)
    try:
        cfg = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path} is not valid TOML: {e}") from None
    try:
        checked = BundleConfig.model_validate(cfg)
    except ValidationError as e:
        raise UsageError(schema_error(path, cfg, e)) from None
    variants = cfg["variants"]
    seen = set()
    for v in variants:
        if v["name"] in seen:
            raise UsageError(f"{path}: variant {v['name']!r} is listed twice")
        seen.add(v["name"])
        v["weights"] = weights_override or v.get("weights") or checked.weights
        check_training_keys(v, f"{path}: variant {v['name']!r}")
    from export.bundle.card import check_config as check_card
    from export.deploy.fetch import parse_storage_uri
    parse_storage_uri(checked.storage_uri, what=f"{path}: storage_uri")
    return {"name": checked.name, "version": checked.version, "variants": variants,
            "path": str(path), "author": checked.author, "license": checked.license,
            "storage_uri": checked.storage_uri,
            "gate": gate_bundle.check_config(cfg, path), "card": check_card(cfg.get("card"), path)}
