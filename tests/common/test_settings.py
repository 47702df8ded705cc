"""The shared settings reader (common.settings): types from annotations, both readings of an empty variable,
renamed variables, list case, and errors that name the variable (the services' own settings tests are in
tests/backend/test_coord_config_and_schema.py and tests/ml_backend/test_ml_config.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from common.settings import EnvReader, field_kind


class Refused(ValueError):
    pass


@dataclass(frozen=True)
class Sample:
    name: str = "default"
    count: int = 3
    rate: float = 0.5
    enabled: bool = True
    folder: Path = Path("storage")
    hosts: tuple[str, ...] = ()
    token: str | None = None


def test_annotations_are_read_as_kinds():
    assert [field_kind(k) for k in ("str", "int | None", "float", "bool", "Path", "tuple[str, ...]", "dict")] == [
        "str", "int", "float", "bool", "Path", "tuple", "str"]
    assert field_kind(int) == "int" and field_kind(Path) == "Path"


def test_variables_are_converted_to_the_field_types():
    reader = EnvReader(error=Refused, renames={"token": "SAMPLE_TOKEN"}, list_case={"hosts": "lower"})
    got = reader.load(Sample, {"VL4POSE_NAME": "x", "VL4POSE_COUNT": " 7 ", "VL4POSE_RATE": "2.5",
                               "VL4POSE_ENABLED": "Off", "VL4POSE_FOLDER": "/srv", "VL4POSE_HOSTS": "A.lan, ,b",
                               "VL4POSE_SAMPLE_TOKEN": "t", "VL4POSE_TOKEN": "ignored", "OTHER_COUNT": "9"})
    assert got == Sample("x", 7, 2.5, False, Path("/srv"), ("a.lan", "b"), "t")
    assert reader.env_name("token") == "VL4POSE_SAMPLE_TOKEN" and reader.env_name("count") == "VL4POSE_COUNT"


def test_an_empty_variable_is_a_value_or_unset_as_the_reader_says():
    environ = {"VL4POSE_NAME": "", "VL4POSE_HOSTS": " "}
    assert EnvReader(error=Refused).load(Sample, environ) == Sample(name="", hosts=())
    assert EnvReader(error=Refused, empty_is_unset=True).load(Sample, environ) == Sample()
    with pytest.raises(Refused, match="VL4POSE_COUNT='' is not a valid int"):
        EnvReader(error=Refused).load(Sample, {"VL4POSE_COUNT": ""})
    assert EnvReader(error=Refused, empty_is_unset=True).load(Sample, {"VL4POSE_COUNT": ""}).count == 3


def test_overrides_are_taken_as_given_or_converted():
    assert EnvReader(error=Refused).load(Sample, {}, {"enabled": "no", "count": 4}) == Sample(enabled="no", count=4)
    reader = EnvReader(error=Refused, convert_overrides=True, empty_is_unset=True, list_case={"hosts": "upper"})
    got = reader.load(Sample, {"VL4POSE_COUNT": "5"}, {"enabled": "no", "hosts": ["a", "b"], "token": ""})
    assert got == Sample(count=5, enabled=False, hosts=("A", "B"), token=None)


@pytest.mark.parametrize("environ,message", [
    ({"VL4POSE_COUNT": "many"}, "VL4POSE_COUNT='many' is not a valid int; see docs/X.md"),
    ({"VL4POSE_RATE": "fast"}, "VL4POSE_RATE='fast' is not a valid float; see docs/X.md"),
    ({"VL4POSE_ENABLED": "perhaps"}, "VL4POSE_ENABLED='perhaps' is not a valid bool (true/false, yes/no, on/off"),
])
def test_bad_values_name_the_variable_the_type_and_the_document(environ, message):
    with pytest.raises(Refused) as caught:
        EnvReader(error=Refused, docs="docs/X.md").load(Sample, environ)
    assert str(caught.value).startswith(message)


def test_an_unknown_override_is_refused_with_the_known_names():
    with pytest.raises(Refused, match=r"unknown sample setting 'cuont'; expected one of \['count', 'enabled'"):
        EnvReader(error=Refused, what="sample setting").load(Sample, {}, {"cuont": 1})
