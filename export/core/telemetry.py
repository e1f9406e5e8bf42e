"""OpenVINO's usage telemetry, off unless the user opted in.

OpenVINO's converter (`openvino.convert_model`, set up by `import openvino` itself) and NNCF send
Google Analytics events through `openvino_telemetry` whenever no consent file exists
(~/intel/openvino_telemetry): "no file" counts as consent for tools that show no opt-in dialog, which
both are. Each event is sent from a new multiprocessing process that opens a TLS context and waits up
to 3 s for the network. In `make export` that was ~370 processes, ~120 per OpenVINO task: ~35 CPU s of
certificate loading and seconds of waiting per task, on machines that often have no route out, for data
a deployment tool's users did not agree to send.

`decline_unless_opted_in()` makes "no consent file" mean "declined" in this process. A consent file the
user wrote with OpenVINO's own `opt_in_out --opt_in` (or `--opt_out`) is still obeyed. It must run before
the first `import openvino` or `import nncf` of a process (both read the consent when imported; the
import alone wrote ~/intel/stats and a client id file): the project imports OpenVINO through
`import_openvino()`, which calls it first.
"""
from __future__ import annotations

from typing import Any

_DONE = False


def decline_unless_opted_in() -> None:
    """Make openvino_telemetry treat a missing consent file as declined, in this process (idempotent;
    nothing happens where openvino_telemetry is not installed)."""
    global _DONE
    if _DONE:
        return
    try:
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:
        _DONE = True
        return
    checker = opt_in_checker.OptInChecker
    result = opt_in_checker.ConsentCheckResult
    check = checker.check

    def check_without_default_consent(self, enable_opt_in_dialog, disable_in_ci=False):
        found = check(self, enable_opt_in_dialog, disable_in_ci)
        return result.DECLINED if found == result.NO_FILE else found

    checker.check = check_without_default_consent
    _DONE = True


def import_openvino() -> Any:
    """The `openvino` module, imported after decline_unless_opted_in (the project's one way to import it)."""
    decline_unless_opted_in()
    import openvino
    return openvino
