"""The bundle's safe-unpack rules, standard library only, so the same file runs in a container.

`export.bundle.packing.unpack` uses `check_member` on every tarball it opens, and the Kubernetes
initContainer runs this file as a script (shipped in the bundle's ConfigMap):

    python3 safe_unpack.py ARCHIVE DEST [--sha256 HEX | --sha256-file FILE] [--remove-archive]

It checks the archive's sha256 first, then refuses absolute paths, `..`, links leading out of
DEST, device files and FIFOs, and extracts with tarfile's `data` filter (Python >= 3.12, or a
3.11 patch release that has it). Exit 0 and the bundle directory on stdout; 1 and one line
on stderr otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tarfile
from pathlib import Path, PurePosixPath


class UnsafeArchive(ValueError):
    """An archive member, checksum or layout that this module refuses to unpack."""


def check_member(member: tarfile.TarInfo, dest: Path) -> None:
    """Refuse what the `data` filter might let through on an older Python: absolute paths,
    `..`, links that point outside `dest`, device files and FIFOs."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise UnsafeArchive(f"refusing to unpack: member {name!r} has an absolute path or '..'")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise UnsafeArchive(f"refusing to unpack: member {name!r} is a device file or FIFO")
    if member.issym() or member.islnk():
        target = member.linkname
        base = (dest / name).parent if member.issym() else dest
        resolved = os.path.realpath(os.path.join(base, target))
        if PurePosixPath(target).is_absolute() or not resolved.startswith(str(dest.resolve()) + os.sep):
            raise UnsafeArchive(f"refusing to unpack: link {name!r} points outside the bundle ({target!r})")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(f"refusing to unpack: member {name!r} is not a regular file or directory")


def extract(archive: Path, dest: Path) -> Path:
    """Check every member of `archive`, extract it into `dest` (data filter) and return the
    single top-level directory it holds. UnsafeArchive or OSError/TarError otherwise."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            check_member(m, dest)
        tar.extractall(dest, members=members, filter="data")
    tops = {PurePosixPath(m.name).parts[0] for m in members if m.name not in ("", ".")}
    if len(tops) != 1:
        raise UnsafeArchive(f"{archive} is not a bundle: expected one top-level directory, found {sorted(tops)}")
    return dest / tops.pop()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def expected_digest(sha256: str | None, sha256_file: Path | None) -> str:
    """The digest to check: `sha256` itself, or the first word of a `sha256sum` line in the file."""
    if sha256:
        digest = sha256.strip().lower()
    elif sha256_file is not None:
        words = Path(sha256_file).read_text().split()
        digest = words[0].lower() if words else ""
    else:
        raise UnsafeArchive("no checksum given: pass --sha256 HEX or --sha256-file FILE")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UnsafeArchive(f"{digest!r} is not a sha256 hex digest")
    return digest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check a bundle tarball's sha256 and unpack it safely.")
    p.add_argument("archive", type=Path)
    p.add_argument("dest", type=Path)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sha256", help="the expected sha256 (hex)")
    which.add_argument("--sha256-file", type=Path, help="a `sha256sum` line for the archive")
    p.add_argument("--remove-archive", action="store_true", help="delete the archive once unpacked")
    args = p.parse_args(argv)
    try:
        want = expected_digest(args.sha256, args.sha256_file)
        got = sha256_of(args.archive)
        if got != want:
            raise UnsafeArchive(f"sha256 mismatch for {args.archive}: expected {want}, got {got}; "
                                "the download is corrupt or not the bundle the manifests were rendered for")
        root = extract(args.archive, args.dest)
        if args.remove_archive:
            args.archive.unlink()
    except (UnsafeArchive, OSError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
