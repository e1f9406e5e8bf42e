"""Server-side batching for the local server, with TF Serving's semantics.

Concurrent requests for the same model version and signature are queued and merged into one
call of up to `max_batch_size` rows; a batch is run as soon as it is full, or when its oldest
request has waited `batch_timeout_micros` and a batch thread is free. Requests larger than
`max_batch_size` are refused (as TF Serving does without large-batch splitting), and a full
queue answers UNAVAILABLE at once. If a merged batch fails (one undecodable image, say), each
request in it is re-run alone, so a bad request never fails the good ones batched with it.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from serving.api.status import ServingStatus

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class BatchingOptions:
    """The batching.config values the local server uses (enabled=False: no batching)."""

    enabled: bool = True
    max_batch_size: int = 16
    batch_timeout_micros: int = 2000
    num_batch_threads: int = 4
    max_enqueued_batches: int = 64

    @classmethod
    def from_settings(cls, settings: dict[str, int], enabled: bool = True) -> BatchingOptions:
        return cls(enabled=enabled, **settings)


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


def batch_rows(inputs: dict[str, np.ndarray]) -> int:
    """The 0th dimension shared by every input (INVALID_ARGUMENT if they differ)."""
    sizes = {name: (a.shape[0] if a.ndim else None) for name, a in inputs.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ServingStatus.invalid(
            f"Batching Run() input tensors must have equal 0th-dimension size; got {sizes}")
    size = next(iter(sizes.values()))
    assert size is not None  # checked above
    return size


class Batcher:
    """Queue + batch threads in front of one `run(inputs) -> outputs` function."""

    def __init__(self, run: RunFn, options: BatchingOptions, name: str = "batcher") -> None:
        self._run = run
        self.options = options
        self.name = name
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._cv = threading.Condition()
        self._closed = False
        self.batches_run = 0
        self.rows_run = 0
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # the most recent, for stats and tests
        self._threads = []
        if options.enabled:
            for i in range(options.num_batch_threads):
                t = threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    # -- client side ------------------------------------------------------------------------
    def submit(self, inputs: dict[str, np.ndarray]) -> Future:
        """Queue one request; its Future gets the outputs for exactly its own rows."""
        rows = batch_rows(inputs)
        if not self.options.enabled:
            task = _Task(inputs, rows)
            self._execute([task])
            return task.future
        limit = self.options.max_batch_size
        if rows > limit:
            raise ServingStatus.invalid(f"Task size {rows} is larger than maximum input batch size {limit}")
        task = _Task(inputs, rows)
        with self._cv:
            if self._closed:
                raise ServingStatus.unavailable("the server is shutting down")
            if self._queued_rows + rows > limit * self.options.max_enqueued_batches:
                raise ServingStatus.unavailable("The batch scheduling queue to which this task was submitted is full")
            self._queue.append(task)
            self._queued_rows += rows
            self._cv.notify()
        return task.future

    def run(self, inputs: dict[str, np.ndarray], timeout: float | None = None) -> dict[str, np.ndarray]:
        return self.submit(inputs).result(timeout)

    def close(self) -> None:
        """Stop taking requests, finish every queued one, join the batch threads."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for t in self._threads:
            t.join()

    # -- batch threads ----------------------------------------------------------------------
    def _take_batch(self) -> list[_Task] | None:
        limit = self.options.max_batch_size
        timeout = self.options.batch_timeout_micros / 1e6
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return None  # closed and drained
            deadline = self._queue[0].enqueued + timeout
            while self._queue and not self._closed and self._queued_rows < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            batch, rows = [], 0
            while self._queue and rows + self._queue[0].rows <= limit:
                task = self._queue.popleft()
                rows += task.rows
                batch.append(task)
            self._queued_rows -= rows
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._execute(batch)

    def _execute(self, tasks: list[_Task]) -> None:
        rows = sum(t.rows for t in tasks)
        with self._cv:
            self.batches_run += 1
            self.rows_run += rows
        self.batch_sizes.append(rows)
        if len(tasks) == 1:
            self._run_alone(tasks[0])
            return
        try:
            merged = {name: np.concatenate([t.inputs[name] for t in tasks]) for name in tasks[0].inputs}
            outputs = self._run(merged)
        except Exception:  # noqa: BLE001 - isolate the request(s) at fault: each one alone
            for t in tasks:
                self._run_alone(t)
            return
        start = 0
        for t in tasks:
            t.future.set_result({k: v[start:start + t.rows] for k, v in outputs.items()})
            start += t.rows

    def _run_alone(self, task: _Task) -> None:
        try:
            task.future.set_result(self._run(task.inputs))
        except BaseException as e:  # noqa: BLE001 - delivered to the request's own handler
            task.future.set_exception(e)
