"""`--cpu-durations=N` (tests/cpu_durations.py) ranks tests by the CPU they used, their own and their
waited-for child processes', from setup to teardown, on one process or gathered from xdist workers."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

TEST = '''
import subprocess
import sys
import time

import pytest


def _spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.fixture
def costly_setup():
    _spin(0.6)


def test_spins():
    _spin(0.4)


def test_sleeps():
    time.sleep(0.8)


def test_child_spins():
    subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.5\\n"
                    "while time.process_time() < end: pass"], check=True)


def test_setup_spins(costly_setup):
    pass


def test_fails():
    _spin(0.2)
    assert False
'''


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (tmp_path / "test_cpu.py").write_text(TEST)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.cpu_durations", "-p", "no:cacheprovider",
                           "-q", *args, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def _rows(stdout: str) -> dict[str, tuple[float, float]]:
    """test name -> (CPU s, wall s) from the CPU durations section."""
    section = stdout.split("CPU durations (", 1)[1]
    return {m[3]: (float(m[1]), float(m[2]))
            for m in re.finditer(r"^\s+([\d.]+)\s+([\d.]+)\s+\S+::(\w+)$", section, re.MULTILINE)}


def test_tests_are_ranked_by_their_cpu_not_their_wall_time(tmp_path):
    r = _run(tmp_path, "--cpu-durations=0")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]  # test_fails failed, and is listed too
    rows = _rows(r.stdout)
    assert set(rows) == {"test_spins", "test_sleeps", "test_child_spins", "test_setup_spins", "test_fails"}, r.stdout
    assert re.search(r"=+ all CPU durations \(\d+ CPU s over 5 tests\) =+", r.stdout), r.stdout
    cpu = {name: c for name, (c, _) in rows.items()}
    assert 0.55 <= cpu["test_setup_spins"] < 1.0  # a fixture's setup counts for the test that asked for it
    assert 0.45 <= cpu["test_child_spins"] < 1.5  # the child process it waited for (and its start-up)
    assert 0.35 <= cpu["test_spins"] < 0.6
    assert 0.15 <= cpu["test_fails"] < 0.4
    assert cpu["test_sleeps"] < 0.1 and rows["test_sleeps"][1] >= 0.8  # wall time without CPU
    assert list(rows)[-1] == "test_sleeps"  # listed by CPU, most first


def test_xdist_workers_measure_and_the_controller_lists_the_top_n(tmp_path):
    r = _run(tmp_path, "-n", "2", "--cpu-durations=2")
    assert re.search(r"=+ top 2 CPU durations \(\d+ CPU s over 5 tests\) =+", r.stdout), r.stdout
    assert list(_rows(r.stdout)) == ["test_setup_spins", "test_child_spins"], r.stdout
    assert r.stdout.count("CPU durations") == 1  # the controller prints, the workers do not


def test_off_by_default(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 1 and "CPU durations" not in r.stdout, r.stdout
