"""One writer per output directory, and no leftovers from writers that died.

`exclusive_output(dir)` takes an advisory lock (fcntl.flock on `<dir>/.resnet-deploy.lock`) for a
run that writes into `dir` (`make export`'s dist/, `export --out`, a train runs root), so a second
run on the same directory refuses with one line naming the holder, or waits for it (wait=True).
Once the lock is held no other live run can own a staging directory there, so whatever an
earlier run left behind (killed with SIGKILL, power cut) is removed, with one line saying so.

The kernel drops a flock when its holder dies, however it dies: no pid files to go stale.
Leftovers are what export/core/atomic.py writes before a rename: directories `.<name>.<random>.partial`
(staged_dir, bundle staging, scratch SavedModels), `.<name>.old-<pid>` (replace_dir's swap)
and files `.<name>.<random>.tmp` (replacing). Nothing else is touched.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from export.core.errors import ExportError

LOCK_NAME = ".resnet-deploy.lock"
#: How deep below the locked directory leftovers are looked for: <out>/tfserving/<variant>/.1.x.partial
SWEEP_DEPTH = 3
_STALE_DIR = re.compile(r"^\..+\.(partial|old-\d+)$")
_STALE_FILE = re.compile(r"^\..+\.tmp$")

_held: dict[Path, int] = {}  # lock paths this process holds -> nesting depth (flock is per open file)
_held_guard = threading.Lock()
_held_fds: dict[Path, int] = {}  # lock path -> the descriptor that holds its flock


def _release_in_forked_child() -> None:
    """A child forked while a lock is held (multiprocessing, e.g. OpenVINO's converter sending
    telemetry) shares the flock'd open file: close it there, or the lock outlives its holder."""
    for fd in _held_fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_fds.clear()
    _held.clear()


os.register_at_fork(after_in_child=_release_in_forked_child)


class OutputBusy(ExportError):
    """Another live run holds the lock on the output directory."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _holder(lock_path: Path) -> str:
    """Who holds (or last held) the lock, from what it wrote there: `pid 123 (resnet-deploy bundle, since 10:02:03)`."""
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    host = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
    return f"pid {info.get('pid', '?')}{host} ({info.get('command', '?')}, since {info.get('started', '?')})"


def _record_holder(fd: int, command: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": datetime.now(UTC).astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


@contextlib.contextmanager
def exclusive_output(directory: str | os.PathLike, *, command: str = "resnet-deploy", wait: bool = False,
                     timeout: float | None = None, sweep: bool = True,
                     note: Callable[[str], None] = _stderr) -> Iterator[Path]:
    """Hold the advisory lock of `directory` (created if needed) for the block, then sweep leftovers.

    A busy lock raises OutputBusy naming its holder, or with wait=True prints one line and waits
    (up to `timeout` seconds, then OutputBusy). Re-entrant within a process: a nested call on the
    same directory (the CLI locking before it builds, the exporter locking again) just proceeds.
    """
    from export.core.atomic import ensure_writable_dir
    directory = ensure_writable_dir(directory)  # created if needed; its one-line errors otherwise
    lock_path = (directory / LOCK_NAME).resolve()
    with _held_guard:
        if lock_path in _held:
            _held[lock_path] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield directory
        finally:
            with _held_guard:
                _held[lock_path] -= 1
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise ExportError(f"cannot create the lock file {lock_path}: {e.strerror}; choose a writable --out") from None
    try:
        if not _try_lock(fd):
            holder = _holder(lock_path)
            if not wait:
                raise OutputBusy(f"{directory} is in use by {holder}; wait for it to finish, pass --wait, "
                                 "or choose another --out")
            note(f"waiting for {holder} to finish with {directory} ...")
            deadline = None if timeout is None else time.monotonic() + timeout
            while not _try_lock(fd):
                if deadline is not None and time.monotonic() > deadline:
                    raise OutputBusy(f"{directory} is still in use by {holder} after {timeout:g} s; "
                                     "try again later or choose another --out")
                time.sleep(0.2)
        previous = _holder(lock_path)
        _record_holder(fd, command)
        with _held_guard:
            _held[lock_path] = 1
            _held_fds[lock_path] = fd
        try:
            if sweep:
                removed = sweep_stale(directory)
                if removed:
                    note(describe_removed(removed, directory, previous))
            yield directory
        finally:
            with _held_guard:
                _held.pop(lock_path, None)
                _held_fds.pop(lock_path, None)
            # Unlock explicitly: closing only drops this descriptor, and the flock lives on while any
            # duplicate does. A child forked by a library's C code while the lock was held (no
            # Python at-fork hook runs there) keeps one until it execs or exits; a second run in
            # this process then found the directory "in use" by this very process.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holds_lock(directory: str | os.PathLike) -> bool:
    """True while this process holds exclusive_output(directory)."""
    return (Path(directory) / LOCK_NAME).resolve() in _held


def stale_entries(directory: str | os.PathLike, depth: int = SWEEP_DEPTH) -> list[Path]:
    """Leftovers of interrupted writes under `directory` (staging dirs, swapped-out dirs, temp files),
    down to `depth` levels; only meaningful while holding the directory's lock."""
    found: list[Path] = []

    def walk(d: Path, level: int) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if _STALE_DIR.match(e.name):
                    found.append(Path(e.path))
                elif level < depth:
                    walk(Path(e.path), level + 1)
            elif e.is_file(follow_symlinks=False) and _STALE_FILE.match(e.name):
                found.append(Path(e.path))

    walk(Path(directory), 1)
    return found


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def sweep_stale(directory: str | os.PathLike) -> list[tuple[Path, int]]:
    """Remove every stale entry under `directory`; returns (path, bytes) of each. Call with the lock held."""
    removed = []
    for p in stale_entries(directory):
        size = _size(p)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if not p.exists():
            removed.append((p, size))
    return removed


def describe_removed(removed: list[tuple[Path, int]], directory: Path, previous: str) -> str:
    """The one line that says what a sweep removed and whose it was."""
    total = sum(size for _, size in removed)
    names = ", ".join(f"{p.relative_to(directory).as_posix()} ({size / 1e6:.0f} MB)" if size >= 1e6
                      else p.relative_to(directory).as_posix() for p, size in removed[:4])
    more = f" and {len(removed) - 4} more" if len(removed) > 4 else ""
    what = "entry" if len(removed) == 1 else "entries"
    return (f"removed {len(removed)} stale staging {what} ({total / 1e6:.0f} MB) in {directory} left by an "
            f"interrupted run ({previous}, no longer running): {names}{more}")


@contextlib.contextmanager
def staged_output(final: str | os.PathLike, *, overwrite: bool = False, command: str = "resnet-deploy",
                  wait: bool = False, note: Callable[[str], None] = _stderr) -> Iterator[Path]:
    """Lock `final`'s parent, sweep it, and yield a staging directory that becomes `final` when the
    block succeeds (export/atomic.staged_dir): one call for a run directory or a version directory,
    e.g. `with staged_output(runs / "dense-001", command="resnet-deploy train") as tmp: ...`."""
    from export.core.atomic import staged_dir
    final = Path(final)
    with exclusive_output(final.parent, command=command, wait=wait, note=note), \
            staged_dir(final, overwrite=overwrite) as tmp:
        yield tmp
