"""The export pool's fork server: on Linux each task (export.pipeline.workers) is forked from a process
that imported TensorFlow once, instead of starting a new interpreter that imports it again (~4 CPU s).

It is multiprocessing's own "forkserver", set to preload FORK_PRELOAD. No TensorFlow op runs there,
so no thread pool or session is copied; each task sets its own threads before its first op. What this
module adds to multiprocessing: a task runs in the pool's working directory and environment as they
are now, writes its output into its job's log, does not run the caller's main script again, and does
not keep the server alive after the pool dies; the tasks' CPU is counted for the pool (they are the
server's children, not its); the server is stopped and reaped when the pool's process exits.
FORKSERVER_ENV="0" (or a platform without fork) turns it off: every task is then a new interpreter.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: "0" runs every task in a new interpreter instead of forking it from the fork server.
FORKSERVER_ENV = "RESNET_DEPLOY_FORKSERVER"
#: What the fork server imports once for every task it forks: TensorFlow (with Keras) is ~4 of the
#: ~4.5 CPU s a task process spent importing (measured: `python -c "import tensorflow"`, 2-core EPYC).
FORK_PRELOAD = ["export", "export.pipeline.quiet_tensorflow", "export.pipeline.workers"]  # TF without its banner

#: CPU seconds of the tasks this process had forked by the fork server (their own rusage): they are
#: the server's children, not this process's, so os.times() never counts them.
_FORKED_CPU = [0.0]
_FORKED_LOCK = threading.Lock()
#: One task is started at a time (each start patches multiprocessing's preparation data for itself).
_START_LOCK = threading.Lock()
_STOP_REGISTERED: list[bool] = []


def count_forked_cpu(seconds: float) -> None:
    """Add a forked task's CPU seconds (its own rusage, read back with its result) to cpu_seconds."""
    with _FORKED_LOCK:
        _FORKED_CPU[0] += seconds


def cpu_seconds() -> float:
    """CPU seconds of this process, of the subprocesses it waited for, and of the tasks the fork server
    forked for it: what a run that uses the pool costs (export.core.processes.cpu_seconds, plus those)."""
    from export.core.processes import cpu_seconds as own_and_waited
    with _FORKED_LOCK:
        return own_and_waited() + _FORKED_CPU[0]


def context():
    """multiprocessing's fork-server context, set to preload FORK_PRELOAD; None where there is none
    (not Linux) or FORKSERVER_ENV is "0". The server is stopped, and waited for, when this process
    exits (so `time make export` counts the tasks it forked)."""
    import atexit
    import multiprocessing
    if os.environ.get(FORKSERVER_ENV, "1") == "0" or "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(FORK_PRELOAD)
    if not _STOP_REGISTERED:
        atexit.register(_stop)
        _STOP_REGISTERED.append(True)
    return ctx


def _server() -> Any:
    """multiprocessing's fork-server state in this process (its fields are private: typeshed lacks them)."""
    from multiprocessing import forkserver
    return forkserver._forkserver


def _forget(server: Any) -> None:
    server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None


def _stop() -> None:
    """Close this process's end of the fork server's "alive" pipe (the server exits when it reads EOF)
    and reap it, so its CPU and its tasks' reach this process's own children times."""
    server = _server()
    pid, alive = server._forkserver_pid, server._forkserver_alive_fd
    if pid is None or alive is None:
        return
    _forget(server)
    os.close(alive)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class Forked:
    """A task forked from the fork server `ctx` (context()) that runs `entry(job)` (the pool's task entry
    point, a module-level function; its return is the exit code), with the subprocess.Popen methods the
    pool uses (pid, wait, terminate, kill, returncode: negative for a signal, as Popen's). `parent_env`
    names the variable through which the task learns the process it must outlive. `server_env`: variables
    the fork server is started with, if this start starts it (what a process reads at its own start, such
    as glibc's GLIBC_TUNABLES, is the server's in every task it forks)."""

    def __init__(self, ctx, entry: Callable[[str], int], job: Path, env: dict[str, str], cwd: str,
                 parent_env: str, server_env: dict[str, str] | None = None) -> None:
        from multiprocessing import spawn
        from unittest import mock
        self._process = ctx.Process(target=_forked_child, args=(entry, str(job), env, cwd, parent_env),
                                    name=f"export-task {job.name}")
        prepare = spawn.get_preparation_data

        def without_main(name):
            # multiprocessing would run the caller's main script again in the task (as __mp_main__), and a
            # script that calls the export without `if __name__ == "__main__":` would start it again there;
            # the task needs only export.pipeline.workers, which it imports by name
            data = prepare(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data
        with _START_LOCK, mock.patch.object(spawn, "get_preparation_data", without_main):
            added = {k: v for k, v in (server_env or {}).items() if k not in os.environ} \
                if _server()._forkserver_pid is None else {}
            os.environ.update(added)  # only the keys it adds, and only while the server starts
            try:
                self._process.start()
            finally:
                for key in added:
                    os.environ.pop(key, None)
        self.pid = self._process.pid

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(f"export task {self.pid}", timeout or 0)
        return self._process.exitcode

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()


def _forked_child(entry: Callable[[str], int], job: str, env: dict[str, str], cwd: str, parent_env: str) -> None:
    """A forked task's entry point: what `python -m export.pipeline.workers JOB` does, with stdout and
    stderr into the job's log, stdin from /dev/null, the pool's working directory (relative paths such
    as `--runs runs` mean what they mean to the pool) and environment (what is read at import,
    TensorFlow's included, was read already: the fork server has the pool's environment at its start), and
    its parent (the fork server, which exits with the pool) as the one to outlive."""
    log = os.open(Path(job).with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    _let_the_server_exit_with_the_pool()
    os.chdir(cwd)
    os.environ.clear()  # the pool's environment now, as a new interpreter would be given
    os.environ.update({**env, parent_env: str(os.getppid())})
    sys.exit(entry(job))


def _let_the_server_exit_with_the_pool() -> None:
    """Close this task's copy of the fork server's "alive" pipe. multiprocessing gives every process it
    forks the write end, so that it could fork in turn; the server exits when every write end is closed,
    and a task holding one would keep it (and, through PR_SET_PDEATHSIG, itself) alive after the pool
    was killed. A task that forks tasks of its own starts its own fork server."""
    server = _server()
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
    _forget(server)
