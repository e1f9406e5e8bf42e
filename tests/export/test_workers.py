"""The export worker pool: dependencies, results passed on, parallelism bounded by workers and by
the memory budget, costs recorded, failures raised with their class and message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from export.core.errors import ExportError
from export.pipeline.workers import Task, run_tasks
from tests.helpers import ROOT

pytestmark = pytest.mark.unit

ENV = {"PYTHONPATH": str(ROOT)}


class Schedule:
    """The pool's own start and done callbacks, in order: which tasks it ran at the same time."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.running: set[str] = set()
        self.most_at_once = 0

    def start(self, task) -> None:
        self.events.append(("start", task.key))
        self.running.add(task.key)
        self.most_at_once = max(self.most_at_once, len(self.running))

    def done(self, task, cost) -> None:
        self.events.append(("done", task.key))
        self.running.discard(task.key)


def test_dependencies_and_results_passed_on():
    tasks = [Task("b", "tests.pool_tasks:add", {"a": 1, "b": 2}, inputs={"previous": "a"}),
             Task("a", "tests.pool_tasks:value", {"v": 10})]
    seen = Schedule()
    report = run_tasks(tasks, workers=2, env=ENV, on_start=seen.start, on_done=seen.done)
    assert report.results == {"a": {"value": 10}, "b": 13}
    assert seen.events == [("start", "a"), ("done", "a"), ("start", "b"), ("done", "b")]
    assert set(report.costs) == {"a", "b"}
    assert all(c.peak_rss_mb > 1 and c.cpu_s > 0 for c in report.costs.values())
    assert report.peak_total_rss_mb > 1 and report.cpu_s > 0


def test_each_task_in_its_own_process_two_at_a_time(tmp_path):
    """Each task waits until two have started: with two workers the first two meet (they ran at
    the same time, or the first would wait alone until its timeout), and the pool never had
    three running at once."""
    tasks = [Task(f"t{i}", "tests.pool_tasks:rendezvous", {"directory": str(tmp_path), "tag": str(i), "peers": 2})
             for i in range(3)]
    seen = Schedule()
    report = run_tasks(tasks, workers=2, memory_budget_gb=10, env=ENV, on_start=seen.start, on_done=seen.done)
    assert all(r["met"] for r in report.results.values()), report.results
    assert len({r["pid"] for r in report.results.values()} | {os.getpid()}) == 4
    assert seen.most_at_once == 2, seen.events
    assert seen.events[:2] == [("start", "t0"), ("start", "t1")]


def test_memory_budget_serialises_large_tasks():
    tasks = [Task(f"t{i}", "tests.pool_tasks:value", {"v": i}, memory_gb=4) for i in range(2)]
    seen = Schedule()
    run_tasks(tasks, workers=2, memory_budget_gb=6, env=ENV, on_start=seen.start, on_done=seen.done)
    assert seen.events == [("start", "t0"), ("done", "t0"), ("start", "t1"), ("done", "t1")], \
        "4 + 4 GB exceeds the 6 GB budget: one at a time"
    seen = Schedule()
    run_tasks(tasks, workers=2, memory_budget_gb=8, env=ENV, on_start=seen.start, on_done=seen.done)
    assert seen.events[:2] == [("start", "t0"), ("start", "t1")], "4 + 4 GB fits 8 GB: both at once"


def test_failure_is_raised_with_its_class_and_message():
    tasks = [Task("ok", "tests.pool_tasks:pid_after", {"seconds": 5}),
             Task("bad", "tests.pool_tasks:fail", {"message": "tflite conversion failed: boom"})]
    with pytest.raises(ExportError, match=r"^tflite conversion failed: boom$"):
        run_tasks(tasks, workers=2, env=ENV)


def test_a_killed_task_names_itself():
    with pytest.raises(ExportError, match=r"export task dense onnx exited with code 3 without a result; "
                                          r"its last line: converter says: segfault ahead$"):
        run_tasks([Task("x", "tests.pool_tasks:crash", {"code": 3}, label="dense onnx")], env=ENV)


def test_unknown_dependency_is_refused():
    with pytest.raises(ValueError, match="waits for unknown task"):
        run_tasks([Task("x", "tests.pool_tasks:value", {"v": 1}, after=("nope",))], env=ENV)


def test_an_exception_that_cannot_be_rebuilt_reaches_the_parent_as_its_one_line():
    """An exception whose __init__ takes other arguments than its message pickles in the task but
    cannot be rebuilt in the parent: the user sees the task's error, not a pickle TypeError."""
    with pytest.raises(ExportError, match=r"^export task dense onnx failed: ConverterFailed: converter failed on "
                                          r"model\.onnx with code 3$"):
        run_tasks([Task("x", "tests.pool_tasks:fail_with_args", {"path": "model.onnx", "code": 3},
                        label="dense onnx")], env=ENV)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _poll(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_tasks_die_with_a_killed_pool(tmp_path):
    """The pool is killed (SIGKILL) once its task has said it runs; the task must be gone soon
    after, long before its 60 s would end, and never write its marker."""
    import signal
    marker = tmp_path / "orphan-wrote-this"
    code = ("from export.pipeline.workers import Task, run_tasks\n"
            f"run_tasks([Task('t', 'tests.pool_tasks:orphan_check', {{'seconds': 60, 'marker': {str(marker)!r}}})])\n")
    pool = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **ENV})
    started = Path(str(marker) + ".started")
    try:
        assert _poll(lambda: started.is_file() and started.read_text(), 120), "the task never started"
        task_pid = int(started.read_text())
        assert _alive(task_pid)
    finally:
        pool.send_signal(signal.SIGKILL)
        pool.wait(10)
    assert _poll(lambda: not _alive(task_pid), 30), "the task outlived its killed pool"
    assert not marker.exists()


def test_the_openvino_task_imports_no_tensorflow():
    """The OpenVINO converter task reads the SavedModel with OpenVINO's own frontend and runs the IR
    with OpenVINO: what it imports must not pull in TensorFlow or Keras (~5 CPU s per process)."""
    code = ("import sys\n"
            "import export.pipeline.stages, export.model.built, export.formats.openvino, export.runtimes.openvino\n"
            "import export.quality.golden, export.quality.parity, export.pipeline.gate_stage, nncf\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout


def test_cpu_seconds_counts_the_subprocesses_waited_for():
    """The export's CPU record counts what its subprocesses burn (the end-to-end parity's pool ran
    uncounted before): a child spinning 0.5 s of CPU adds about that much."""

    from export.core.processes import cpu_seconds
    before = cpu_seconds()
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"],
                   check=True)
    assert cpu_seconds() - before >= 0.45


@pytest.mark.parametrize("forkserver", ["1", "0"])
def test_the_pool_counts_its_tasks_cpu_forked_or_not(monkeypatch, forkserver):
    """A task forked by the fork server is the server's child, not the pool's: forkserver.cpu_seconds
    still counts its CPU, and the export's record with it."""
    from export.pipeline import forkserver as server
    monkeypatch.setenv(server.FORKSERVER_ENV, forkserver)
    before = server.cpu_seconds()
    run_tasks([Task("t", "tests.pool_tasks:spin", {"seconds": 0.5})], env=ENV)
    assert server.cpu_seconds() - before >= 0.45


@pytest.mark.parametrize("forkserver", ["1", "0"])
def test_tasks_fork_from_a_server_that_imported_tensorflow_once(monkeypatch, tmp_path, forkserver):
    """A task forked from the fork server finds TensorFlow imported (it does not pay ~4 CPU s for it)
    and sees the pool's environment and working directory as they are now; with
    RESNET_DEPLOY_FORKSERVER=0 it is a new interpreter, which has imported nothing, with the same."""
    from export.pipeline import forkserver as server
    monkeypatch.setenv(server.FORKSERVER_ENV, forkserver)
    task = Task("t", "tests.pool_tasks:already_imported", {"names": ["tensorflow"], "env": "RESNET_DEPLOY_TEST_VALUE"})
    run_tasks([task], env=ENV)  # the fork server, if any, starts here
    monkeypatch.setenv("RESNET_DEPLOY_TEST_VALUE", f"set after the fork server started ({forkserver})")
    monkeypatch.chdir(tmp_path)
    result = run_tasks([task], env=ENV).results["t"]
    assert result["imported"] == (["tensorflow"] if forkserver == "1" else [])
    assert result["env"] == f"set after the fork server started ({forkserver})"
    assert result["cwd"] == str(tmp_path)


@pytest.mark.parametrize("forkserver", ["1", "0"])
def test_tasks_keep_freed_buffers_instead_of_faulting_them_in_again(monkeypatch, forkserver):
    """Tasks run with MALLOC_TUNABLES (or the caller's own GLIBC_TUNABLES): a 40 MB
    buffer freed and allocated again reuses the heap's pages (glibc's default maps and unmaps any buffer
    over 32 MB, so the kernel zeroes every page again)."""
    from export.pipeline import forkserver as server
    from export.pipeline.workers import MALLOC_TUNABLES
    monkeypatch.setenv(server.FORKSERVER_ENV, forkserver)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    tuned = run_tasks([Task("t", "tests.pool_tasks:refaults", {"mb": 40})], env=ENV).results["t"]
    plain = subprocess.run([sys.executable, "-c", "import json, tests.pool_tasks as t; print(json.dumps(t.refaults(40)))"],
                           cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120)
    untuned = json.loads(plain.stdout)  # glibc's default, which the tasks avoid
    assert untuned["faults"] >= 20, untuned  # every page again: 4 KB ones, or 2 MB ones with transparent huge pages
    assert tuned["faults"] * 4 < untuned["faults"], (tuned, untuned)
    assert "mmap_threshold" in MALLOC_TUNABLES


def _refaults_after_keep_freed_buffers(extra_env: dict[str, str]) -> dict:
    code = ("import json, tests.pool_tasks as t; from export.core.processes import keep_freed_buffers; "
            "print(json.dumps({'set': keep_freed_buffers(), **t.refaults(40)}))")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **ENV, **extra_env}, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_keep_freed_buffers_gives_a_running_process_the_tasks_malloc():
    """`resnet-deploy train` trains in the command's own process, which started with glibc's default
    malloc: keep_freed_buffers() sets the tasks' settings there (mallopt), so a 40 MB buffer freed
    and allocated again reuses the heap's pages; a caller's own GLIBC_TUNABLES is left as it is."""
    tuned = _refaults_after_keep_freed_buffers({})
    callers = _refaults_after_keep_freed_buffers({"GLIBC_TUNABLES": "glibc.malloc.arena_max=8"})
    assert tuned["set"] is True and callers["set"] is False
    assert callers["faults"] >= 20, callers  # glibc's default: every page again
    assert tuned["faults"] * 4 < callers["faults"], (tuned, callers)


def test_train_sets_the_malloc_before_it_trains(monkeypatch, tmp_path):
    """`train` calls keep_freed_buffers before TensorFlow is imported (at the top of cmd_train, so for
    --config and for --variant/--data/--out alike; run here with --config)."""
    import argparse

    from export.cli import train as cli_train
    from export.core import processes
    from export.core.errors import UsageError
    calls: list[str] = []
    monkeypatch.setattr(processes, "keep_freed_buffers", lambda: calls.append("malloc") or True)
    monkeypatch.setattr(cli_train, "import_tensorflow_quietly", lambda: calls.append("tensorflow"))
    config = tmp_path / "untrained.toml"
    config.write_text('name = "b"\nversion = 1\nweights = "random:0"\n[[variants]]\nname = "dense"\nnum_classes = 2\n')
    args = argparse.Namespace(config=str(config), weights=None, runs=str(tmp_path / "runs"), wait=False, json=False,
                              variant=None, data=None, out=None, val_data=None, num_classes=None)
    with pytest.raises(UsageError, match="lists no variant with `data`"):
        cli_train.cmd_train(args)
    assert calls == ["malloc", "tensorflow"]


def test_a_script_without_a_main_guard_can_run_the_pool(tmp_path):
    """The fork server's tasks do not run the caller's main script again (multiprocessing would, and a
    script calling the export without `if __name__ == "__main__":` would start it again in every task)."""
    script = tmp_path / "unguarded.py"
    script.write_text("from export.pipeline.workers import Task, run_tasks\n"
                      "print('script ran')\n"
                      "print(run_tasks([Task('t', 'tests.pool_tasks:value', {'v': 7})]).results)\n")
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, env={**os.environ, **ENV}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["script ran", "{'t': {'value': 7}}"]
    # the fork server imports TensorFlow quietly: its start-up banner (absl INFO lines on oneDNN and
    # CUDA) no longer opens every make export's console, twice
    assert "oneDNN" not in r.stderr and "absl" not in r.stderr and "cuda" not in r.stderr.lower(), r.stderr


def test_the_sampler_reads_pss_only_when_it_could_set_a_new_peak(monkeypatch):
    """PSS (smaps_rollup) is costly to read and never above RSS: while the RSS sum is at or below the PSS
    peak, a PSS read cannot raise the peak, and none is made."""
    from export.pipeline import workers
    rss = {"now": 0}
    reads: list[int] = []
    monkeypatch.setattr(workers, "_status_kb", lambda pid, field: rss["now"])
    monkeypatch.setattr(workers, "_pss_kb", lambda pid: reads.append(pid) or rss["now"] // 2)
    monkeypatch.setattr(workers, "PSS_EVERY", 1)
    sampler = workers._RssSampler()  # samples this process only (not started: sample() by hand)
    rss["now"] = 4096 * 1024  # 4 GiB of RSS, 2 GiB of PSS
    sampler.sample()
    assert len(reads) == 1 and sampler.peak_pss_mb == 2048 and sampler.peak_mb == 4096
    rss["now"] = 2048 * 1024  # RSS down to the PSS peak: its PSS cannot be higher
    sampler.sample()
    sampler.sample()
    assert len(reads) == 1 and sampler.peak_pss_mb == 2048
    rss["now"] = 6144 * 1024  # above it again: read, new peak
    sampler.sample()
    assert len(reads) == 2 and sampler.peak_pss_mb == 3072 and sampler.peak_mb == 6144


def _config() -> dict:
    from export.pipeline.config import load_config
    return load_config(ROOT / "configs" / "variants.toml")


def test_training_tasks_run_in_turn_and_the_trained_variants_are_exported_beside_them():
    """make export's tasks: dense trains first, alone on every core, and caches the backbone's maps for the
    conv heads (share_maps); conv, then dropout, train one thread each after it (training holds the runs'
    lock), while the variants already trained are exported beside them."""
    from export.pipeline.run import export_tasks
    from export.pipeline.single import resolve_targets
    cfg = _config()
    targets = {v["name"]: resolve_targets("all", v.get("precisions")) for v in cfg["variants"]}
    tasks = {t.key: t for t in export_tasks(cfg, ROOT, targets, threads=1, runs=ROOT / "runs")}
    assert [k for k in tasks if k.endswith(":train")] == ["dense:train", "conv:train", "dropout:train"]
    assert tasks["dense:train"].after == () and tasks["dense:train"].kwargs["alone"] is True
    assert tasks["conv:train"].after == ("dense:train",) and tasks["dropout:train"].after == ("conv:train",)
    assert [t.kwargs["share_maps"] for k, t in tasks.items() if k.endswith(":train")] == [True, False, False]
    for name in ("conv", "dropout"):
        assert tasks[f"{name}:train"].kwargs["alone"] is False
        assert tasks[f"{name}:train"].kwargs["variant"]["name"] == name
    assert {k: tasks[f"{k}:keras"].inputs for k in ("dense", "conv", "dropout")} == \
        {k: {"train": f"{k}:train"} for k in ("dense", "conv", "dropout")}

    # a variant without data can start at once, so the first training task no longer has the machine alone
    del cfg["variants"][0]["data"]  # dense untrained
    tasks = {t.key: t for t in export_tasks(cfg, ROOT, targets, threads=1, runs=ROOT / "runs")}
    assert [k for k in tasks if k.endswith(":train")] == ["conv:train", "dropout:train"]
    assert tasks["conv:train"].kwargs["alone"] is False and tasks["dense:keras"].inputs == {}
