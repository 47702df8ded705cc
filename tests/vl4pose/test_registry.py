"""Published model versions: atomic publication, the CURRENT pointer, idempotence."""

from __future__ import annotations

import pytest

from vl4pose.errors import CheckpointError
from vl4pose.registry import ModelRegistry


def test_publish_sets_current_and_is_idempotent(tmp_path, tiny_checkpoint):
    registry = ModelRegistry(tmp_path / "models")
    assert registry.current() is None and registry.versions() == []
    registry.publish(tiny_checkpoint, "v1")
    registry.publish(tiny_checkpoint.path, "v2", parent="v1", round=1)
    assert registry.current() == "v2" and registry.versions() == ["v1", "v2"]
    assert registry.info("v2")["parent"] == "v1" and registry.info("v2")["round"] == 1
    first = (registry.path("v1") / "weights.pt").stat().st_mtime_ns
    registry.publish(tiny_checkpoint, "v1")  # already there: nothing rewritten, pointer moves back
    assert (registry.path("v1") / "weights.pt").stat().st_mtime_ns == first and registry.current() == "v1"
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_half_written_version_is_never_current(tmp_path, tiny_checkpoint):
    registry = ModelRegistry(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "weights.pt").write_bytes(b"")
    assert "broken" not in registry.versions()
    with pytest.raises(CheckpointError, match="not published"):
        registry.set_current("broken")
    registry.publish(tiny_checkpoint, "broken")  # a leftover without the required files is replaced
    assert registry.current() == "broken"


def test_version_names_are_validated(tmp_path):
    with pytest.raises(CheckpointError, match="letters, digits"):
        ModelRegistry(tmp_path).path("../escape")
