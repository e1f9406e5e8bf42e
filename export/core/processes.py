"""Processes: run a command in its own process group and, on a timeout or an interrupt, kill the
whole group (its own children too), not only the process that was started; and this process's
peak memory, read one way for the bench and the export's worker pool alike."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident set, bytes: VmHWM, which (unlike ru_maxrss, which keeps the
    parent's high-water mark across fork + exec) counts only this program; ru_maxrss where there
    is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of every child it has waited for (their own
    waited-for children included): what a run costs when part of it runs in subprocesses, such as the
    export's worker pool and the end-to-end parity's pool inside it."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


#: glibc's malloc for processes that run large tensors again and again (the export's tasks, `train`):
#: keep freed buffers up to MMAP_THRESHOLD in the heap, up to TRIM_THRESHOLD of free heap unreturned and
#: TOP_PAD more whenever the heap is trimmed or grown, instead of mapping each large tensor buffer and
#: unmapping it again, so that the kernel does not zero the same pages on every step. GLIBC_TUNABLES
#: (export.pipeline.workers) for new processes, keep_freed_buffers() for this one.
MMAP_THRESHOLD = 512 << 20
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 256 << 20
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt's parameters (malloc.h)


def keep_freed_buffers() -> bool:
    """MMAP_THRESHOLD, TRIM_THRESHOLD and TOP_PAD for this process, set now with glibc's mallopt (the
    GLIBC_TUNABLES the pool's tasks start with are read only at a process's start). Not where the
    caller set GLIBC_TUNABLES (theirs is kept) nor where the C library is not glibc. Measured on
    `resnet-deploy train` of the conv head (2-core EPYC): its fit 36.2 -> 23.5 s, system time
    15.1 -> 4.7 s, the same weights (the top pad does it: with the two thresholds alone, 36.5 s).
    Returns whether it was set."""
    if "GLIBC_TUNABLES" in os.environ:
        return False
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): its malloc is left as it is
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                mallopt(_M_TOP_PAD, TOP_PAD)])


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process in `proc`'s process group (it leads one: start_new_session=True)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_group(cmd: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
              cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)`, except that the command
    leads a new process group, and a timeout (TimeoutExpired) or an interrupt kills that whole group:
    a load test's servers do not stay up holding their ports after it was given up on."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        kill_group(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)  # reap it; the group's pipes close with its processes
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
