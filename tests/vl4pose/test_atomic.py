"""write_atomic: the one "temporary sibling, then os.replace" of the project (registry pointers, image caches,
the ML backend's project store, stack.json)."""

from __future__ import annotations

import os
import stat

import pytest

from vl4pose.atomic import write_atomic


def test_text_and_bytes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "CURRENT"
    write_atomic(path, "v1\n")
    write_atomic(path, "v2 – ü\n")
    assert path.read_text(encoding="utf-8") == "v2 – ü\n"
    write_atomic(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]


def test_a_mode_is_set_before_the_content_is_written(tmp_path):
    path = tmp_path / "stack.json"
    write_atomic(path, "{}", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomic(tmp_path / "plain", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_content_and_removes_the_temporary(tmp_path):
    path = tmp_path / "project.json"
    write_atomic(path, "old")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["project.json"]
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "file", "x")
