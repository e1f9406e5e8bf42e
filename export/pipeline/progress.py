"""The progress display of `make export`: a line per worker task from its start, its time when done."""
from __future__ import annotations

from typing import Any


class TaskProgress:
    """A rich display of the worker tasks: a line per task from its start, its time when done."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console
        self.console = Console(stderr=True, quiet=quiet)
        self._progress: Any = None
        self._ids: dict[str, Any] = {}

    def __enter__(self):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=self.console, transient=False)
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._progress.__exit__(*exc)

    def start(self, key: str, label: str) -> None:
        self._ids[key] = self._progress.add_task(label, total=1)

    def done(self, key: str, label: str) -> None:
        self._progress.update(self._ids[key], completed=1, description=f"{label} [green]done")

    def run(self, key: str, label: str, fn, *args, **kwargs):
        self.start(key, label)
        result = fn(*args, **kwargs)
        self.done(key, label)
        return result


def timed_stage(progress, timings: list[dict], stage: str, label: str, fn, *args):
    """Run one whole-bundle step in this process, shown and timed like the worker tasks."""
    import time
    start = time.perf_counter()
    result = progress.run(stage, label, fn, *args)
    timings.append({"variant": "all", "stage": stage, "seconds": round(time.perf_counter() - start, 2)})
    return result
