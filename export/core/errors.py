"""Exceptions a user can see: each carries one line that says what was wrong and what to do.

The CLI prints `error: <message>` and exits 2 for any of these, with no traceback.
"""
from __future__ import annotations


class ResnetDeployError(Exception):
    """Base class of every user-facing error; `str(err)` is the one-line message."""

    exit_code = 2


class UsageError(ResnetDeployError):
    """A bad argument: unknown variant, format or precision, invalid number."""


class WeightsError(ResnetDeployError):
    """A weights source that cannot be resolved or loaded."""


class DataError(ResnetDeployError):
    """An image folder or data set that cannot be used: missing, empty, one class, unreadable images."""


class ExportError(ResnetDeployError):
    """An export that could not be written (or would overwrite something)."""


class RunnerError(ResnetDeployError):
    """A runner that cannot load its artifact, or a feed that does not match its inputs."""


class BundleError(ResnetDeployError):
    """A bundle that is malformed, unsafe to unpack, or fails verification."""


class ServingError(ResnetDeployError):
    """A server that cannot start (port in use) or a serving request that failed (client side)."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its class name when the message is
    empty: safe inside handlers that must not raise (a bare `RuntimeError()` has no lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


class SigningError(ResnetDeployError):
    """A key, certificate or chain that cannot be used to sign or verify a bundle."""
