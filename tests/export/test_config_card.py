"""The bundle config's TFLite metadata keys: top-level `author` and `license`, per-variant
`description`; defaults when absent, one-line errors naming the key when malformed."""
from __future__ import annotations

import pytest

from export.core.errors import UsageError
from export.pipeline.config import load_config

pytestmark = pytest.mark.unit


def write(tmp_path, text: str):
    path = tmp_path / "variants.toml"
    path.write_text(text)
    return path


def test_author_license_description_read_and_defaulted(tmp_path):
    cfg = load_config(write(tmp_path, 'author = "ACME ML"\nlicense = "Apache-2.0"\n'
                                      '[[variants]]\nname = "dense"\ndescription = "Cats and dogs"\n'
                                      '[[variants]]\nname = "conv"\n'))
    assert (cfg["author"], cfg["license"]) == ("ACME ML", "Apache-2.0")
    assert cfg["variants"][0]["description"] == "Cats and dogs" and "description" not in cfg["variants"][1]
    cfg = load_config(write(tmp_path, '[[variants]]\nname = "dense"\n'))
    assert (cfg["author"], cfg["license"]) == ("resnet-deploy", "unspecified")


@pytest.mark.parametrize("text, message", [
    ('author = ""\n[[variants]]\nname = "dense"\n', "author = '': string should have at least 1 character$"),
    ('license = 3\n[[variants]]\nname = "dense"\n', "license = 3: input should be a valid string$"),
    ('[[variants]]\nname = "dense"\ndescription = ["x"]\n',
     r"variant 'dense': description = \['x'\]: input should be a valid string$"),
    ('licence = "MIT"\n[[variants]]\nname = "dense"\n',
     "unknown key 'licence'; allowed: author, calibration_count, card, license, max_accuracy_drop, name, on_accuracy_fail, "
     "storage_uri, variants, version, weights$"),
])
def test_bad_card_keys(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("text, message", [
    ('[[variants]]\nname = "dense"\nprecisions = ["fp32", "int4"]\n',
     r"variant 'dense': precisions.1 = 'int4': input should be 'fp32', 'fp16', 'dynamic' or 'int8'$"),
    ('[[variants]]\nname = "dense"\nnum_clases = 3\n',
     r"variant 'dense': unknown key 'num_clases'; allowed: calibration, calibration_count, data, description, "
     r"eval_data, labels, name, num_classes, precisions, train, weights$"),
    ('[[variants]]\nname = "dense"\nnum_classes = 0\n',
     r"variant 'dense': num_classes = 0: input should be greater than or equal to 1$"),
    ('[[variants]]\nname = "dense"\nnum_classes = true\n',
     r"variant 'dense': num_classes = True: input should be a valid integer$"),
    ('version = "2"\n[[variants]]\nname = "dense"\n', r"version = '2': input should be a valid integer$"),
    ('name = "my bundle"\n[[variants]]\nname = "dense"\n',
     r"name = 'my bundle': string should match pattern .*; expected letters, digits, '\.', '_' or '-'$"),
    ('name = "x"\n', r"variants is required \(at least one \[\[variants\]\] table with a name\)$"),
    ('[[variants]]\nnum_classes = 3\n', r": variants\[0\]: name is required$"),
])
def test_the_schema_names_the_key_the_value_and_what_is_allowed(tmp_path, text, message):
    with pytest.raises(UsageError, match=message) as info:
        load_config(write(tmp_path, text))
    assert str(info.value).startswith(f"{tmp_path / 'variants.toml'}: ") and "\n" not in str(info.value)


def test_the_schema_lists_every_gate_key_and_precision():
    """The gate owns its keys and the registry its precisions; the schema must know each of them."""
    import typing

    from export.core.registry import Precision
    from export.pipeline import gate
    from export.pipeline.config import BundleConfig, PrecisionName, VariantEntry
    assert set(typing.get_args(PrecisionName)) == {p.value for p in Precision}
    assert gate.VARIANT_KEYS <= set(VariantEntry.model_fields)
    assert gate.TOP_KEYS == set(BundleConfig.model_fields) - {
        "name", "version", "weights", "variants", "author", "license", "storage_uri", "card"}  # card: export.bundle.card


def test_the_shipped_config_passes_the_schema():
    from tests.helpers import ROOT
    cfg = load_config(ROOT / "configs" / "variants.toml")
    assert [v["name"] for v in cfg["variants"]] == ["dense", "conv", "dropout"]
