"""Atomic publishing: a directory replaced in place is never missing, not even for a moment."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from export.core import atomic

pytestmark = pytest.mark.unit


def _version_dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_text(text)
    return path


def test_replace_dir_swaps_without_renaming_the_old_one_away(tmp_path, monkeypatch):
    final = _version_dir(tmp_path / "1", "old")
    new = _version_dir(tmp_path / ".1.partial", "new")
    renamed_away = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renamed_away.append(a) if Path(a) == final else None,
                                                    real_rename(a, b))[1])
    atomic.replace_dir(new, final)
    assert (final / "saved_model.pb").read_text() == "new"
    assert renamed_away == [], "the old directory was renamed aside: a poller could see no version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def test_a_poller_never_sees_the_version_missing(tmp_path):
    final = _version_dir(tmp_path / "1", "v0")
    missing = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            if not (final / "saved_model.pb").exists():
                missing.append(1)
    t = threading.Thread(target=poll)
    t.start()
    try:
        for i in range(200):
            atomic.replace_dir(_version_dir(tmp_path / f".1.{i}.partial", f"v{i + 1}"), final)
    finally:
        stop.set()
        t.join()
    assert missing == [] and (final / "saved_model.pb").read_text() == "v200"


def test_exchange_swaps_two_paths(tmp_path):
    a, b = _version_dir(tmp_path / "a", "A"), _version_dir(tmp_path / "b", "B")
    assert atomic.exchange_paths(a, b)
    assert (a / "saved_model.pb").read_text() == "B" and (b / "saved_model.pb").read_text() == "A"


def test_published_files_get_the_umask_without_the_process_umask_ever_changing(tmp_path, monkeypatch):
    """write_text makes its file readable like a normally created one (0o666 less the umask) and a
    staged directory like mkdir would (0o777 less it), without calling os.umask: setting it to read
    it changed it for every thread of the process for a moment (a file another thread created
    then got mode 0o666)."""
    old = os.umask(0o027)
    try:
        def no_umask(mask):
            raise AssertionError("os.umask changes the whole process's umask")
        monkeypatch.setattr(os, "umask", no_umask)
        atomic.write_text(tmp_path / "models.config", "model_config_list {}\n")
        assert (tmp_path / "models.config").stat().st_mode & 0o777 == 0o640
        with atomic.staged_dir(tmp_path / "1") as staging:
            (staging / "saved_model.pb").write_text("graph")
        assert (tmp_path / "1").stat().st_mode & 0o777 == 0o750
    finally:
        monkeypatch.undo()
        os.umask(old)
