"""Fixtures for the parity tests: each variant's full export checked once per session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def variant_parity(exported):
    """Call with a variant: (out_dir, golden, ParityReport) for every artifact of that variant,
    exported once (the session's shared export) and checked once."""
    reports: dict = {}

    def get(variant: str):
        if variant not in reports:
            from export.quality import golden, parity
            built, out, arts = exported(variant)
            if not golden.exists(out, variant):
                golden.save(out, golden.make(built))
            ref = golden.load(out, variant)
            report = parity.run_suite(Path(out), list(arts.values()), {variant: ref},
                                      sources={variant: "golden (session export)"})
            reports[variant] = (Path(out), ref, report)
        return reports[variant]
    return get
