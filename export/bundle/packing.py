"""The bundle tarball: `pack` and the safe `unpack`, compressed only where compression pays (a
`.tar.gz` that any gzip reads).

Model weights are near-random bytes: measured on a ResNet50 bundle, deflate level 1 leaves float
weights at 91-93 % of their size and int8 weights at 98 %, at 30-50 MB/s on one core, so
compressing 1.2 GB of them cost ~90 s (level 6) to save ~8 %. The graph protos, configs, README,
JSON and warmup records shrink to 7-40 % instead. So each file is sampled first and written into
its own gzip member: deflate level 6 when the sample compresses below STORE_ABOVE, stored
(level 0: framing and CRC only) otherwise. The sample is SAMPLES pieces spread over the file: three
pieces (start, middle, end) caught the compressible headers of flatbuffers and ONNX protos, and sent
455 MB of the default bundle's fp16 / int8 / dynamic weights (whole-file ratio 0.88-0.99 at level 1)
through deflate level 6: 11 of the pack's 15 s, to save ~7 %. Spread pieces read them at 0.84-1.0
against 0.08-0.40 for what does compress, so STORE_ABOVE sits between, at 0.75. A gzip file may hold several members one after the
other (RFC 1952 §2.2); gzip, GNU/busybox tar, Python's tarfile and TF Serving's users' tools read
it as one stream, so the name and format stay `<bundle>.tar.gz`.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from export.core.atomic import replacing, write_text
from export.core.errors import BundleError

#: A file whose samples deflate (level 1) to more than this fraction of their size is stored.
STORE_ABOVE = 0.75
#: Deflate level for the files that do compress.
COMPRESS_LEVEL = 6
#: How many pieces of a file are sampled, evenly spaced from its start to its end, and their size.
SAMPLES = 16
SAMPLE_BYTES = 32 * 1024


def compress_level(path: Path) -> int:
    """COMPRESS_LEVEL if the file's samples deflate below STORE_ABOVE, else 0 (store)."""
    size = path.stat().st_size
    if size <= SAMPLES * SAMPLE_BYTES:
        data = path.read_bytes()
    else:
        with open(path, "rb") as f:
            chunks = []
            for i in range(SAMPLES):
                f.seek((size - SAMPLE_BYTES) * i // (SAMPLES - 1))
                chunks.append(f.read(SAMPLE_BYTES))
        data = b"".join(chunks)
    if not data:
        return COMPRESS_LEVEL
    return COMPRESS_LEVEL if len(zlib.compress(data, 1)) < STORE_ABOVE * len(data) else 0


class _HashingFile:
    """Writes to `raw` and feeds a sha256 on the way, so the tarball is hashed as it is written."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


class GzipMembers:
    """A write-only stream that gzips what it is given, one gzip member per `level(n)` change."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._member: gzip.GzipFile | None = None
        self._level: int | None = None
        self._offset = 0

    def level(self, level: int) -> None:
        """Compress what follows at `level`: a new member when it differs from the current one."""
        if level == self._level and self._member is not None:
            return
        self._close_member()
        self._member = gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", compresslevel=level, mtime=0)
        self._level = level

    def write(self, data) -> int:
        if self._member is None:
            self.level(COMPRESS_LEVEL)
        assert self._member is not None
        n = self._member.write(data)
        self._offset += n
        return n

    def tell(self) -> int:
        return self._offset

    def _close_member(self) -> None:
        if self._member is not None:
            self._member.close()  # writes the member's CRC and size; leaves `raw` open
            self._member = None

    def close(self) -> None:
        self._close_member()


def write_tar_gz(path: Path, members: Iterable[tuple[Path, str]],
                 normalise: Callable[[tarfile.TarInfo], tarfile.TarInfo] | None = None) -> tuple[str, dict[str, int]]:
    """Write `(file, arcname)` members into the .tar.gz at `path`; returns its sha256 and how many
    members were stored and compressed."""
    counts = {"stored": 0, "compressed": 0}
    with open(path, "wb") as raw:
        hashing = _HashingFile(raw)
        stream = GzipMembers(hashing)  # type: ignore[arg-type]
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for file, arcname in members:
                level = compress_level(file) if file.is_file() else COMPRESS_LEVEL
                counts["stored" if level == 0 else "compressed"] += file.is_file()
                stream.level(level)
                tar.add(file, arcname=arcname, recursive=False, filter=normalise)
            stream.level(COMPRESS_LEVEL)  # the end-of-archive blocks compress to nothing
        stream.close()
        raw.flush()
        os.fsync(raw.fileno())
    return hashing.sha256.hexdigest(), counts


# -- pack / unpack ------------------------------------------------------------------------------

def pack(bundle_dir: Path) -> tuple[Path, str]:
    """Write `<bundle>.tar.gz` (members under `<bundle>/`) and `<bundle>.tar.gz.sha256`, atomically.

    Weights that do not compress are stored inside the gzip stream rather than deflated
    (export/bundle/packing.py has the measurements); any gzip or tar reads the result as usual.
    """
    bundle_dir = Path(bundle_dir)
    tar_path = bundle_dir.with_name(bundle_dir.name + ".tar.gz")
    # Reproducible as before: gzip members without a timestamp or name, members sorted, owners/modes
    # normalised (mtimes clamped to SOURCE_DATE_EPOCH when set): equal files give an equal tarball.
    members = [(p, f"{bundle_dir.name}/{p.relative_to(bundle_dir).as_posix()}")
               for p in sorted(bundle_dir.rglob("*")) if not p.is_symlink()]
    with replacing(tar_path) as tmp:
        digest, _ = write_tar_gz(tmp, members, normalise=_normalise_member)
    write_text(tar_path.with_name(tar_path.name + ".sha256"), f"{digest}  {tar_path.name}\n")
    return tar_path, digest


def _normalise_member(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    epoch = source_date_epoch()
    info.mtime = int(info.mtime) if epoch is None else min(int(info.mtime), epoch)
    return info


def source_date_epoch() -> int | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) as an int, or None when unset or invalid."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(text) if text.isdigit() else None


def unpack(tar_path: Path, dest: Path) -> Path:
    """Safely extract a bundle tarball into `dest`; returns the bundle directory inside it. The
    rules are export/deploy/safe_unpack.py's (the Kubernetes initContainer runs that file too):
    absolute paths, `..`, links leading outside `dest`, devices and FIFOs are refused."""
    from export.deploy.safe_unpack import UnsafeArchive, extract
    try:
        return extract(Path(tar_path), Path(dest))
    except UnsafeArchive as e:
        raise BundleError(str(e)) from None
    except tarfile.ReadError:  # tarfile's own text lists every compression it tried, one line each
        raise BundleError(f"cannot unpack {tar_path}: not a tar archive (plain, gzip, bzip2 or xz); "
                          "pass a bundle directory or its .tar.gz") from None
    except tarfile.TarError as e:
        raise BundleError(f"cannot unpack {tar_path}: {_first_line(e)}") from None
    except OSError as e:
        raise BundleError(f"cannot unpack {tar_path}: {e.strerror or e}") from None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")


def open_bundle(path: Path, scratch: Path) -> Path:
    """A bundle directory for `path`: the directory itself, or a .tar.gz unpacked into scratch."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return unpack(path, scratch)
    raise BundleError(f"{path} is neither a bundle directory nor a .tar.gz; give dist/<name>-<version>[.tar.gz]")
