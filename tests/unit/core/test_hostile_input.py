"""Hostile input never crashes the engine, and every message is accounted for.

Random bytes, truncated and mutated valid events, huge and deeply nested documents and odd
unicode, interleaved with valid events: each message is applied, dropped as a duplicate or
dead-lettered with one of the contract's reasons, and nothing raises.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.engine import Engine
from streams.core.records import Message

NOW = 1_800_000_000.0
REASONS = {
    "invalid_json",
    "schema",
    "unknown_type",
    "currency",
    "unknown_entity",
    "invalid_transition",
    "future",
    "late",
    "cardinality",
}
VALID = [
    {
        "event_id": "v1",
        "type": "invoice.received",
        "occurred_at": "2026-01-01T00:00:00Z",
        "invoice_id": "i1",
        "amount": 10,
        "currency": "USD",
        "department": "finance",
        "vendor_id": "v",
    },
    {
        "event_id": "v2",
        "type": "invoice.approved",
        "occurred_at": "2026-01-01T01:00:00+01:00",
        "invoice_id": "i1",
    },
    {
        "event_id": "v3",
        "type": "survey.submitted",
        "occurred_at": "2026-01-01T00:10:00Z",
        "response_id": "r",
        "department": "hr",
        "score": 9,
    },
    {
        "event_id": "v4",
        "type": "service.down",
        "occurred_at": "2026-01-01T00:20:00Z",
        "service": "erp",
    },
]
TOPIC_OF = {"invoice": "invoices", "survey": "hiring", "service": "incidents"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    base = orjson.dumps(draw(st.sampled_from(VALID)))
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:  # truncated
        return base[: draw(st.integers(0, len(base)))]
    if kind == 2:  # one byte flipped
        i = draw(st.integers(0, len(base) - 1))
        return base[:i] + bytes([draw(st.integers(0, 255))]) + base[i + 1 :]
    if kind == 3:  # a field replaced by any JSON value
        doc = dict(draw(st.sampled_from(VALID)))
        doc[draw(st.sampled_from(sorted(doc)))] = draw(json_values)
        return orjson.dumps(doc)
    if kind == 4:  # deep nesting
        depth = draw(st.integers(100, 3000))
        return b"[" * depth + b"]" * depth
    if kind == 5:  # huge
        return orjson.dumps({**VALID[0], "vendor_id": "x" * draw(st.integers(10_000, 2_000_000))})
    if kind == 6:  # odd unicode in ids and dimensions
        doc = dict(VALID[2])
        doc["department"] = draw(st.text(min_size=1, max_size=10))
        doc["response_id"] = draw(st.text(min_size=0, max_size=140))
        return orjson.dumps(doc)
    return base


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(hostile(), min_size=1, max_size=30),
    topic=st.sampled_from(["invoices", "hiring", "incidents"]),
)
def test_every_hostile_message_is_applied_dropped_or_dead_lettered(
    payloads: list[bytes], topic: str
) -> None:
    engine = Engine(
        partitions={"invoices": 1, "hiring": 1, "incidents": 1},
        grace_s=3600,
        currency="USD",
        clock=lambda: NOW,
    )
    messages = [Message(topic, 0, i, raw) for i, raw in enumerate(payloads)]
    result = engine.process(messages)
    applied = sum(result.applied.values())
    dead = len(result.dead_letters)
    duplicates = sum(result.duplicates.values())
    assert applied + dead + duplicates == len(messages)
    assert {d.reason for d in result.dead_letters} <= REASONS
    for d in result.dead_letters:
        assert "\n" not in d.detail
