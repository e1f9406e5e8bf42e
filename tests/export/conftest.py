"""Fixtures for the parity and bundle tests: each variant's full export checked once per session,
and one real `resnet-deploy bundle` run shared by the bundle tests (see tests/conftest.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import README_VARIANT, run_cli

#: The bundle every `published` test reads: the dense head trained on the demo faces (so the run
#: trains, gates accuracy on the run's validation split and records the provenance), fp32 and fp16
#: (fp16 brings the OpenVINO IR, fp16 weights, and TFLite fp16).
TRAINED_CONFIG = """
name = "smoke"
version = 3
weights = "random:0"
[[variants]]
name = "dense"
data = "demo:lfw_subset"
precisions = ["fp32", "fp16"]
train = { max_per_class = 10, epochs = 3 }
"""


@pytest.fixture(scope="session")
def variant_parity(request, exported):
    """Call with a variant: (out_dir, golden, ParityReport) for every artifact of that variant,
    exported once (the session's shared export) and checked once. Conv's report is the one the
    README's `parity` command wrote (the same run_suite over the same artifacts)."""
    reports: dict = {}

    def get(variant: str):
        if variant not in reports:
            from export.quality import golden, parity
            from export.quality.report import ParityReport
            if variant == README_VARIANT:  # the README's run: its golden files and parity.json
                seq = request.getfixturevalue("readme_sequence")
                assert seq.export.returncode == 0, seq.export.stderr[-3000:]
                assert seq.parity is not None and seq.parity.returncode == 0, seq.parity and seq.parity.stdout[-3000:]
                out, ref = seq.out, golden.load(seq.out, variant)
                report = ParityReport.from_dict(json.loads((seq.out / "parity.json").read_text()))
            else:
                built, out, arts = exported(variant)
                if not golden.exists(out, variant):
                    golden.save(out, golden.make(built))
                ref = golden.load(out, variant)
                report = parity.run_suite(Path(out), list(arts.values()), {variant: ref},
                                          sources={variant: "golden (session export)"})
            reports[variant] = (Path(out), ref, report)
        return reports[variant]
    return get


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    """One real bundle made and signed by `resnet-deploy bundle --signing-key` (as `make export
    SIGNING_KEY=...` does) from TRAINED_CONFIG: (work, bundle root, config). Its training run is cached
    in work/runs (pass `--runs` there to reuse it); the key pair is work/signing-key{,.pub}.pem."""
    from tests.export import pki
    work = tmp_path_factory.mktemp("bundle")
    key, _, _ = pki.write_key_pair(work, "signing-key")
    cfg = work / "variants.toml"
    cfg.write_text(TRAINED_CONFIG)
    r = run_cli("bundle", "--config", str(cfg), "--out", str(work / "dist"), "--runs", str(work / "runs"),
                "--signing-key", str(key))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "smoke-3" in r.stdout and "tarball" in r.stdout
    assert "time: training " in r.stdout and "(dense trained), export " in r.stdout  # apart on the console
    return work, work / "dist" / "smoke-3", cfg
