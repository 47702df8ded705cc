"""Import rules between packages (the architecture's boundaries), checked on the source files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# package -> top-level modules it must never import
FORBIDDEN = {
    "vl4pose": {"flask", "sqlalchemy", "alembic", "huey", "label_studio_sdk", "label_studio", "ml_backend", "backend",
                "requests", "stack", "common"},
    # shared by both services, so it imports neither (nor what only one of them uses); it may import vl4pose
    "common": {"backend", "ml_backend", "stack", "flask", "sqlalchemy", "alembic", "huey", "label_studio",
               "label_studio_sdk"},
    "ml_backend": {"backend", "sqlalchemy", "alembic", "huey", "label_studio", "stack"},
    "backend": {"ml_backend", "label_studio", "stack"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_its_import_rules(package):
    root = REPO / package
    if not root.is_dir():
        pytest.skip(f"{package}/ does not exist yet")
    offences = []
    for path in sorted(root.rglob("*.py")):
        bad = imported_modules(path) & FORBIDDEN[package]
        if bad:
            offences.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not offences, "\n".join(offences)


def test_the_checker_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import flask\nfrom backend.models import X\nfrom . import local\n")
    assert imported_modules(sample) == {"flask", "backend"}
