"""Valid examples and hypothesis strategies shared by the schema tests (not a test module)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

T0 = "2024-05-01T12:00:00Z"
#: 2024-05-01T12:00:00Z as Unix seconds.
T0_S = 1714564800.0

VALID: dict[str, dict[str, Any]] = {
    "invoice.received": {
        "invoice_id": "INV-1",
        "amount": 1250.5,
        "currency": "USD",
        "department": "finance",
        "vendor_id": "V-1",
    },
    "invoice.approved": {"invoice_id": "INV-1"},
    "invoice.rejected": {"invoice_id": "INV-1", "reason": "wrong VAT number"},
    "invoice.paid": {"invoice_id": "INV-1", "amount": "1250.50"},
    "invoice.issued": {
        "invoice_id": "AR-7",
        "amount": 99,
        "currency": "USD",
        "department": "sales",
        "customer_id": "C-3",
    },
    "payment.received": {"invoice_id": "AR-7", "amount": 40.25},
    "requisition.opened": {"requisition_id": "REQ-1", "department": "engineering"},
    "offer.accepted": {"requisition_id": "REQ-1", "candidate_id": "CAND-9"},
    "employee.hired": {"employee_id": "E-1", "department": "engineering"},
    "employee.left": {"employee_id": "E-1", "voluntary": True},
    "survey.submitted": {"response_id": "R-1", "department": "support", "score": 9},
    "training.completed": {
        "training_id": "TR-1",
        "employee_id": "E-1",
        "department": "engineering",
        "cost": "800",
        "currency": "USD",
    },
    "incident.opened": {
        "incident_id": "INC-1",
        "service": "billing-api",
        "severity": "sev2",
        "category": "security",
    },
    "incident.acknowledged": {"incident_id": "INC-1"},
    "incident.resolved": {"incident_id": "INC-1"},
    "ticket.opened": {"ticket_id": "T-1", "queue": "it_helpdesk", "priority": "p3"},
    "ticket.resolved": {"ticket_id": "T-1"},
    "service.down": {"service": "billing-api"},
    "service.up": {"service": "billing-api"},
}

#: The message key the contract gives each example.
KEYS: dict[str, str] = {
    "invoice.received": "INV-1",
    "invoice.approved": "INV-1",
    "invoice.rejected": "INV-1",
    "invoice.paid": "INV-1",
    "invoice.issued": "AR-7",
    "payment.received": "AR-7",
    "requisition.opened": "REQ-1",
    "offer.accepted": "REQ-1",
    "employee.hired": "E-1",
    "employee.left": "E-1",
    "survey.submitted": "R-1",
    "training.completed": "TR-1",
    "incident.opened": "INC-1",
    "incident.acknowledged": "INC-1",
    "incident.resolved": "INC-1",
    "ticket.opened": "T-1",
    "ticket.resolved": "T-1",
    "service.down": "billing-api",
    "service.up": "billing-api",
}

_TOPIC_NAMES = ["invoices", "hiring", "incidents"]
TOPICS: dict[str, str] = {
    name: ("invoices" if i < 6 else "hiring" if i < 12 else "incidents")
    for i, name in enumerate(VALID)
}


def example(event_type: str, **changes: Any) -> dict[str, Any]:
    """A valid event of ``event_type`` as a dict; ``changes`` override or add fields."""
    body: dict[str, Any] = {"event_id": f"ev-{event_type}", "type": event_type, "occurred_at": T0}
    body.update(VALID[event_type])
    body.update(changes)
    return body


def without(event_type: str, field: str) -> dict[str, Any]:
    """A valid event of ``event_type`` with ``field`` removed."""
    body = example(event_type)
    del body[field]
    return body


def raw(body: object) -> bytes:
    """JSON bytes of ``body``."""
    return orjson.dumps(body)


# Every JSON value orjson can write: ints within 64 bits, finite floats, surrogate-free text.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    # Values close to the rules, so that mutations often land near a boundary.
    | st.sampled_from(
        ["all", "", "USD", "EUR", "sev1", "p1", "1e400", "NaN", "2024-05-01", "0", "1e12", "-1"]
    )
    | st.sampled_from([0, 10, 11, -1, 1e12, 1e12 + 1, 7.0, 1714564800])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    sorted(
        {f for body in VALID.values() for f in body}
        | {"event_id", "type", "occurred_at", "reporting_amount"}
    )
) | st.text(max_size=8)


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid event with a few fields removed, replaced or added, and the topic to send it on."""
    event_type = draw(st.sampled_from(list(VALID)))
    body = example(event_type)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["drop", "set", "retype"]))
        if action == "drop" and body:
            del body[draw(st.sampled_from(sorted(body)))]
        elif action == "set":
            body[draw(field_names)] = draw(json_values)
        else:
            body["type"] = draw(st.sampled_from(list(VALID)))
    topic = draw(st.sampled_from([TOPICS[event_type], *_TOPIC_NAMES]))
    return body, topic
