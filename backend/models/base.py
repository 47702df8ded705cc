"""What every table module shares: the declarative base, the clock (naive UTC) and enum columns.

Times are naive UTC datetimes. Keypoints are stored as JSON lists of ``[x, y]`` image pixels with
``null`` for a missing keypoint, in the skeleton's keypoint order (K entries).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, DateTime, Enum
from sqlalchemy.orm import DeclarativeBase


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: DateTime()}


def enum_column(kind: type[enum.Enum]) -> Enum:
    """A column type storing the enum's values as strings (no native enum, no CHECK constraint)."""
    return Enum(
        kind,
        native_enum=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
        create_constraint=False,
    )
