"""Atomic file and directory writes: readers (and TF Serving's poller) never see half a file.

Everything is written under a temporary name in the destination's own directory (same
filesystem), then moved into place with os.replace / os.rename.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from export.core.errors import ExportError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check it can be written; ExportError otherwise."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create output directory {p}: {e.strerror}; choose a writable --out") from None
    if not p.is_dir():
        raise ExportError(f"output path {p} is not a directory; choose a directory for --out")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ExportError(f"output directory {p} is not writable; choose a writable --out")
    return p


def _umask() -> int:
    """The process's umask, read without changing it: os.umask can only set it, and setting it to
    read it would, for a moment, apply to every file any other thread creates. Linux reports it in
    /proc/self/status; elsewhere a probe directory, made with 0o777, shows what the umask removes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with tempfile.TemporaryDirectory(prefix=".umask-probe.") as d:
        probe = os.path.join(d, "probe")
        os.mkdir(probe, 0o777)
        return 0o777 & ~os.stat(probe).st_mode


def make_readable(path: str | os.PathLike) -> None:
    """Give a temp file/dir the permissions of a normally created one (mkstemp/mkdtemp make
    them private), so TF Serving or a container running as another user can read them."""
    mode = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it becomes `path`
    (readable like a normal file, then os.replace); when it fails it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file beside it, fsync, rename)."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths with Linux's renameat2(RENAME_EXCHANGE): at no moment
    is either name missing. False where the kernel, libc or file system cannot do it."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def replace_dir(src: Path, final: Path) -> None:
    """Rename the complete directory `src` to `final`. An existing `final` is exchanged with `src`
    in one atomic step (Linux), so a reader such as TF Serving's version poller always sees the
    old or the new directory, never none; the old one is then removed. Where the exchange is not
    available the old directory is renamed aside first, which leaves a gap of two renames.
    (TF Serving itself loads new version numbers; replacing a version in place is for re-exports.)"""
    make_readable(src)
    if final.exists():
        if exchange_paths(src, final):
            shutil.rmtree(src, ignore_errors=True)  # src now holds the old directory
            return
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
        os.rename(src, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, final)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `final`; on success rename it to `final`.

    On any exception the temporary directory is removed and `final` is untouched. With
    overwrite=True an existing `final` is swapped out only after the new one is complete.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise ExportError(f"{final} already exists; pass --overwrite to replace it or choose another version")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_keras_atomic(model, path: str | os.PathLike) -> None:
    """model.save(path) through a temporary file in the same directory."""
    path = Path(path)
    if not path.name.endswith(".keras"):
        raise ExportError(f"--save needs a path ending in .keras, got {path}")
    ensure_writable_dir(path.parent)
    with replacing(path, suffix=".keras") as tmp:
        model.save(tmp)
