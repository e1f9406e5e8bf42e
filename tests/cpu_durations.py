"""`--cpu-durations=N`: the N tests that used the most CPU, beside pytest's `--durations` (wall time).

On 2 cores with 2 pytest-xdist workers the suite is CPU-bound, and a test's wall time says more about
what ran beside it than about its own cost: in one `make test` run the bench fixture took 169 s of wall
time and 132 CPU s, while the byte-identical bundle rerun took 134 s of wall time and 163 CPU s. What the
suite's wall time can lose is CPU, so this lists tests by CPU.

A test's CPU is measured per phase (setup, call, teardown) in the process that runs it: its own user +
system time (every thread of it, including a background thread that another test started) plus that of
the child processes it waited for (a `subprocess.run`, a pool's workers once joined). A process that is
never waited for (a daemon left running) is not counted, and a child is counted for the test during
which it is reaped, whichever test started it and whichever thread reaps it (Python's `subprocess`
reaps an abandoned child when the next `Popen` starts): in one `make test` run a 1.7 s unit test was
charged 24 CPU s, most likely an earlier test's child reaped while it ran. Under pytest-xdist each
worker measures its own tests and the controller lists them together. Loaded by tests/conftest.py
(`pytest_plugins`); a run without the option measures nothing.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: user_properties key prefix of a phase's CPU seconds (`cpu_s:setup`, `cpu_s:call`, `cpu_s:teardown`).
KEY = "cpu_s:"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("terminal reporting").addoption(
        "--cpu-durations", type=int, default=None, metavar="N",
        help="show the N tests that used the most CPU (own + waited-for child processes, setup to "
             "teardown); N=0 for all")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _measure(item: pytest.Item, phase: str) -> Iterator[None]:
    if item.config.getoption("cpu_durations") is None:
        yield
        return
    start = _cpu()
    yield  # the phase runs (an exception in it comes back through the hook machinery, not here)
    item.user_properties.append((KEY + phase, round(_cpu() - start, 3)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    yield from _measure(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield from _measure(item, "call")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield from _measure(item, "teardown")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("cpu_durations") is not None and not hasattr(config, "workerinput"):
        config.pluginmanager.register(CpuDurations(config.getoption("cpu_durations")), "cpu-durations")


class CpuDurations:
    """On the process that reports (the xdist controller, or the only process): sums each test's
    phases and prints the list at the end."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.totals: dict[str, list[float]] = {}  # nodeid -> [CPU s, wall s]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # a report carries the item's properties so far: the phase's own entry is the one under its name
        cpu = dict(report.user_properties).get(KEY + report.when)
        if cpu is None:
            return
        entry = self.totals.setdefault(report.nodeid, [0.0, 0.0])
        entry[0] += float(cpu)
        entry[1] += report.duration

    def pytest_terminal_summary(self, terminalreporter) -> None:
        ranked = sorted(self.totals.items(), key=lambda kv: -kv[1][0])
        shown = ranked if self.n == 0 else ranked[:self.n]
        everything = sum(cpu for cpu, _ in self.totals.values())
        terminalreporter.write_sep("=", f"{'all' if self.n == 0 else f'top {len(shown)}'} CPU durations "
                                        f"({everything:.0f} CPU s over {len(self.totals)} tests)")
        terminalreporter.write_line("    CPU s    wall s  test (setup to teardown; own + waited-for child processes)")
        for nodeid, (cpu, wall) in shown:
            terminalreporter.write_line(f"{cpu:9.2f} {wall:9.2f}  {nodeid}")
