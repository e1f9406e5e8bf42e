"""The load run's processes: a server that hangs without a word is given up on by the clock, and
a load run that times out is killed with its whole process group (its `serve` children too).
Real processes stand in for the server and the load run: they only print, hang or spawn."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from export.core.processes import run_group
from serving.tools.loadtest import wait_ready

pytestmark = pytest.mark.unit


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_silent_server_is_given_up_on_by_the_clock():
    """A server that prints one line and then hangs: the start-up wait ends at its timeout (it used
    to look at the clock only when a line came), and the server is killed."""
    server = _python("import time\nprint('loading ...', flush=True)\ntime.sleep(120)")
    outcome: list[BaseException | tuple[int, int]] = []

    def wait() -> None:
        try:
            outcome.append(wait_ready(server, "the local server (savedmodel)", timeout=2))
        except RuntimeError as e:
            outcome.append(e)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(60)
    try:
        assert not waiter.is_alive(), "the start-up wait ignored its timeout"
        (error,) = outcome
        assert isinstance(error, RuntimeError)
        assert str(error) == "the local server (savedmodel) did not start within 2 s: loading ..."
        assert server.poll() is not None, "the hung server was left running"
    finally:
        server.kill()
        server.wait()


def test_ready_line_gives_the_ports_and_an_exit_is_said():
    server = _python("print('ready: rest_port=8123 grpc_port=8124', flush=True)\nimport time\ntime.sleep(1)")
    try:
        assert wait_ready(server, "the local server", timeout=60) == (8123, 8124)
    finally:
        server.kill()
        server.wait()
    dead = _python("print('error: --model nope: not in the bundle', flush=True)")
    with pytest.raises(RuntimeError, match=r"^the local server did not start: error: --model nope: not in the bundle$"):
        wait_ready(dead, "the local server", timeout=60)


def test_a_timed_out_load_run_is_killed_with_its_children(tmp_path):
    """The load run starts a `serve` child and hangs; on the timeout both are gone."""
    child_pid = tmp_path / "child.pid"
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(child_pid)!r}, 'w').write(str(child.pid))\n"
            "time.sleep(120)\n")
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_group([sys.executable, "-c", code], timeout=5)
    assert time.monotonic() - started < 60
    assert child_pid.is_file(), "the load run never started its child"
    pid = int(child_pid.read_text())
    assert _gone(pid, 30), f"the load run's child {pid} outlived it"


def test_run_group_returns_what_the_command_printed():
    r = run_group([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                  timeout=60, env={**os.environ})
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
