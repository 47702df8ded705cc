"""``<id:name>`` URL parts: a non-negative integer the database can hold (signed 64-bit).

Werkzeug's ``int`` converter accepts any number of digits, and SQLite raises ``OverflowError`` for an id
beyond 2**63 - 1 (a 500). With this converter such a URL does not match any route: a clean 404 JSON error
from the one place ids enter the app. Every blueprint with ids in its routes installs it with
``bp.record_once(install)`` before its routes are declared.
"""

from __future__ import annotations

from typing import Any

from flask.blueprints import BlueprintSetupState
from werkzeug.routing import IntegerConverter

DB_ID_MAX = 2**63 - 1


class IdConverter(IntegerConverter):
    """An integer in [0, 2**63 - 1]; anything larger makes the route not match (404)."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:  # noqa: A002 - werkzeug's name
        kwargs.setdefault("max", DB_ID_MAX)
        super().__init__(map, *args, **kwargs)


def install(state: BlueprintSetupState) -> None:
    """Register the ``id`` converter on the app a blueprint is registered with."""
    state.app.url_map.converters.setdefault("id", IdConverter)
