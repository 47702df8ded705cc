"""The coordinator's records (SQLAlchemy 2.0 typed models), one import for every table.

Tables live in :mod:`backend.models.projects` (projects, rounds, model versions, held-out samples, task predictions)
and :mod:`backend.models.records` (annotations and their history, the webhook inbox, jobs), on the shared base of
:mod:`backend.models.base`. Importing this package imports every table module, so ``Base.metadata`` holds every
table (Alembic's ``env.py`` relies on it). Schema changes go through Alembic migrations in
``backend/migrations`` (a test checks that the models and the migrations agree).
"""

from __future__ import annotations

from backend.models.base import Base, enum_column, utcnow
from backend.models.projects import HoldoutSample, ModelVersion, Project, Round, RoundState, TaskPrediction
from backend.models.records import (
    AnnotationRecord,
    AnnotationStatus,
    AnnotationVersion,
    EventState,
    Job,
    JobKind,
    JobState,
    WebhookEvent,
)

__all__ = [
    "AnnotationRecord",
    "AnnotationStatus",
    "AnnotationVersion",
    "Base",
    "EventState",
    "HoldoutSample",
    "Job",
    "JobKind",
    "JobState",
    "ModelVersion",
    "Project",
    "Round",
    "RoundState",
    "TaskPrediction",
    "WebhookEvent",
    "enum_column",
    "utcnow",
]
