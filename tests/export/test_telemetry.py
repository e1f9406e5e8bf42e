"""OpenVINO's usage telemetry (export.core.telemetry): without a consent file, OpenVINO's converter and
NNCF count "no file" as consent and send Google Analytics events, one new process each (~370 in a
`make export`); after decline_unless_opted_in they do not, and a user's own opt-in is still obeyed.
Each case runs in a fresh interpreter with its own HOME (where the consent file lives) and without the
CI variables under which both libraries stay silent anyway."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.integration

CHECK = """
import json, sys
from openvino_telemetry.utils.opt_in_checker import OptInChecker
before = OptInChecker().check(False, True).name
if sys.argv[1] == "decline":
    from export.core.telemetry import import_openvino
    import_openvino()  # how the project imports openvino (whose import starts the converter's telemetry)
after = OptInChecker().check(False, True).name
out = {"before": before, "after": after}
if sys.argv[1] == "decline":
    import nncf  # noqa: F401  (reads its consent when imported)
    from nncf.telemetry import telemetry
    from openvino.tools.ovc.telemetry_utils import init_ovc_telemetry
    out["nncf"] = telemetry._impl.consent
    out["ovc"] = init_ovc_telemetry().consent
print(json.dumps(out))
"""


def _run(home, mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")}
    r = subprocess.run([sys.executable, "-c", CHECK, mode], cwd=ROOT, env={**env, "HOME": str(home)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_without_a_consent_file_nothing_is_sent(tmp_path):
    plain = _run(tmp_path, "plain")
    assert plain == {"before": "NO_FILE", "after": "NO_FILE"}  # what OpenVINO's tools take as consent
    declined = _run(tmp_path, "decline")
    assert declined == {"before": "NO_FILE", "after": "DECLINED", "nncf": False, "ovc": False}
    # nothing written into the user's home: `import openvino` alone made ~/intel/{stats,openvino_ga_cid} before
    assert not (tmp_path / "intel").exists(), sorted(p.name for p in (tmp_path / "intel").iterdir())


def test_a_users_own_opt_in_is_obeyed(tmp_path):
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "openvino_telemetry").write_text("1")  # what `opt_in_out --opt_in` writes
    out = _run(tmp_path, "decline")
    assert out["before"] == out["after"] == "ACCEPTED" and out["nncf"] is True and out["ovc"] is True
