"""One writer per output directory (export/core/locks.py), with real processes: a second run refuses or
waits, a run killed with SIGKILL leaves staging that the next run removes with one line, and
nothing but staging leftovers is ever removed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from export.core.locks import LOCK_NAME, OutputBusy, exclusive_output, holds_lock, stale_entries
from tests.helpers import ROOT

pytestmark = pytest.mark.unit

#: A run that takes the lock, stages a bundle the way the pipeline does, says so, then waits for
#: a line on stdin (finish: publish) or to be killed.
WRITER = """
import sys, tempfile, pathlib
from export.core.atomic import staged_dir
from export.core.locks import exclusive_output
out = pathlib.Path(sys.argv[1])
with exclusive_output(out, command="resnet-deploy bundle --config test.toml"):
    with staged_dir(out / "demo-1", overwrite=True) as staging:
        (staging / "model.bin").write_bytes(b"x" * 2_000_000)
        print("staged", staging.name, flush=True)
        sys.stdin.readline()
print("published", flush=True)
"""


def start_writer(out: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("staged "), line + proc.stderr.read()
    return proc, line.split()[1]


@pytest.fixture
def writer(tmp_path):
    procs = []

    def start():
        proc, staging = start_writer(tmp_path / "dist")
        procs.append(proc)
        return proc, staging
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        for stream in (p.stdin, p.stdout, p.stderr):
            stream.close()


def test_second_run_refuses_naming_the_first(writer, tmp_path):
    proc, _ = writer()
    with pytest.raises(OutputBusy) as info:
        with exclusive_output(tmp_path / "dist", command="resnet-deploy bundle"):
            pass
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'dist'} is in use by pid {proc.pid} (resnet-deploy bundle --config "
                              "test.toml, since ")
    assert message.endswith("; wait for it to finish, pass --wait, or choose another --out")


def test_second_run_waits_for_the_first(writer, tmp_path):
    proc, staging = writer()
    lines: list[str] = []
    entered = threading.Event()

    def second():
        with exclusive_output(tmp_path / "dist", wait=True, note=lines.append):
            entered.set()

    t = threading.Thread(target=second)
    t.start()
    for _ in range(300):  # until it says it waits (bounded)
        if lines:
            break
        threading.Event().wait(0.1)
    assert not entered.is_set(), "the second run got in while the first held the lock"
    assert lines == [f"waiting for pid {proc.pid} (resnet-deploy bundle --config test.toml, since "
                     f"{lines[0].split('since ')[1].split(')')[0]}) to finish with {tmp_path / 'dist'} ..."]
    proc.stdin.write("publish\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "published\n"
    t.join(30)
    assert entered.is_set() and len(lines) == 1  # the first run cleaned up after itself: nothing to sweep
    assert (tmp_path / "dist" / "demo-1" / "model.bin").is_file() and not (tmp_path / "dist" / staging).exists()


def test_wait_gives_up_after_its_timeout(writer, tmp_path):
    writer()
    with pytest.raises(OutputBusy, match=r"is still in use by pid \d+ .* after 0.5 s; try again later"):
        with exclusive_output(tmp_path / "dist", wait=True, timeout=0.5, note=lambda _: None):
            pass


def test_killed_run_leaves_staging_that_the_next_run_removes(writer, tmp_path):
    out = tmp_path / "dist"
    proc, staging = writer()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert (out / staging / "model.bin").is_file(), "SIGKILL leaves the staging directory"
    lines: list[str] = []
    with exclusive_output(out, note=lines.append):
        assert holds_lock(out)
    assert not (out / staging).exists()
    assert lines == [f"removed 1 stale staging entry (2 MB) in {out} left by an interrupted run (pid {proc.pid} "
                     f"(resnet-deploy bundle --config test.toml, since {lines[0].split('since ')[1].split(')')[0]}), "
                     f"no longer running): {staging} (2 MB)"]
    assert not holds_lock(out)


def test_only_staging_leftovers_are_swept(tmp_path):
    out = tmp_path / "dist"
    keep = [out / "demo-1" / "manifest.json", out / ".env", out / ".cache" / "x.partial", out / "notes.tmp",
            out / "a" / "b" / "c" / ".deep.xyz.partial" / "f", out / ".hidden" / "data"]
    stale = [out / ".demo-1.k3j2.partial" / "f", out / "tfserving" / "dense" / ".1.abc.partial" / "saved_model.pb",
             out / ".savedmodel.x1.partial" / "sm", out / ".demo-1.old-4242" / "f", out / ".artifacts.json.q9.tmp",
             out / "onnx" / "dense" / ".model.onnx.z1.onnx.tmp"]
    for p in keep + stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    found = {p.relative_to(out).as_posix() for p in stale_entries(out)}
    assert found == {".demo-1.k3j2.partial", "tfserving/dense/.1.abc.partial", ".savedmodel.x1.partial",
                     ".demo-1.old-4242", ".artifacts.json.q9.tmp", "onnx/dense/.model.onnx.z1.onnx.tmp"}
    lines: list[str] = []
    with exclusive_output(out, note=lines.append):
        pass
    assert len(lines) == 1 and lines[0].startswith("removed 6 stale staging entries (0 MB) in ")
    assert lines[0].endswith("and 2 more")
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    assert (out / LOCK_NAME).is_file()


def test_nested_lock_in_one_process_is_reentrant(tmp_path):
    with exclusive_output(tmp_path, command="outer"):
        with exclusive_output(tmp_path, command="inner"):
            assert holds_lock(tmp_path)
        assert holds_lock(tmp_path)
    assert not holds_lock(tmp_path)


def test_unwritable_out_is_a_one_line_error(tmp_path):
    from export.core.errors import ExportError
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match=r"cannot create output directory .*/file/dist: Not a directory; "
                                          r"choose a writable --out"):
        with exclusive_output(blocker / "dist"):
            pass
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(ExportError, match="cannot create the lock file"):
            with exclusive_output(ro):
                pass


def test_staged_output_publishes_whole_or_nothing(tmp_path):
    from export.core.locks import staged_output
    runs = tmp_path / "runs"
    with staged_output(runs / "dense-001", command="resnet-deploy train") as tmp:
        (tmp / "model.keras").write_text("weights")
        assert holds_lock(runs) and not (runs / "dense-001").exists()
    assert (runs / "dense-001" / "model.keras").read_text() == "weights" and not holds_lock(runs)
    with pytest.raises(RuntimeError), staged_output(runs / "dense-002") as tmp:
        (tmp / "model.keras").write_text("half")
        raise RuntimeError("training crashed")
    assert sorted(p.name for p in runs.iterdir()) == [LOCK_NAME, "dense-001"]



def _linger(started, seconds: float) -> None:
    import time
    started.set()
    time.sleep(seconds)


def test_a_child_forked_while_locked_does_not_keep_the_lock(tmp_path):
    """Libraries fork helpers (OpenVINO's converter sends telemetry from a multiprocessing child that
    lives up to 3 s): the child must not hold the directory's flock after the parent lets go."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    with exclusive_output(tmp_path, command="first", sweep=False):
        child = ctx.Process(target=_linger, args=(started, 5.0), daemon=True)
        child.start()
        assert started.wait(10)  # the child runs (its at-fork hooks have run)
    try:
        assert child.is_alive()
        with exclusive_output(tmp_path, command="second", sweep=False):  # not OutputBusy
            assert holds_lock(tmp_path)
    finally:
        child.terminate()
        child.join(10)


def _descriptor_of(path: Path) -> int:
    """This process's descriptor open on `path` (read from /proc/self/fd)."""
    target = str(path.resolve())
    return next(int(fd) for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == target)


def test_a_child_still_holding_a_copy_of_the_descriptor_does_not_keep_the_lock(tmp_path):
    """A child created by C code (no Python at-fork hook runs there) keeps a copy of every
    descriptor until it execs or exits: 4 such children of the OpenVINO conversion still had the
    lock's when the next export in the process asked for it ("in use by pid <itself>"). Here a
    child is given the copy on purpose and kept alive; the lock must still be free once released."""
    with exclusive_output(tmp_path, command="first", sweep=False):
        fd = _descriptor_of(tmp_path / LOCK_NAME)
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], pass_fds=(fd,),
                                 stdin=subprocess.PIPE, text=True)
    try:
        assert child.poll() is None
        with exclusive_output(tmp_path, command="second", sweep=False):  # not OutputBusy
            assert holds_lock(tmp_path)
    finally:
        child.communicate("", timeout=30)
