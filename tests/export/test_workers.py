"""The export worker pool: dependencies, results passed on, parallelism bounded by workers and by
the memory budget, costs recorded, failures raised with their class and message."""
from __future__ import annotations

import os

import pytest

from export.core.errors import ExportError
from export.pipeline.workers import Task, run_tasks
from tests.helpers import ROOT

pytestmark = pytest.mark.unit

ENV = {"PYTHONPATH": str(ROOT)}


def test_dependencies_and_results_passed_on():
    tasks = [Task("b", "tests.pool_tasks:add", {"a": 1, "b": 2}, inputs={"previous": "a"}),
             Task("a", "tests.pool_tasks:value", {"v": 10})]
    report = run_tasks(tasks, workers=2, env=ENV)
    assert report.results == {"a": {"value": 10}, "b": 13}
    assert set(report.costs) == {"a", "b"}
    assert report.costs["b"].started_s >= report.costs["a"].started_s + report.costs["a"].wall_s - 0.5
    assert all(c.peak_rss_mb > 1 and c.cpu_s > 0 for c in report.costs.values())
    assert report.peak_total_rss_mb > 1 and report.cpu_s > 0


def test_each_task_in_its_own_process_two_at_a_time():
    tasks = [Task(f"t{i}", "tests.pool_tasks:pid_after", {"seconds": 0.6, "tag": str(i)}) for i in range(3)]
    report = run_tasks(tasks, workers=2, memory_budget_gb=10, env=ENV)
    runs = sorted(report.results.values(), key=lambda r: r["start"])
    assert len({r["pid"] for r in runs} | {os.getpid()}) == 4
    assert runs[1]["start"] < runs[0]["end"], "two workers should overlap"
    assert runs[2]["start"] >= min(runs[0]["end"], runs[1]["end"]) - 0.05, "never three at once"


def test_memory_budget_serialises_large_tasks():
    tasks = [Task(f"t{i}", "tests.pool_tasks:pid_after", {"seconds": 0.4}, memory_gb=4) for i in range(2)]
    report = run_tasks(tasks, workers=2, memory_budget_gb=6, env=ENV)
    first, second = sorted(report.results.values(), key=lambda r: r["start"])
    assert second["start"] >= first["end"] - 0.05, "4 + 4 GB exceeds the 6 GB budget: one at a time"


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


def test_tasks_die_with_a_killed_pool(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    marker = tmp_path / "orphan-wrote-this"
    code = ("from export.pipeline.workers import Task, run_tasks\n"
            f"run_tasks([Task('t', 'tests.pool_tasks:orphan_check', {{'seconds': 3, 'marker': {str(marker)!r}}})])\n")
    pool = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **ENV})
    time.sleep(1.5)  # the task is running
    pool.send_signal(signal.SIGKILL)
    pool.wait(10)
    time.sleep(3)
    assert not marker.exists(), "the task outlived its killed pool"
