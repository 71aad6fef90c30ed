"""Exported JSON Schemas: valid for 2020-12, accept the valid examples, reject the broken ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from schema_examples import TOPICS, VALID, example, mutated_events, without

from schemas import MODEL_OF_TYPE, decode
from schemas.errors import InvalidEvent
from schemas.export import DECODER_STRICTER, export_json_schemas, main

CONTRACT_TYPES = list(VALID)


@pytest.fixture(scope="module")
def validators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Draft202012Validator]:
    directory = tmp_path_factory.mktemp("json-schemas")
    export_json_schemas(directory)
    result = {}
    for event_type in CONTRACT_TYPES:
        schema = orjson.loads((directory / f"{event_type}.schema.json").read_bytes())
        Draft202012Validator.check_schema(schema)
        result[event_type] = Draft202012Validator(schema)
    return result


def accepts(validators: dict[str, Draft202012Validator], body: dict[str, Any]) -> bool:
    return validators[body["type"]].is_valid(body)


def test_one_file_per_type_plus_index(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path / "out")
    names = [p.name for p in written]
    assert names == [f"{t}.schema.json" for t in CONTRACT_TYPES] + ["index.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)


def test_index_lists_types_topics_keys_and_the_decoder_differences(tmp_path: Path) -> None:
    export_json_schemas(tmp_path)
    index = orjson.loads((tmp_path / "index.json").read_bytes())
    assert [e["type"] for e in index["events"]] == CONTRACT_TYPES
    for entry in index["events"]:
        assert entry["topic"] == TOPICS[entry["type"]]
        assert entry["key"] == MODEL_OF_TYPE[entry["type"]].key_field
        assert (tmp_path / entry["schema"]).is_file()
    assert index["decoder_stricter_than_schema"] == list(DECODER_STRICTER)


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in export_json_schemas(tmp_path / "a")]
    second = [p.read_bytes() for p in export_json_schemas(tmp_path / "b")]
    assert first == second


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("\n") == 20
    assert main([]) == 2


@pytest.mark.parametrize("event_type", CONTRACT_TYPES)
def test_valid_examples_are_accepted(
    validators: dict[str, Draft202012Validator], event_type: str
) -> None:
    assert accepts(validators, example(event_type))
    assert accepts(validators, example(event_type, extra_field={"any": [1]}))


@pytest.mark.parametrize("event_type", CONTRACT_TYPES)
def test_missing_fields_are_rejected(
    validators: dict[str, Draft202012Validator], event_type: str
) -> None:
    for field in ["event_id", "type", "occurred_at", *VALID[event_type]]:
        body = without(event_type, field)
        assert not validators[event_type].is_valid(body), field


# (type, field, value): broken in the same way for the schema and for the decoder.
BROKEN = [
    ("service.up", "type", "service.upp"),
    ("service.up", "event_id", ""),
    ("service.up", "event_id", "x" * 129),
    ("service.up", "event_id", 5),
    ("service.up", "occurred_at", "2024-05-01T12:00:00"),
    ("service.up", "occurred_at", "2024-05-01"),
    ("service.up", "occurred_at", "2024-05-01T12:00:00.Z"),
    ("service.up", "occurred_at", "2024-05-01T12:00:00+0200"),
    ("service.up", "occurred_at", "2024-05-01T24:00:00Z"),
    ("service.up", "occurred_at", 1714564800),
    ("service.up", "service", "all"),
    ("service.up", "service", "Billing"),
    ("service.up", "service", "-x"),
    ("service.up", "service", "x" * 64),
    ("ticket.opened", "queue", "a b"),
    ("employee.hired", "department", ""),
    ("invoice.approved", "invoice_id", 42),
    ("invoice.approved", "invoice_id", ""),
    ("invoice.approved", "invoice_id", "x" * 129),
    ("invoice.approved", "invoice_id", "a\tb"),
    ("invoice.approved", "invoice_id", "a\x85b"),
    ("invoice.paid", "amount", 0),
    ("invoice.paid", "amount", -1),
    ("invoice.paid", "amount", 1000000000001),
    ("invoice.paid", "amount", True),
    ("invoice.paid", "amount", None),
    ("invoice.paid", "amount", "-5"),
    ("invoice.paid", "amount", "NaN"),
    ("invoice.paid", "amount", " 5"),
    ("invoice.paid", "amount", "1_000"),
    ("invoice.paid", "amount", "0x10"),
    ("invoice.paid", "amount", "-0"),
    ("training.completed", "cost", "inf"),
    ("invoice.received", "currency", "usd"),
    ("invoice.received", "currency", "USDX"),
    ("invoice.issued", "currency", 840),
    ("invoice.received", "reporting_amount", 0),
    ("invoice.issued", "reporting_amount", "-5"),
    ("training.completed", "reporting_amount", True),
    ("survey.submitted", "score", 11),
    ("survey.submitted", "score", -1),
    ("survey.submitted", "score", True),
    ("survey.submitted", "score", 7.5),
    ("survey.submitted", "score", "7"),
    ("employee.left", "voluntary", 1),
    ("employee.left", "voluntary", "true"),
    ("incident.opened", "severity", "SEV1"),
    ("incident.opened", "category", "bug"),
    ("ticket.opened", "priority", "p5"),
    ("invoice.rejected", "reason", 3),
]


@pytest.mark.parametrize(("event_type", "field", "value"), BROKEN)
def test_broken_events_are_rejected_by_schema_and_decoder(
    validators: dict[str, Draft202012Validator], event_type: str, field: str, value: object
) -> None:
    body = example(event_type, **{field: value})
    assert not validators[event_type].is_valid(body)
    with pytest.raises(InvalidEvent) as info:
        decode(orjson.dumps(body), topic=TOPICS[event_type], currency="USD")
    # A string that is not a currency code is the reason "currency" (SPEC section 1).
    if field == "currency" and isinstance(value, str):
        assert info.value.reason == "currency"
    else:
        assert info.value.reason in {"schema", "unknown_type"}


@pytest.mark.parametrize("event_type", [t for t in CONTRACT_TYPES if "currency" in VALID[t]])
def test_priced_types_have_an_optional_reporting_amount(
    validators: dict[str, Draft202012Validator], event_type: str
) -> None:
    schema = validators[event_type].schema
    assert "reporting_amount" in schema["properties"]
    assert "reporting_amount" not in schema["required"]
    for value in (1080.5, "1080.50", None):
        body = example(event_type, currency="EUR", reporting_amount=value)
        assert accepts(validators, body)
    foreign = example(event_type, currency="EUR", reporting_amount="1080.50")
    assert decode(orjson.dumps(foreign), topic=TOPICS[event_type], currency="USD")


# What DECODER_STRICTER documents: the schema accepts it, the decoder does not.
STRICTER_IN_DECODER = [
    (example("invoice.received", currency="EUR"), "invoices", "currency"),
    (example("training.completed", currency="EUR", reporting_amount=None), "hiring", "currency"),
    (example("ticket.opened"), "invoices", "unknown_type"),
    (example("invoice.approved", invoice_id="a\u200bb"), "invoices", "schema"),
    (example("service.up", occurred_at="2023-02-29T12:00:00Z"), "incidents", "schema"),
    (example("invoice.paid", amount="0"), "invoices", "schema"),
    (example("invoice.paid", amount="1e13"), "invoices", "schema"),
    (example("survey.submitted", score=7.0), "hiring", "schema"),
]


@pytest.mark.parametrize(("body", "topic", "reason"), STRICTER_IN_DECODER)
def test_documented_differences_hold(
    validators: dict[str, Draft202012Validator], body: dict[str, Any], topic: str, reason: str
) -> None:
    assert accepts(validators, body)
    with pytest.raises(InvalidEvent) as info:
        decode(orjson.dumps(body), topic=topic, currency="USD")
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_events())
def test_whatever_the_decoder_accepts_the_schema_accepts(
    validators: dict[str, Draft202012Validator], case: tuple[dict[str, Any], str]
) -> None:
    body, topic = case
    try:
        decode(orjson.dumps(body), topic=topic, currency="USD")
    except InvalidEvent:
        return
    assert accepts(validators, body)
