"""`make test` runs on 2 pytest-xdist workers with `--dist loadgroup`: the e2e tests of one group
must share a worker, or each worker builds its own copy of every session artifact (it did, silently:
pytest-xdist 3.8 writes the group where pytest 9.2 no longer reads it; tests/conftest.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit

TEST = '''
import os
import pytest

@pytest.mark.e2e
@pytest.mark.parametrize("i", range(4))
def test_{name}(i, request):
    with open(os.path.join(os.path.dirname(__file__), "ran.txt"), "a") as f:
        f.write(request.node.nodeid + " " + os.environ["PYTEST_XDIST_WORKER"] + "\\n")
'''


def test_e2e_tests_of_one_group_share_a_worker(tmp_path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nmarkers = ["unit", "integration", "e2e"]\n')
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(TEST.format(name=name))
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                        "-q", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ran = [line.split() for line in (tmp_path / "ran.txt").read_text().splitlines()]
    assert len(ran) == 8, r.stdout[-2000:]
    assert all(nodeid.endswith("@e2e-exports") for nodeid, _ in ran), ran
    assert len({worker for _, worker in ran}) == 1, ran


MODULE_FIXTURE_TEST = '''
import os
import pytest

pytestmark = pytest.mark.integration

def _log(what):
    with open(os.path.join(os.path.dirname(__file__), "ran.txt"), "a") as f:
        f.write(what + " " + os.environ["PYTEST_XDIST_WORKER"] + "\\n")

@pytest.fixture(scope="module")
def built():
    _log("built")
    return 1

@pytest.mark.parametrize("i", range(4))
def test_uses_it(i, built):
    _log("uses")

@pytest.mark.parametrize("i", range(4))
def test_does_not(i):
    _log("free")
'''


def test_tests_of_a_module_fixture_share_the_worker_that_built_it(tmp_path):
    """A module-scoped fixture is built once, on one worker, for every test of its module that uses it;
    the module's other tests are still handed out one at a time."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nmarkers = ["unit", "integration", "e2e"]\n')
    (tmp_path / "test_fixture.py").write_text(MODULE_FIXTURE_TEST)
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                        "-q", "-rA", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ran = [line.split() for line in (tmp_path / "ran.txt").read_text().splitlines()]
    assert [what for what, _ in ran].count("built") == 1, ran
    assert len({worker for what, worker in ran if what in ("built", "uses")}) == 1, ran
    assert [what for what, _ in ran].count("free") == 4, ran
    assert "test_uses_it[0]@module:" in r.stdout and "test_does_not[0]@" not in r.stdout, r.stdout[-3000:]
