"""Hypothesis: ``decode`` raises only ``InvalidEvent`` for any bytes; what it accepts is sound."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from schema_examples import TOPICS, VALID, example, json_values, mutated_events

from schemas import MODEL_OF_TYPE, EventBase, decode, key_of
from schemas.errors import InvalidEvent

REASONS = {"invalid_json", "schema", "unknown_type", "currency"}
TOPIC_NAMES = ["invoices", "hiring", "incidents"]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def note_outcome(outcome: str) -> None:
    # Shown by --hypothesis-show-statistics, to see that every outcome is reached.
    if currently_in_test_context():
        event(outcome)


def check(payload: bytes, topic: str, currency: str = "USD") -> EventBase | None:
    """Decode; on failure check the error's shape, on success the event's invariants."""
    try:
        decoded = decode(payload, topic=topic, currency=currency)
    except InvalidEvent as exc:
        note_outcome(exc.reason)
        assert exc.reason in REASONS
        assert isinstance(exc.detail, str)
        assert exc.detail
        assert "\n" not in exc.detail
        return None
    note_outcome("accepted")
    assert type(decoded) is MODEL_OF_TYPE[decoded.type]
    assert TOPICS[decoded.type] == topic
    assert decoded.occurred_at.tzinfo is UTC
    key = key_of(decoded)
    assert isinstance(key, str)
    assert 0 < len(key) <= 128
    for field in ("amount", "cost"):
        if hasattr(decoded, field):
            assert 0 < getattr(decoded, field) <= 1e12
    if hasattr(decoded, "currency"):
        assert decoded.currency == currency
    # What was accepted survives its own JSON form unchanged.
    assert decode(decoded.model_dump_json().encode(), topic=topic, currency=currency) == decoded
    return decoded


@FUZZ
@given(payload=st.binary(max_size=300), topic=st.sampled_from(TOPIC_NAMES))
def test_arbitrary_bytes(payload: bytes, topic: str) -> None:
    check(payload, topic)


@FUZZ
@given(value=json_values, topic=st.sampled_from(TOPIC_NAMES))
def test_arbitrary_json_values(value: Any, topic: str) -> None:
    check(orjson.dumps(value), topic)


@FUZZ
@given(case=mutated_events())
def test_mutated_events(case: tuple[dict[str, Any], str]) -> None:
    body, topic = case
    check(orjson.dumps(body), topic)


@FUZZ
@given(
    event_type=st.sampled_from(list(VALID)),
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.sampled_from(["flip", "insert", "delete"]),
            st.binary(min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_byte_level_mutations_of_valid_events(
    event_type: str, edits: list[tuple[int, str, bytes]]
) -> None:
    payload = bytearray(orjson.dumps(example(event_type)))
    for position, op, data in edits:
        at = position % (len(payload) + 1)
        if op == "insert":
            payload[at:at] = data
        elif op == "delete":
            del payload[at : at + len(data)]
        elif at < len(payload):
            payload[at] ^= data[0]
    check(bytes(payload), TOPICS[event_type])


@FUZZ
@given(depth=st.integers(min_value=1, max_value=5000), opener=st.sampled_from([b"[", b'{"a":']))
def test_deep_nesting(depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    check(opener * depth + b"1" + closer * depth, "invoices")
    check(b'{"type":"service.up","x":' + opener * depth + b"1" + closer * depth + b"}", "incidents")


def test_huge_inputs() -> None:
    big = "9" * 100_000
    for payload in [
        b'{"score":' + big.encode() + b"}",
        orjson.dumps(example("invoice.paid", amount=big)),
        orjson.dumps(example("invoice.paid", amount="0." + big)),
        orjson.dumps(example("invoice.paid", invoice_id=big)),
        orjson.dumps(example("service.up", occurred_at="2024-05-01T12:00:00." + big + "Z")),
        orjson.dumps(example("service.up", type=big)),
    ]:
        check(payload, "invoices")
        check(payload, "incidents")
