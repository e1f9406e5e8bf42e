"""A small process pool for `make export`: tasks with dependencies, each in a fresh Python process,
as many at once as there are cores and as the memory budget allows.

Each task names a module-level function (`"module:function"`) and its keyword arguments; it runs
in a fresh process, so TensorFlow's thread pools and heap never outlive it and the memory a converter
leaves behind is returned to the system. On Linux that process is forked from a fork server that
imported TensorFlow once (export.pipeline.forkserver): a task no longer pays ~4 CPU s to import it.
Elsewhere, or with RESNET_DEPLOY_FORKSERVER=0, each task is a new interpreter
(`python -m export.pipeline.workers`). The pool reports
what every task cost (wall and CPU seconds, its own peak RSS) and samples the summed RSS of all
its processes, so `make export` can say what it used. A failing task stops the others and its
exception is raised in the parent (export.core.errors classes keep their class and message).
"""
from __future__ import annotations

import importlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.core import processes
from export.core.errors import ExportError
from export.pipeline.forkserver import Forked, context, count_forked_cpu

#: Seconds between two samples of the pool's total RSS.
SAMPLE_EVERY_S = 0.2
#: PSS (smaps_rollup walks every mapping of a ~6 GB TensorFlow process) is read once every this
#: many samples: read every time it cost the parent ~25 % of a core, taken from the export.
PSS_EVERY = 10
#: The pool's pid, given to each task so that it can tell whether its parent already died.
PARENT_ENV = "RESNET_DEPLOY_POOL_PARENT"
#: glibc's malloc in the tasks (read at a process's start; a GLIBC_TUNABLES of the caller's own wins):
#: keep freed buffers up to 512 MB in the heap instead of mapping each large tensor buffer and
#: unmapping it again, so that the kernel does not zero the same pages on every inference. Measured on
#: the end-to-end parity's six tasks (2-core EPYC): minor page faults 5.8 M -> 2.4 M, system time 16.5
#: -> 10.2 s, wall 93.8 -> 88.2 s; each task's peak RSS ~10-15 % higher. The top pad is for the training
#: tasks (export.core.processes.keep_freed_buffers: the head's fit 36 -> 24 s).
MALLOC_TUNABLES = (f"glibc.malloc.mmap_threshold={processes.MMAP_THRESHOLD}:"
                   f"glibc.malloc.trim_threshold={processes.TRIM_THRESHOLD}:glibc.malloc.top_pad={processes.TOP_PAD}")


def malloc_env() -> dict[str, str]:
    """{"GLIBC_TUNABLES": MALLOC_TUNABLES}, unless the caller set GLIBC_TUNABLES (then theirs is kept)."""
    return {} if "GLIBC_TUNABLES" in os.environ else {"GLIBC_TUNABLES": MALLOC_TUNABLES}


@dataclass
class Task:
    """One unit of work: `fn(**kwargs)` in a fresh process once every task in `after` is done.

    `memory_gb` is the peak this task is expected to reach (measured: see export.pipeline.run); the
    pool starts a task only while the estimates of the running ones plus its own fit the budget.
    `inputs` names earlier tasks whose results are passed in as `kwargs[name] = result`.
    """

    key: str
    fn: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    memory_gb: float = 1.0
    inputs: dict[str, str] = field(default_factory=dict)   # kwarg name -> task key
    label: str = ""


@dataclass
class TaskCost:
    """What one task took: wall and CPU seconds (user + system, its threads and children) and
    its own peak resident set (VmHWM)."""

    key: str
    started_s: float
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


@dataclass
class PoolReport:
    """The pool's results and costs: per task, and the peak of all its processes' RSS summed."""

    results: dict[str, Any]
    costs: dict[str, TaskCost]
    wall_s: float
    cpu_s: float
    peak_total_rss_mb: float
    workers: int
    memory_budget_gb: float
    peak_total_pss_mb: float = 0.0
    rss_at_peak: dict[str, float] = field(default_factory=dict)


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def threads_per_task(workers: int) -> int:
    """Intra-op threads for each task, so that the workers together use every core once."""
    return max(1, default_workers() // max(1, workers))


def run_tasks(tasks: list[Task], *, workers: int | None = None, memory_budget_gb: float = 6.0,
              on_start: Callable[[Task], None] | None = None,
              on_done: Callable[[Task, TaskCost], None] | None = None,
              env: dict[str, str] | None = None) -> PoolReport:
    """Run `tasks` respecting `after`, at most `workers` at once and within `memory_budget_gb`
    (a task larger than the budget still runs, alone). Returns every result and cost; raises
    the first failure after stopping the tasks still running.

    concurrent.futures runs and waits for the tasks (one thread per running task, each waiting
    on its process); what is ours is which task may start next (`_startable`: dependencies met,
    a worker free, the memory estimates within the budget)."""
    workers = workers or default_workers()
    by_key = {t.key: t for t in tasks}
    for t in tasks:
        missing = [d for d in (*t.after, *t.inputs.values()) if d not in by_key]
        if missing:
            raise ValueError(f"task {t.key!r} waits for unknown task(s) {missing}")
    pending = list(tasks)
    running: dict[Future, Task] = {}
    results: dict[str, Any] = {}
    costs: dict[str, TaskCost] = {}
    sampler = _RssSampler()
    processes = _Processes(Path(tempfile.mkdtemp(prefix="resnet-deploy-pool.")), sampler, env or {})
    cpu0 = _cpu_self()
    sampler.start()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export-task") as threads:
        try:
            while pending or running:
                for t in _startable(pending, list(running.values()), results, workers, memory_budget_gb):
                    pending.remove(t)
                    kwargs = {**t.kwargs, **{name: results[key] for name, key in t.inputs.items()}}
                    running[threads.submit(processes.run, t, kwargs)] = t
                    if on_start:
                        on_start(t)
                if pending and not running:
                    waiting = {t.key: [d for d in t.after if d not in results] for t in pending}
                    raise ExportError(f"export tasks cannot start (unmet dependencies): {waiting}")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f].key):
                    t = running.pop(future)
                    results[t.key], costs[t.key] = future.result()  # a failed task raises its error here
                    if on_done:
                        on_done(t, costs[t.key])
        finally:
            processes.stop_all()
            sampler.stop()
            shutil.rmtree(processes.scratch, ignore_errors=True)
    wall = time.perf_counter() - processes.started
    cpu = _cpu_self() - cpu0 + sum(c.cpu_s for c in costs.values())
    return PoolReport(results, costs, round(wall, 2), round(cpu, 2), round(sampler.peak_mb, 1), workers,
                      memory_budget_gb, round(sampler.peak_pss_mb, 1), sampler.at_peak)


def _startable(pending: list[Task], running: list[Task], results: dict[str, Any], workers: int,
               budget_gb: float) -> list[Task]:
    """The pending tasks to start now, in order: their dependencies done, a worker free, and the
    memory estimates of the running ones plus theirs within the budget (one alone may exceed it)."""
    chosen: list[Task] = []
    for t in pending:
        if len(running) + len(chosen) >= workers:
            break
        ready = all(d in results for d in (*t.after, *t.inputs.values()))
        in_use = sum(r.memory_gb for r in (*running, *chosen))
        if ready and not ((running or chosen) and in_use + t.memory_gb > budget_gb):
            chosen.append(t)
    return chosen


class _Processes:
    """Each task's fresh Python process: started, waited for and read back from a worker thread;
    every one still running is stopped by stop_all (a failure elsewhere, an interrupt)."""

    def __init__(self, scratch: Path, sampler: _RssSampler, env: dict[str, str]) -> None:
        self.scratch, self.sampler, self.env = scratch, sampler, env
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen | Forked] = {}
        self._count = 0
        self._stopping = False

    def run(self, t: Task, kwargs: dict[str, Any]) -> tuple[Any, TaskCost]:
        """Run `t` in a forked task or a new interpreter (`python -m export.pipeline.workers JOB`); its
        result and cost, or its error raised."""
        with self._lock:
            self._count += 1
            job = self.scratch / f"{self._count}.{_safe(t.key)}"
        job.with_suffix(".in").write_bytes(pickle.dumps((t.fn, kwargs)))
        t0 = time.perf_counter()
        proc: subprocess.Popen | Forked
        server = context()
        if server is not None:
            proc = Forked(server, _child, job, {**os.environ, **self.env}, os.getcwd(), PARENT_ENV,
                          server_env=malloc_env())
        else:
            with open(job.with_suffix(".log"), "wb") as log:  # converters' chatter; its tail on a crash
                proc = subprocess.Popen([sys.executable, "-m", "export.pipeline.workers", str(job)],
                                        env={**os.environ, **malloc_env(), **self.env,
                                             PARENT_ENV: str(os.getpid())},
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        with self._lock:
            self._procs[t.key] = proc
            stopping = self._stopping
        if stopping:
            proc.terminate()
        self.sampler.add(proc.pid, t.key)
        try:
            returncode = proc.wait()
        finally:
            self.sampler.remove(proc.pid)
            with self._lock:
                self._procs.pop(t.key, None)
        outcome = _read_outcome(job, returncode, t)
        if isinstance(outcome, BaseException):
            raise outcome
        value, cpu_s, peak_mb = outcome
        if isinstance(proc, Forked):
            count_forked_cpu(cpu_s)
        return value, TaskCost(t.key, round(t0 - self.started, 2), round(time.perf_counter() - t0, 2),
                               round(cpu_s, 2), round(peak_mb, 1))

    def stop_all(self) -> None:
        """Terminate every task still running (then kill what has not exited after 30 s)."""
        with self._lock:
            self._stopping = True
            procs = list(self._procs.values())
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key)


def _cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def _read_outcome(job: Path, returncode: int, task: Task) -> tuple[Any, float, float] | BaseException:
    out = job.with_suffix(".out")
    try:
        status, payload, cpu_s, peak_mb = pickle.loads(out.read_bytes())
    except Exception:  # noqa: BLE001 -- missing, truncated, or an object that cannot be rebuilt here
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        hint = " (out of memory?)" if returncode in (-9, 137) else ""
        try:
            lines = [ln for ln in job.with_suffix(".log").read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        last = f"; its last line: {lines[-1].strip()[:200]}" if lines else ""
        return ExportError(f"export task {task.label or task.key} {how}{hint} without a result{last}")
    if status == "ok":
        return payload, cpu_s, peak_mb
    if isinstance(payload, BaseException):
        return payload
    return ExportError(f"export task {task.label or task.key} failed: {payload}")


class _RssSampler(threading.Thread):
    """Samples this process and its live task processes: the peak of their summed RSS (which
    counts the shared library pages both map, e.g. TensorFlow's, once per process), the peak of
    their summed PSS (shared pages split between the processes mapping them: what they really
    hold together), and who held what at the RSS peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self._pids: dict[int, str] = {os.getpid(): "pool (parent)"}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self.peak_mb = 0.0
        self.peak_pss_mb = 0.0
        self.at_peak: dict[str, float] = {}
        self._samples = 0

    def add(self, pid: int, label: str = "") -> None:
        with self._lock:
            self._pids[pid] = label or str(pid)

    def remove(self, pid: int) -> None:
        with self._lock:
            self._pids.pop(pid, None)

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_EVERY_S):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            pids = dict(self._pids)
        rss = {label: _status_kb(pid, "VmRSS:") / 1024 for pid, label in pids.items()}
        total = sum(rss.values())
        if total > self.peak_mb:
            self.peak_mb, self.at_peak = total, {k: round(v, 1) for k, v in rss.items()}
        # A process's PSS is at most its RSS, so while the RSS sum is not above the PSS peak no PSS read
        # can raise it: skipped, exactly (py-spy: these reads were ~19 s of the parent's CPU per export)
        if self._samples % PSS_EVERY == 0 and total > self.peak_pss_mb:
            self.peak_pss_mb = max(self.peak_pss_mb, sum(_pss_kb(pid) for pid in pids) / 1024)
        self._samples += 1

    def stop(self) -> None:
        self._samples = 0  # the last sample reads PSS too
        self.sample()
        self._stop_event.set()


def _status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this task when the pool's process dies (even by SIGKILL), so no task
    goes on writing into a staging directory nobody owns; exit at once if it is already gone."""
    import ctypes
    import signal
    parent = int(os.environ.get(PARENT_ENV, "0"))
    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the parent's finally-block still stops its tasks on a normal exit
    if parent and os.getppid() != parent:
        os._exit(1)


def _portable(e: BaseException) -> BaseException | str:
    """`e` when it survives a pickle round trip (the parent raises its class and message), else its
    one line `Type: message`: an exception whose __init__ takes other arguments than its message
    pickles but cannot be rebuilt, and the parent would raise a TypeError about pickling instead."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 -- whatever rebuilding it raises, its message still goes back
        from export.core.errors import first_line
        return f"{type(e).__name__}: {first_line(e)}"


def _child(job: str) -> int:
    """Entry point of a task process: run the pickled call, pickle back the result and costs."""
    import resource

    from export.core.processes import peak_rss_bytes
    _die_with_parent()
    path = Path(job)
    fn_name, kwargs = pickle.loads(path.with_suffix(".in").read_bytes())
    module, _, name = fn_name.partition(":")
    try:
        value = getattr(importlib.import_module(module), name)(**kwargs)
        status, payload = "ok", value
    except BaseException as e:  # noqa: BLE001 -- every failure goes back to the parent, which raises it
        status, payload = "error", _portable(e)
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    try:
        data = pickle.dumps((status, payload, cpu, peak_rss_bytes() / 2**20))
    except Exception as e:  # noqa: BLE001 -- an unpicklable result or exception still reports a message
        from export.core.errors import first_line
        what = payload if isinstance(payload, BaseException) else e
        data = pickle.dumps(("error", f"{type(what).__name__}: {first_line(what)}", cpu, peak_rss_bytes() / 2**20))
    tmp = path.with_suffix(".out.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path.with_suffix(".out"))
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
