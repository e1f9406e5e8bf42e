"""The README's own export-then-parity sequence, run verbatim as a new user would (issue: it used
to exit 2 with "no golden files")."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.e2e


def readme_command(pattern: str) -> list[str]:
    """The README's command line matching `pattern`, as argv (comment dropped, CLI by module)."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if re.match(pattern, line):
            argv = shlex.split(line.split("#", 1)[0])
            assert argv[0] == ".venv/bin/resnet-deploy", line
            return [sys.executable, "-m", "export.cli", *argv[1:]]
    raise AssertionError(f"README.md has no line matching {pattern!r}")


def test_readme_export_then_parity(tmp_path):
    export = readme_command(r"\.venv/bin/resnet-deploy export --variant conv ")
    parity = readme_command(r"\.venv/bin/resnet-deploy parity --artifacts ")
    r = subprocess.run(export, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "artifacts" / "golden" / "conv" / "outputs.npz").is_file()
    r = subprocess.run(parity, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "| conv/" in r.stdout and (tmp_path / "artifacts" / "parity.md").is_file()
