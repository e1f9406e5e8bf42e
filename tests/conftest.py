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


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `resnet-deploy ARGS` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "export.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
