"""The shared disk cache of task images: caller-named files, least recently used out above the size limit."""

from __future__ import annotations

import os

import pytest

from common.filecache import FileCache


def _age(path, seconds_ago: float) -> None:
    stamp = path.stat().st_mtime - seconds_ago
    os.utime(path, (stamp, stamp))


def test_files_are_kept_under_their_name_and_found_again(tmp_path):
    cache = FileCache(tmp_path / "c")
    assert cache.lookup("abcdef.jpg") is None
    path = cache.store("abcdef.jpg", b"123")
    assert path == tmp_path / "c" / "ab" / "abcdef.jpg" and path.read_bytes() == b"123"
    assert cache.lookup("abcdef.jpg") == path
    cache.forget("abcdef.jpg")
    assert cache.lookup("abcdef.jpg") is None
    cache.forget("abcdef.jpg")  # twice is fine


def test_over_the_limit_the_least_recently_used_go_down_to_the_trim_fraction(tmp_path):
    cache = FileCache(tmp_path, max_bytes=1000, trim_to=0.5)
    names = [f"{i:02d}file" for i in range(4)]
    for i, name in enumerate(names):
        _age(cache.store(name, b"x" * 240), 100 - 10 * i)  # 00file is the oldest
    assert cache.lookup(names[0]) is not None  # used again: now the most recent
    cache.store("99file", b"x" * 240)  # 1200 bytes > 1000: trim to <= 500
    kept = sorted(p.name for p, _, _ in cache.files())
    assert kept == ["00file", "99file"], "the least recently used went first, the one just used stayed"
    assert sum(size for _, size, _ in cache.files()) <= 500


def test_without_a_limit_nothing_is_evicted_and_hidden_files_are_never_counted(tmp_path):
    cache = FileCache(tmp_path)
    for i in range(5):
        cache.store(f"{i:02d}", b"y" * 1000)
    (tmp_path / "00" / ".00.partial").write_bytes(b"z" * 10_000)  # a download being written
    assert len(cache.files()) == 5
    limited = FileCache(tmp_path, max_bytes=5500, trim_to=0.8)
    limited.store("05", b"y" * 1000)  # 6000 > 5500 counted without the hidden file: trim to 4400
    assert len(limited.files()) == 4 and (tmp_path / "00" / ".00.partial").exists()


def test_the_trim_fraction_must_be_a_fraction(tmp_path):
    with pytest.raises(ValueError, match="trim_to"):
        FileCache(tmp_path, 100, trim_to=0)
