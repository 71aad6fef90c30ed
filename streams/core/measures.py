"""Lifecycle rules: what each applied event does to its entity and which KPI parts it feeds.

``apply_event`` is the only place that knows the event types. It checks the entity's
lifecycle (raising ``InvalidEvent`` with ``unknown_entity`` or ``invalid_transition``),
updates the entity in the partition state and returns the contributions: one per KPI the
event feeds, as a parts delta plus a balance delta, in the event's (completing) time.
"""

from __future__ import annotations

import heapq
from collections.abc import Container
from dataclasses import dataclass
from sys import intern
from typing import Any

from schemas.errors import InvalidEvent
from streams.catalog import KPIS
from streams.core.state import PartitionState

#: Payments may exceed the outstanding amount by this much (float noise, micro-units).
AMOUNT_TOLERANCE = 1e-6
#: An entity in a final state (``_complete``) is forgotten once its partition's watermark
#: is this far past its completing event: as the duplicate horizon, 7 days of event time.
#: Without it every invoice, ticket and incident ever seen would stay in memory.
ENTITY_RETENTION_S = 7 * 86400.0
#: Every KPI of the catalog (an unrestricted worker).
ALL_KPIS: frozenset[str] = frozenset(KPIS)


# Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, which
# doubled the cost of building the one to three contributions of every event.
@dataclass(slots=True)
class Contribution:
    """What one event adds to one KPI: parts delta and balance delta, at time ``t``."""

    kpi: str
    scope: str
    t: float
    parts: tuple[float, ...]
    balance: float = 0.0


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A ``service.down`` / ``service.up`` event for the uptime timelines."""

    service: str
    t: float
    is_down: bool


def _unknown(kind: str, entity_id: str) -> InvalidEvent:
    return InvalidEvent("unknown_entity", f"{kind} {entity_id!r} was never started")


def _invalid(detail: str) -> InvalidEvent:
    return InvalidEvent("invalid_transition", detail)


def _retired(entity: dict[str, Any], state: PartitionState) -> bool:
    """Whether a final entity is past retention (gone, whether or not swept yet)."""
    done = entity.get("z")
    return done is not None and done < state.watermark - ENTITY_RETENTION_S


def _entity(state: PartitionState, key: str, kind: str, entity_id: str) -> dict[str, Any]:
    entity: dict[str, Any] | None = state.data.get(key)
    if entity is None or _retired(entity, state):
        raise _unknown(kind, entity_id)
    return entity


def _start_new(state: PartitionState, key: str, kind: str, entity_id: str, value: Any) -> None:
    existing: dict[str, Any] | None = state.data.get(key)
    if existing is not None and not _retired(existing, state):
        msg = f"{kind} {entity_id!r} was already started"
        raise _invalid(msg)
    state.put(key, value)


def _complete(state: PartitionState, key: str, entity: dict[str, Any], t: float) -> None:
    """Mark a (touched) entity final at ``t``: no event can change it any more."""
    entity["z"] = t
    heapq.heappush(state.retiring, (t, key))


def _not_before_start(entity: dict[str, Any], t: float, kind: str, entity_id: str) -> float:
    duration = t - float(entity["t"])
    if duration < 0:
        msg = f"{kind} {entity_id!r}: occurred_at is before its start event"
        raise _invalid(msg)
    return duration


def _finish(
    state: PartitionState, key: str, kind: str, entity_id: str, t: float, flag: str, already: str
) -> tuple[dict[str, Any], float]:
    """The event that finishes an entity, once: its entity and the time since its start.

    A second one is an ``invalid_transition`` (``"<kind> '<id>' <already>"``).
    """
    entity = _entity(state, key, kind, entity_id)
    if entity.get(flag):
        msg = f"{kind} {entity_id!r} {already}"
        raise _invalid(msg)
    duration = _not_before_start(entity, t, kind, entity_id)
    state.touch(key)
    entity[flag] = True
    _complete(state, key, entity, t)
    return entity, duration


def apply_event(
    state: PartitionState, event: Any, t: float, kpis: Container[str] = ALL_KPIS
) -> tuple[list[Contribution], StatusChange | None]:
    """Apply one valid, new, on-time event; raise ``InvalidEvent`` on a lifecycle violation.

    The state is only changed when the event is applied (all checks come first). Only
    contributions to ``kpis`` are returned (a worker restricted by KPI_ONLY_KPIS feeds no
    other); the lifecycle is kept whole whatever ``kpis`` is, because it decides which
    events are applied, and so the watermark, the duplicates and the dead letters.
    """
    kind: str = event.type
    handler = _HANDLERS[kind]
    return handler(state, event, t, kpis)


# -- invoices ----------------------------------------------------------------------------


def _invoice_received(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|inv|{e.invoice_id}"
    _start_new(
        state,
        key,
        "invoice",
        e.invoice_id,
        {"k": "ap", "s": "received", "a": e.amount, "d": intern(e.department), "t": t, "paid": 0.0},
    )
    if "ap_turnover" not in kpis:
        return [], None
    return [Contribution("ap_turnover", e.department, t, (e.amount, 1.0), e.amount)], None


def _decision(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|inv|{e.invoice_id}"
    inv = _entity(state, key, "invoice", e.invoice_id)
    if inv["k"] != "ap":
        msg = f"invoice {e.invoice_id!r} is a customer invoice, not an AP invoice"
        raise _invalid(msg)
    if inv["s"] != "received":
        msg = f"invoice {e.invoice_id!r} was already {inv['s']}"
        raise _invalid(msg)
    duration = _not_before_start(inv, t, "invoice", e.invoice_id)
    rejected = e.type == "invoice.rejected"
    state.touch(key)
    inv["s"] = "rejected" if rejected else "approved"
    if rejected:
        _complete(state, key, inv, t)
    dept = inv["d"]
    out = []
    if "invoice_processing_time" in kpis:
        out.append(Contribution("invoice_processing_time", dept, t, (duration, 1.0)))
    if "invoice_error_rate" in kpis:
        out.append(Contribution("invoice_error_rate", dept, t, (1.0 if rejected else 0.0, 1.0)))
    if rejected and "ap_turnover" in kpis:
        out.append(Contribution("ap_turnover", dept, t, (0.0, 1.0), -inv["a"]))
    return out, None


def _payment(state: PartitionState, e: Any, t: float, kpis: Container[str], *, ap: bool) -> _Result:
    key = f"e|inv|{e.invoice_id}"
    inv = _entity(state, key, "invoice", e.invoice_id)
    if ap:
        if inv["k"] != "ap":
            msg = f"invoice {e.invoice_id!r} is a customer invoice, not an AP invoice"
            raise _invalid(msg)
        if inv["s"] != "approved":
            msg = f"invoice {e.invoice_id!r} is {inv['s']}, not approved"
            raise _invalid(msg)
    elif inv["k"] != "ar":
        msg = f"invoice {e.invoice_id!r} is an AP invoice, not a customer invoice"
        raise _invalid(msg)
    _not_before_start(inv, t, "invoice", e.invoice_id)
    outstanding = inv["a"] - inv["paid"]
    if e.amount > outstanding + AMOUNT_TOLERANCE:
        msg = f"invoice {e.invoice_id!r}: payment {e.amount} exceeds outstanding {outstanding}"
        raise _invalid(msg)
    state.touch(key)
    inv["paid"] += e.amount
    if inv["a"] - inv["paid"] <= AMOUNT_TOLERANCE:
        _complete(state, key, inv, t)  # paid in full
    if ap:
        if "ap_turnover" not in kpis:
            return [], None
        return [Contribution("ap_turnover", inv["d"], t, (0.0, 1.0), -e.amount)], None
    if "dso" not in kpis:
        return [], None
    return [Contribution("dso", inv["d"], t, (0.0, 1.0), -e.amount)], None


def _invoice_paid(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    return _payment(state, e, t, kpis, ap=True)


def _payment_received(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    return _payment(state, e, t, kpis, ap=False)


def _invoice_issued(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|inv|{e.invoice_id}"
    _start_new(
        state,
        key,
        "invoice",
        e.invoice_id,
        {"k": "ar", "a": e.amount, "d": intern(e.department), "t": t, "paid": 0.0},
    )
    if "dso" not in kpis:
        return [], None
    return [Contribution("dso", e.department, t, (e.amount, 1.0), e.amount)], None


# -- hiring ------------------------------------------------------------------------------


def _requisition_opened(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|req|{e.requisition_id}"
    _start_new(state, key, "requisition", e.requisition_id, {"d": intern(e.department), "t": t})
    return [], None


def _offer_accepted(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|req|{e.requisition_id}"
    req, duration = _finish(
        state, key, "requisition", e.requisition_id, t, "filled", "was already filled"
    )
    if "time_to_hire" not in kpis:
        return [], None
    return [Contribution("time_to_hire", req["d"], t, (duration, 1.0))], None


def _employee_hired(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|emp|{e.employee_id}"
    _start_new(state, key, "employee", e.employee_id, {"d": intern(e.department), "t": t})
    if "employee_turnover_rate" not in kpis:
        return [], None
    return [Contribution("employee_turnover_rate", e.department, t, (0.0, 1.0), 1.0)], None


def _employee_left(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|emp|{e.employee_id}"
    emp, _ = _finish(state, key, "employee", e.employee_id, t, "left", "has already left")
    if "employee_turnover_rate" not in kpis:
        return [], None
    return [Contribution("employee_turnover_rate", emp["d"], t, (1.0, 1.0), -1.0)], None


def _survey(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    score = e.score
    out = []
    if "employee_satisfaction" in kpis:
        out.append(Contribution("employee_satisfaction", e.department, t, (float(score), 1.0)))
    if "enps" in kpis:
        promoter = 1.0 if score >= 9 else 0.0
        detractor = 1.0 if score <= 6 else 0.0
        out.append(Contribution("enps", e.department, t, (promoter, detractor, 1.0)))
    return out, None


def _training(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    if "training_cost" not in kpis:
        return [], None
    return [Contribution("training_cost", e.department, t, (e.cost, 1.0))], None


# -- incidents ---------------------------------------------------------------------------


def _incident_opened(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|inc|{e.incident_id}"
    _start_new(state, key, "incident", e.incident_id, {"svc": intern(e.service), "t": t})
    if e.category == "security":
        if "security_incidents" not in kpis:
            return [], None
        return [Contribution("security_incidents", e.service, t, (1.0,))], None
    return [], None


def _incident_acknowledged(
    state: PartitionState, e: Any, t: float, kpis: Container[str]
) -> _Result:
    key = f"e|inc|{e.incident_id}"
    inc = _entity(state, key, "incident", e.incident_id)
    if inc.get("ack") or inc.get("res"):
        what = "resolved" if inc.get("res") else "acknowledged"
        msg = f"incident {e.incident_id!r} was already {what}"
        raise _invalid(msg)
    duration = _not_before_start(inc, t, "incident", e.incident_id)
    state.touch(key)
    inc["ack"] = True
    if "incident_response_time" not in kpis:
        return [], None
    return [Contribution("incident_response_time", inc["svc"], t, (duration, 1.0))], None


def _incident_resolved(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|inc|{e.incident_id}"
    inc, duration = _finish(state, key, "incident", e.incident_id, t, "res", "was already resolved")
    if "incident_resolution_time" not in kpis:
        return [], None
    return [Contribution("incident_resolution_time", inc["svc"], t, (duration, 1.0))], None


def _ticket_opened(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|tkt|{e.ticket_id}"
    _start_new(state, key, "ticket", e.ticket_id, {"q": intern(e.queue), "t": t})
    return [], None


def _ticket_resolved(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    key = f"e|tkt|{e.ticket_id}"
    tkt, duration = _finish(state, key, "ticket", e.ticket_id, t, "res", "was already resolved")
    if "ticket_resolution_time" not in kpis:
        return [], None
    return [Contribution("ticket_resolution_time", tkt["q"], t, (duration, 1.0))], None


def _service_status(state: PartitionState, e: Any, t: float, kpis: Container[str]) -> _Result:
    return [], StatusChange(e.service, t, e.type == "service.down")


_Result = tuple[list[Contribution], StatusChange | None]

_HANDLERS = {
    "invoice.received": _invoice_received,
    "invoice.approved": _decision,
    "invoice.rejected": _decision,
    "invoice.paid": _invoice_paid,
    "invoice.issued": _invoice_issued,
    "payment.received": _payment_received,
    "requisition.opened": _requisition_opened,
    "offer.accepted": _offer_accepted,
    "employee.hired": _employee_hired,
    "employee.left": _employee_left,
    "survey.submitted": _survey,
    "training.completed": _training,
    "incident.opened": _incident_opened,
    "incident.acknowledged": _incident_acknowledged,
    "incident.resolved": _incident_resolved,
    "ticket.opened": _ticket_opened,
    "ticket.resolved": _ticket_resolved,
    "service.down": _service_status,
    "service.up": _service_status,
}
