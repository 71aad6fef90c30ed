"""The event models and constants: one per contract type, keys, topics, frozen, UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from schema_examples import KEYS, T0_S, TOPICS, VALID, example

from schemas import (
    MODEL_OF_TYPE,
    TOPIC_OF_TYPE,
    TYPES_OF_TOPIC,
    EventBase,
    IncidentOpened,
    InvoiceReceived,
    key_of,
)

CONTRACT_TYPES = list(VALID)


def test_one_model_per_contract_type_in_contract_order() -> None:
    assert list(MODEL_OF_TYPE) == CONTRACT_TYPES
    assert len(set(MODEL_OF_TYPE.values())) == 19


def test_topic_of_type_matches_the_contract() -> None:
    assert TOPIC_OF_TYPE == TOPICS


def test_types_of_topic_is_the_inverse_of_topic_of_type() -> None:
    assert set(TYPES_OF_TOPIC) == {"invoices", "hiring", "incidents"}
    for topic, types in TYPES_OF_TOPIC.items():
        assert types == {t for t, tp in TOPICS.items() if tp == topic}


@pytest.mark.parametrize("event_type", CONTRACT_TYPES)
def test_key_of_gives_the_contract_message_key(event_type: str) -> None:
    event = MODEL_OF_TYPE[event_type].model_validate(example(event_type))
    assert key_of(event) == KEYS[event_type]


def test_occurred_at_is_utc_and_occurred_at_s_is_epoch_seconds() -> None:
    event = InvoiceReceived.model_validate(
        example("invoice.received", occurred_at="2024-05-01T14:00:00.250+02:00")
    )
    assert event.occurred_at == datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert event.occurred_at_s == T0_S + 0.25


def test_models_are_frozen_and_hashable() -> None:
    event = InvoiceReceived.model_validate(example("invoice.received"))
    with pytest.raises(ValidationError):
        event.amount = 1.0  # type: ignore[misc]
    assert hash(event) == hash(InvoiceReceived.model_validate(example("invoice.received")))


def test_python_callers_may_pass_aware_datetimes_but_not_naive_ones() -> None:
    body = example("service.down")
    aware = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    event = MODEL_OF_TYPE["service.down"].model_validate({**body, "occurred_at": aware})
    assert event.occurred_at_s == T0_S
    with pytest.raises(ValidationError, match="naive"):
        MODEL_OF_TYPE["service.down"].model_validate(
            {**body, "occurred_at": datetime(2024, 5, 1, 12, 0)}  # noqa: DTZ001
        )


def test_keyword_construction_works_for_producers() -> None:
    event = IncidentOpened(
        event_id="e-1",
        type="incident.opened",
        occurred_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        incident_id="INC-1",
        service="web",
        severity="sev1",
        category="outage",
    )
    assert isinstance(event, EventBase)
    assert key_of(event) == "INC-1"


def test_extra_fields_are_not_kept() -> None:
    event = InvoiceReceived.model_validate(example("invoice.received", note="x", tags=[1]))
    assert "note" not in event.model_dump()


def test_python_callers_get_a_validation_error_for_a_huge_int_amount() -> None:
    with pytest.raises(ValidationError, match="amount"):
        InvoiceReceived.model_validate(example("invoice.received", amount=10**400))
