"""Two exports of the same model in two processes write byte-identical artifacts (every format and
precision, on the tiny model with ResNet50's preprocessing): what varies from run to run in a
process (capture order of variables, tf2onnx's constant names, the time in zip entries) must not
reach the files. The rest differs only as export/bundle/reproducibility.py records."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from export.bundle import reproducibility
from export.core.atomic import sha256_file
from tests.helpers import ROOT

pytestmark = pytest.mark.integration

EXPORT = """
import sys, pathlib
from tests.helpers import tiny_built
from export.pipeline.single import export_artifacts, resolve_targets
export_artifacts(tiny_built(resnet_preprocess=True), pathlib.Path(sys.argv[1]), resolve_targets("all"))
"""


def test_two_exports_in_two_processes_are_byte_identical(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    # each in its own process, both at once: ids, addresses, clocks and thread timings differ
    logs = [tmp_path / f"{out.name}.log" for out in outs]  # files, not pipes: neither can block on a full pipe
    with logs[0].open("w") as err_a, logs[1].open("w") as err_b:
        procs = [subprocess.Popen([sys.executable, "-c", EXPORT, str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=err) for out, err in zip(outs, (err_a, err_b), strict=True)]
        codes = [proc.wait(timeout=600) for proc in procs]
    for code, log in zip(codes, logs, strict=True):
        assert code == 0, log.read_text()[-3000:]
    a, b = ({p.relative_to(o).as_posix(): p for p in o.rglob("*") if p.is_file()} for o in outs)
    assert set(a) == set(b)
    differ = sorted(rel for rel in a if sha256_file(a[rel]) != sha256_file(b[rel]))
    assert differ == [".resnet-deploy.lock", "artifacts.json", "tfserving/tiny/1/fingerprint.pb"]
    artifacts = [rel for rel in a if rel.startswith(("tflite/", "onnx/", "tfserving/")) and rel not in differ]
    assert len([rel for rel in artifacts if rel.endswith((".tflite", ".onnx"))]) == 6
    for rel in ("artifacts.json", "tfserving/tiny/1/fingerprint.pb"):
        volatile = reproducibility.volatile_for(rel)
        assert volatile is not None and volatile.digest is not None
        assert volatile.digest(Path(a[rel])) == volatile.digest(Path(b[rel])), rel
