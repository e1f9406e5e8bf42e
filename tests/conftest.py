"""Shared fixtures: expensive things (built models, exported artifacts) are made once per session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("dense", "conv", "dropout")
_BUILT: dict = {}


def built_model(variant: str, weights: str = "random:0"):
    """A BuiltModel, built once per (variant, weights) for the whole session."""
    key = (variant, weights)
    if key not in _BUILT:
        from export.build import build
        from export.variants import get_variant
        _BUILT[key] = build(get_variant(variant), weights=weights)
    return _BUILT[key]


@pytest.fixture(scope="session")
def photos():
    from export import samples
    return samples.photos()


def run_cli(*args: str, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `resnet-deploy ARGS` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "export.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


_EXPORTED: dict = {}


def exported_artifacts(variant: str, root: Path):
    """(BuiltModel, out_dir, {key: Artifact}) with every format and precision of `variant`,
    exported once per session under `root` (pass tmp_path_factory's base temp dir)."""
    if variant not in _EXPORTED:
        from export.pipeline import export_artifacts, resolve_targets
        built = built_model(variant)
        out = root / f"exported-{variant}"
        arts = export_artifacts(built, out, resolve_targets("all"))
        _EXPORTED[variant] = (built, out, {a.key: a for a in arts})
    return _EXPORTED[variant]


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Call with a variant name: every artifact of that variant, exported once per session."""
    root = tmp_path_factory.mktemp("artifacts")
    return lambda variant: exported_artifacts(variant, root)
