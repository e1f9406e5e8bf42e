"""The README's own export-then-parity sequence, run verbatim as a new user would (issue: it used
to exit 2 with "no golden files"). The run is the session's `readme_sequence` fixture
(tests/conftest.py), whose artifacts and report are also the conv parity tests' export."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_readme_export_then_parity(readme_sequence):
    seq = readme_sequence
    assert seq.export.returncode == 0, seq.export.stderr
    assert (seq.out / "golden" / "conv" / "outputs.npz").is_file()
    assert seq.parity is not None and seq.parity.returncode == 0, seq.parity.stdout[-2000:] + seq.parity.stderr
    assert "| conv/" in seq.parity.stdout and (seq.out / "parity.md").is_file()
