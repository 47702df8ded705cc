"""Published model versions: atomic publication, a current version per project, idempotence, the older
single-CURRENT layout migrated."""

from __future__ import annotations

import pytest

from vl4pose.errors import CheckpointError
from vl4pose.registry import ModelRegistry


def test_publish_sets_the_projects_current_and_is_idempotent(tmp_path, tiny_checkpoint):
    registry = ModelRegistry(tmp_path / "models")
    assert registry.current() is None and registry.current("1") is None and registry.versions() == []
    registry.publish(tiny_checkpoint, "v1", make_current=True, project=1)
    registry.publish(tiny_checkpoint.path, "v2", parent="v1", make_current=True, project="1", round=1)
    assert registry.current("1") == "v2" and registry.versions() == ["v1", "v2"]
    assert registry.info("v2")["parent"] == "v1" and registry.info("v2")["round"] == 1
    first = (registry.path("v1") / "weights.pt").stat().st_mtime_ns
    registry.publish(tiny_checkpoint, "v1", make_current=True, project="1")  # nothing rewritten, pointer moves back
    assert (registry.path("v1") / "weights.pt").stat().st_mtime_ns == first and registry.current("1") == "v1"
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    with pytest.raises(CheckpointError, match="project=<Label Studio project id>"):
        registry.publish(tiny_checkpoint, "v3", make_current=True)


def test_every_project_has_its_own_current_version(tmp_path, tiny_checkpoint):
    registry = ModelRegistry(tmp_path)
    registry.publish(tiny_checkpoint, "p1-v0")
    registry.publish(tiny_checkpoint, "p2-v0")
    assert registry.projects() == [] and not registry.is_linked("5")
    registry.link_project(5, skeleton="lsp14")
    registry.link_project("6", skeleton="coco17")
    assert registry.projects() == ["5", "6"] and registry.is_linked(5) and registry.current("5") is None
    assert registry.project_info("6")["skeleton"] == "coco17"
    registry.set_current("p1-v0", 5)
    registry.set_current("p2-v0", "6")
    assert (registry.current("5"), registry.current("6"), registry.current("7")) == ("p1-v0", "p2-v0", None)
    assert registry.current() == "p2-v0"  # without a project: the version made current last (tools only)
    assert "projects" not in registry.versions()
    registry.link_project("5", note="re-linked")  # keeps what it knew
    assert registry.project_info("5")["skeleton"] == "lsp14" and registry.current("5") == "p1-v0"
    for bad in ("../x", "", "a/b", True):
        with pytest.raises(CheckpointError, match="Label Studio id"):
            registry.project_dir(bad)


def test_the_older_single_current_is_migrated_to_one_project(tmp_path, tiny_checkpoint):
    registry = ModelRegistry(tmp_path)
    registry.publish(tiny_checkpoint, "p1-v3")
    (tmp_path / "CURRENT").write_text("p1-v3\n")  # the layout before per-project versions
    assert registry.current() == "p1-v3" and registry.current("1") is None
    assert registry.migrate_legacy_current("1") == "p1-v3"
    assert registry.current("1") == "p1-v3" and not (tmp_path / "CURRENT").exists()
    assert (tmp_path / "CURRENT.migrated").is_file()
    assert registry.migrate_legacy_current("1") is None  # nothing left to migrate


def test_half_written_version_is_never_current(tmp_path, tiny_checkpoint):
    registry = ModelRegistry(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "weights.pt").write_bytes(b"")
    assert "broken" not in registry.versions()
    with pytest.raises(CheckpointError, match="not published"):
        registry.set_current("broken", "1")
    registry.publish(tiny_checkpoint, "broken", make_current=True, project="1")  # a leftover is replaced
    assert registry.current("1") == "broken"


def test_version_names_are_validated(tmp_path):
    with pytest.raises(CheckpointError, match="letters, digits"):
        ModelRegistry(tmp_path).path("../escape")
    with pytest.raises(CheckpointError, match="letters, digits"):
        ModelRegistry(tmp_path).path("projects")  # the projects' folder is not a version
