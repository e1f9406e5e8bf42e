"""Small module-level functions for the worker-pool tests (a task names its function by import path)."""
from __future__ import annotations

import os
import time


def pid_after(seconds: float = 0.0, tag: str = "") -> dict:
    """Sleep, then say which process ran (and when), so tests can see overlap and isolation."""
    start = time.time()
    time.sleep(seconds)
    return {"pid": os.getpid(), "tag": tag, "start": start, "end": time.time()}


def add(a: int, b: int = 0, previous: dict | None = None) -> int:
    return a + b + (previous["value"] if previous else 0)


def value(v: int) -> dict:
    return {"value": v}


def fail(message: str) -> None:
    from export.core.errors import ExportError
    raise ExportError(message)


def crash(code: int) -> None:
    print("converter says: segfault ahead", flush=True)
    os._exit(code)


def orphan_check(seconds: float, marker: str) -> None:
    """Say it started (`marker`.started, holding its pid), run `seconds`, then write `marker`: a
    task whose pool died must never get there."""
    with open(marker + ".started", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    with open(marker, "w") as f:
        f.write("still running after the pool died")


class ConverterFailed(Exception):
    """An exception like many libraries raise: its __init__ takes other arguments than its message,
    so pickle cannot rebuild it from its args in another process."""

    def __init__(self, path: str, code: int) -> None:
        super().__init__(f"converter failed on {path} with code {code}")
        self.path, self.code = path, code


def fail_with_args(path: str, code: int) -> None:
    raise ConverterFailed(path, code)


def rendezvous(directory: str, tag: str, peers: int, timeout: float = 60.0) -> dict:
    """Say this task started (a file in `directory`), then wait until `peers` tasks have started:
    two tasks meet only if they run at the same time. `met` is False after `timeout` seconds alone."""
    from pathlib import Path
    d = Path(directory)
    (d / f"started-{tag}").write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while len(list(d.glob("started-*"))) < peers:
        if time.monotonic() > deadline:
            return {"pid": os.getpid(), "tag": tag, "met": False}
        time.sleep(0.02)
    return {"pid": os.getpid(), "tag": tag, "met": True}


def already_imported(names: list[str], env: str) -> dict:
    """Which of `names` were imported before this task ran, the environment variable `env`, and the
    working directory."""
    import sys
    return {"imported": [n for n in names if n in sys.modules], "env": os.environ.get(env), "cwd": os.getcwd()}


def spin(seconds: float) -> None:
    """Burn `seconds` of CPU."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def refaults(mb: int) -> dict:
    """Minor page faults while filling an `mb` MB buffer a second time, after the first one was freed:
    about mb * 256 where malloc handed the first back to the kernel (a large buffer, by default)."""
    import resource

    import numpy as np
    np.ones(mb << 17).fill(2.0)  # allocated, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(mb << 17).fill(2.0)
    return {"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "pages": mb << 8}
