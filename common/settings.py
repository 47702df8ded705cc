"""Settings from ``VL4POSE_*`` environment variables into a frozen dataclass: one mechanism for both services.

A service describes how its variables are named and read with an :class:`EnvReader` and builds its settings
with :meth:`EnvReader.load`; range checks stay with the service (they are its own rules). A field's type comes
from the dataclass annotation (a string under ``from __future__ import annotations``): ``str``, ``int``,
``float``, ``bool``, ``Path`` or ``tuple[str, ...]`` (a comma-separated list), each optionally ``| None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

PREFIX = "VL4POSE_"
BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_KIND_WORDS = {"bool": "bool (true/false, yes/no, on/off or 1/0)", "tuple": "comma-separated list"}

T = TypeVar("T")


def field_kind(annotation: Any) -> str:
    """The reading of a field's annotation: ``"str | None"`` -> ``"str"``, ``"tuple[str, ...]"`` -> ``"tuple"``.

    One of ``str``, ``int``, ``float``, ``bool``, ``Path``, ``tuple``; anything else reads as ``str``.
    """
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [part.strip() for part in text.split("|") if part.strip() not in ("None", "")]
    base = parts[0] if parts else "str"
    if base.startswith("tuple"):
        return "tuple"
    return base if base in ("int", "float", "bool", "Path") else "str"


@dataclass(frozen=True)
class EnvReader:
    """How one service's settings are named and read.

    Attributes:
        error: the exception class raised; every message names the environment variable.
        what: what a setting is called in the unknown-override message (``"ML backend setting"``).
        docs: the document listing the variables, named in conversion errors ("" names none).
        prefix: the prefix of every variable.
        renames: field name -> variable name after the prefix, where it is not the upper-cased field name.
        empty_is_unset: a blank variable leaves the field at its default (and a blank override means None);
            otherwise a blank variable is read as a value (``""`` for a string, an error for a number).
        convert_overrides: overrides (field names -> values, e.g. a test config) are converted like variables
            (``"false"`` -> False, a list -> a tuple); otherwise they are taken as given.
        list_case: field name -> ``"upper"`` or ``"lower"``, the case of that list's items (others keep theirs).
    """

    error: type[Exception]
    what: str = "setting"
    docs: str = ""
    prefix: str = PREFIX
    renames: Mapping[str, str] = field(default_factory=dict)
    empty_is_unset: bool = False
    convert_overrides: bool = False
    list_case: Mapping[str, str] = field(default_factory=dict)

    def env_name(self, field_name: str) -> str:
        """The variable of a field, e.g. ``models_dir`` -> ``VL4POSE_MODELS_DIR``."""
        return self.prefix + self.renames.get(field_name, field_name.upper())

    def convert(self, field_name: str, annotation: Any, raw: Any) -> Any:
        """``raw`` (a variable's text or an override) as the field's type.

        Raises:
            self.error: the text is not a value of that type; the message names the variable and the type.
        """
        kind = field_kind(annotation)
        if kind == "tuple" and isinstance(raw, str) and not raw.strip():
            return ()
        if raw is None or (self.empty_is_unset and isinstance(raw, str) and not raw.strip()):
            return None
        try:
            return self._typed(field_name, kind, raw)
        except (AttributeError, TypeError, ValueError):
            where = f"; see {self.docs}" if self.docs else ""
            raise self.error(
                f"{self.env_name(field_name)}={raw!r} is not a valid {_KIND_WORDS.get(kind, kind)}{where}"
            ) from None

    def _typed(self, field_name: str, kind: str, raw: Any) -> Any:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            word = raw.strip().lower()
            if word not in BOOL_WORDS:
                raise ValueError(raw)
            return BOOL_WORDS[word]
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "tuple":
            items = [str(item).strip() for item in (raw.split(",") if isinstance(raw, str) else list(raw))]
            case = self.list_case.get(field_name)
            items = [item.upper() if case == "upper" else item.lower() if case == "lower" else item
                     for item in items if item]
            return tuple(items)
        return raw if isinstance(raw, str) else str(raw)

    def load(self, cls: type[T], environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> T:
        """``cls`` (a dataclass) from the variables in ``environ``, then ``overrides`` by field name.

        Raises:
            self.error: a variable cannot be converted, or an override names no field.
        """
        known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values: dict[str, Any] = {}
        for name, f in known.items():
            raw = environ.get(self.env_name(name))
            if raw is None or (self.empty_is_unset and not raw.strip()):
                continue
            values[name] = self.convert(name, f.type, raw)
        for name, raw in (overrides or {}).items():
            if name not in known:
                raise self.error(f"unknown {self.what} {name!r}; expected one of {sorted(known)}")
            values[name] = self.convert(name, known[name].type, raw) if self.convert_overrides else raw
        return cls(**values)
