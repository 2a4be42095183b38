"""Crash-safe writes: the target is the old file or the new one, never half of one, and a failed
write leaves nothing behind."""

from __future__ import annotations

import stat

import pytest

from fedmarket import files
from fedmarket.files import atomic_output, atomic_write


def test_a_write_replaces_the_file_with_the_mode_asked_for(tmp_path):
    path = tmp_path / "deep" / "state.json"
    atomic_write(path, b"one")
    assert path.read_bytes() == b"one" and stat.S_IMODE(path.stat().st_mode) == 0o644
    atomic_write(path, b"two", mode=0o600)
    assert path.read_bytes() == b"two" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_a_write_killed_before_the_rename_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "state.json", b"old")

    def killed(source, target):
        raise OSError("killed before the rename")

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(OSError, match="killed"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_output_without_a_target_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="without setting a target"):
        with atomic_output(tmp_path) as out:
            out.file.write(b"orphan")
    assert list(tmp_path.iterdir()) == []


def test_an_output_whose_block_raises_publishes_nothing(tmp_path):
    with pytest.raises(ValueError, match="too large"):
        with atomic_output(tmp_path) as out:
            out.file.write(b"partial")
            raise ValueError("too large")
    assert list(tmp_path.iterdir()) == []
