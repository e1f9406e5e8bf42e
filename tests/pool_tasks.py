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
    """Run `seconds`, then write `marker`: a task whose pool died must never get there."""
    time.sleep(seconds)
    with open(marker, "w") as f:
        f.write("still running after the pool died")
