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
    ('author = ""\n[[variants]]\nname = "dense"\n', "author must be a non-empty string, got ''"),
    ('license = 3\n[[variants]]\nname = "dense"\n', "license must be a non-empty string, got 3"),
    ('[[variants]]\nname = "dense"\ndescription = ["x"]\n', "description of 'dense' must be a non-empty string"),
    ('licence = "MIT"\n[[variants]]\nname = "dense"\n', r"unknown key\(s\) \['licence'\]"),
])
def test_bad_card_keys(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        load_config(write(tmp_path, text))
