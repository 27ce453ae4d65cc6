"""The schema gate (devstack/schema_compat.py) without a registry: Apache Avro's checker + fastavro.

The registry's own verdict on the same pairs is in tests/integration/test_registry.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from devstack import schema_compat
from devstack.schema_compat import Problem, check_locally, check_pair, current_schemas, released_schemas


def test_every_schema_is_backward_and_forward_compatible_with_its_release() -> None:
    problems = check_locally()
    assert not problems, "\n".join(str(p) for p in problems)


def test_the_release_baseline_comes_from_git() -> None:
    commit = schema_compat.released_commit()
    released = released_schemas(commit)
    assert {"TtsRequest", "TtsResult", "TtsProgress", "WorkerHealth", "DeadLetter"} <= set(released)
    assert released["TtsRequest"]["name"] == "TtsRequest"


def _with_field(schema: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    out["fields"].append(field)
    return out


def _by_checker(problems: list[Problem], direction: str) -> dict[str, str]:
    return {p.checker: p.detail for p in problems if p.direction == direction}


def test_a_new_field_without_default_fails_backward_naming_the_field() -> None:
    released = released_schemas()["TtsRequest"]
    broken = _with_field(current_schemas()["TtsRequest"], {"name": "priority", "type": "int"})
    problems = check_pair("TtsRequest", released, broken, "released")
    backward = _by_checker(problems, "BACKWARD")
    assert set(backward) == {"avro", "fastavro"}, problems
    assert "'priority'" in backward["avro"] and "reader_field_missing_default_value" in backward["avro"]
    assert "priority" in backward["fastavro"]
    assert not _by_checker(problems, "FORWARD")  # old readers skip a field they do not know
    assert "TtsRequest: BACKWARD incompatible" in str(problems[0])
    # ...and the whole gate fails on it.
    current = {**current_schemas(), "TtsRequest": broken}
    assert any(p.schema == "TtsRequest" for p in check_locally(current=current))


def test_removing_a_required_field_fails_forward_naming_it() -> None:
    released = released_schemas()["TtsRequest"]
    new = copy.deepcopy(current_schemas()["TtsRequest"])
    new["fields"] = [f for f in new["fields"] if f["name"] != "voice"]
    problems = check_pair("TtsRequest", released, new, "released")
    forward = _by_checker(problems, "FORWARD")
    assert "'voice'" in forward["avro"] and "voice" in forward["fastavro"]
    assert not _by_checker(problems, "BACKWARD")


def test_a_type_change_inside_an_optional_record_names_the_outer_field() -> None:
    # The Avro checker stops at the nullable union ("model"), it does not name model.model_type.
    released = released_schemas()["TtsResult"]
    new = copy.deepcopy(current_schemas()["TtsResult"])
    model = next(f for f in new["fields"] if f["name"] == "model")
    record = next(t for t in model["type"] if isinstance(t, dict))
    first = record["fields"][0]
    first["type"] = "int" if first["type"] != "int" else "string"
    problems = check_pair("TtsResult", released, new, "released")
    for direction in ("BACKWARD", "FORWARD"):
        found = _by_checker(problems, direction)
        assert "field 'model'" in found["avro"] and "Schema mismatch" in found["fastavro"], problems


@pytest.mark.parametrize("field", [
    {"name": "trace_note", "type": ["null", "string"], "default": None},
    {"name": "retries", "type": "int", "default": 0},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
])
def test_optional_fields_with_defaults_pass(field: dict[str, Any]) -> None:
    released = released_schemas()["TtsProgress"]
    assert check_pair("TtsProgress", released, _with_field(current_schemas()["TtsProgress"], field),
                      "released") == []


def test_a_schema_new_since_the_release_has_nothing_to_break() -> None:
    current = {**current_schemas(), "Brand": {"type": "record", "name": "Brand", "fields": [
        {"name": "x", "type": "int"}]}}
    assert not [p for p in check_locally(current=current) if p.schema == "Brand"]


def test_history_versions_are_still_readable() -> None:
    history = schema_compat.history_schemas()
    current = current_schemas()
    for name, versions in history.items():
        for file, old in versions:
            assert not check_pair(name, old, current[name], file, ("BACKWARD",)), file
