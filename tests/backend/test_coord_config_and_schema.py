"""Settings from the environment, and schema migrations with Alembic (empty database, previous revision)."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from backend.config import Settings, SettingsError
from backend.db import Database, current_revision, downgrade, upgrade

GOOD = {"VL4POSE_WEBHOOK_SECRET": "s" * 20, "VL4POSE_API_TOKEN": "t" * 20}


def test_settings_are_read_from_prefixed_variables():
    settings = Settings.from_env(
        {
            **GOOD,
            "VL4POSE_ROUND_BUDGET": "250",
            "VL4POSE_AUTO_MIGRATE": "false",
            "VL4POSE_TRAIN_LR": "0.0005",
            "OTHER_ROUND_BUDGET": "3",
        }
    )
    assert settings.round_budget == 250 and settings.auto_migrate is False and settings.train_lr == 0.0005
    assert settings.database_url == "sqlite:///storage/coordinator.sqlite"
    assert settings.redacted()["api_token"] == "***" and "t" * 20 not in str(settings.redacted())


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({}, "VL4POSE_WEBHOOK_SECRET"),
        ({"VL4POSE_WEBHOOK_SECRET": "short", "VL4POSE_API_TOKEN": "t" * 20}, "at least 16"),
        ({**GOOD, "VL4POSE_ROUND_BUDGET": "many"}, "VL4POSE_ROUND_BUDGET='many' is not a valid int"),
        ({**GOOD, "VL4POSE_QUEUE": "rabbitmq://x"}, "VL4POSE_QUEUE"),
        ({**GOOD, "VL4POSE_HOLDOUT_FRACTION": "1.5"}, "VL4POSE_HOLDOUT_FRACTION"),
        ({**GOOD, "VL4POSE_AUTO_MIGRATE": "maybe"}, "not a valid bool"),
        ({**GOOD, "VL4POSE_BOX_PASSES": "0"}, "VL4POSE_BOX_PASSES must be at least 1"),
        ({**GOOD, "VL4POSE_BOX_TOLERANCE": "-0.1"}, "VL4POSE_BOX_TOLERANCE must be >= 0"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(env, fragment):
    with pytest.raises(SettingsError, match=fragment.replace("(", r"\(")):
        Settings.from_env(env)


def test_person_finding_reaches_ranking_and_evaluation():
    default = Settings.from_env(GOOD).predictor_config()
    assert (default.box_passes, default.box_tolerance, default.batch_size, default.blazepose) == (2, 0.0, 32, False)
    chosen = Settings.from_env({**GOOD, "VL4POSE_BOX_PASSES": "6", "VL4POSE_BOX_TOLERANCE": "0.05",
                                "VL4POSE_BLAZEPOSE": "1"}).predictor_config()
    assert (chosen.box_passes, chosen.box_tolerance, chosen.blazepose) == (6, 0.05, True)


def test_unknown_override_is_refused():
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.from_env(GOOD, overrides={"round_budjet": 3})


def _columns(engine, table):
    return {c["name"] for c in inspect(engine).get_columns(table)}


def _head() -> str:
    from alembic.script import ScriptDirectory

    from backend.db import alembic_config, make_engine

    return ScriptDirectory.from_config(alembic_config(make_engine("sqlite://"))).get_current_head()


def test_upgrade_of_an_empty_database_gives_the_models_schema(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from backend.models import Base

    db = Database(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    db.upgrade()
    assert current_revision(db.engine) == _head()
    with db.engine.connect() as connection:
        assert (
            compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata) == []
        )
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_upgrade_from_the_previous_revision_keeps_the_data(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    upgrade(db.engine, "0001")
    assert "owner" not in _columns(db.engine, "job") and "task_prediction" not in inspect(db.engine).get_table_names()
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO project (id, ls_project_id, title, skeleton, strategy, round_budget, validation_policy, "
                "holdout_fraction, label_config, image_source, created_at) VALUES (1, 7, 'old', 'lsp14', 'vl4pose', 5, "
                "'share', 0.1, '{}', 'local-files', '2026-01-01 00:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO job (id, project_id, kind, state, progress, stage, attempts, payload, created_at) "
                "VALUES (3, 1, 'train', 'running', 0.5, 'training', 1, '{}', '2026-01-01 00:00:00')"
            )
        )
    db.upgrade()
    assert current_revision(db.engine) == _head()
    assert {"owner", "heartbeat_at"} <= _columns(db.engine, "job")
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT state, progress, owner FROM job WHERE id = 3")).one() == (
            "running",
            0.5,
            None,
        )
        assert connection.execute(text("SELECT title FROM project")).scalar() == "old"
    downgrade(db.engine, "0001")
    assert "task_prediction" not in inspect(db.engine).get_table_names()
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM job")).scalar() == 1


def test_upgrade_to_0003_gives_stored_events_their_state(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'events.sqlite'}")
    upgrade(db.engine, "0002")
    with db.engine.begin() as connection:
        for id_, processed, error in [(1, 0, None), (2, 1, None), (3, 1, "project 9 is not linked; ignored")]:
            connection.execute(
                text(
                    "INSERT INTO webhook_event (id, received_at, action, ls_project_id, body, processed, error) "
                    "VALUES (:id, '2026-01-01 00:00:00', 'ANNOTATION_CREATED', 7, '{}', :processed, :error)"
                ),
                {"id": id_, "processed": processed, "error": error},
            )
    upgrade(db.engine, "0003")
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT id, state, attempts FROM webhook_event ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(1, "pending", 0), (2, "done", 0), (3, "ignored", 0)]
    downgrade(db.engine, "0002")
    assert "state" not in _columns(db.engine, "webhook_event")


def test_foreign_keys_are_enforced(tmp_path):
    from sqlalchemy.exc import IntegrityError

    from backend.models import Round

    db = Database(f"sqlite:///{tmp_path / 'fk.sqlite'}")
    db.upgrade()
    with pytest.raises(IntegrityError):
        with db.session() as session:
            session.add(Round(project_id=99, number=1, budget=3))


def test_blazepose_without_its_interpreter_is_refused_at_start_up(tmp_path, monkeypatch):
    monkeypatch.setenv("VL4POSE_BLAZEPOSE_PYTHON", str(tmp_path / "missing" / "python"))  # read by vl4pose.blazepose
    with pytest.raises(SettingsError, match=r"VL4POSE_BLAZEPOSE: .*setup.sh --blazepose"):
        Settings.from_env({**GOOD, "VL4POSE_BLAZEPOSE": "true"})
