"""Atomic outputs: private while being written, then the mode a plain open()/mkdir() would give."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from okvqa_k8s.fsutil import atomic_directory, atomic_write_text


@pytest.fixture
def umask_022() -> Iterator[int]:
    old = os.umask(0o022)
    yield 0o022
    os.umask(old)


def test_written_files_and_directories_are_readable_by_others(tmp_path: Path, umask_022: int) -> None:
    """A model baked into an image by root is read by the pod's uid 1000: 0600/0700 temp modes broke it."""
    atomic_write_text(tmp_path / "config.json", "{}")
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o644
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "weights").write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


def test_the_umask_still_rules(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "secret.json", "{}")
        with atomic_directory(tmp_path / "private"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700


def test_replacing_a_directory_does_not_collide_with_another_writers_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pods replacing the same shared directory both run as pid 1: a pid-named backup collides."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "old.bin").write_bytes(b"old")
    other = tmp_path / ".model.old-1"
    other.mkdir()
    (other / "theirs").write_bytes(b"another writer's backup, mid-replace")
    monkeypatch.setattr(os, "getpid", lambda: 1)
    with atomic_directory(tmp_path / "model", replace=True) as tmp:
        (tmp / "new.bin").write_bytes(b"new")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["new.bin"]
    assert (other / "theirs").exists()  # untouched
