"""Entity lifecycles: what each event type does to its entity, checked before it is applied.

``apply_event`` is the only place that knows the lifecycle of invoices, requisitions,
employees, incidents and tickets. It checks the event against its entity (raising
``InvalidEvent`` with ``unknown_entity`` or ``invalid_transition``), updates the entity in
the partition state and returns the ``Fact`` the KPIs fed by the event measure from
(``streams/kpis/``). Events without an entity (surveys, trainings, service status) only
yield their scope (and a training its cost).

Money in a ``Fact`` is in the reporting currency. A foreign invoice (one whose decoded event
had a ``reporting_amount``) keeps that booked amount as ``r`` beside its own ``a`` and
``paid``; an invoice without ``r`` (every reporting-currency invoice, and any state written
before currencies existed) is in the reporting currency. Limits are checked in the
invoice's own currency.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from sys import intern
from typing import Any

from schemas import events as ev
from schemas.errors import InvalidEvent
from streams.core import keys
from streams.core.state import PartitionState
from streams.kpis.fact import Fact

#: Payments may exceed the outstanding amount by this much (float noise, micro-units).
AMOUNT_TOLERANCE = 1e-6
#: An entity in a final state (``_complete``) is forgotten once its partition's watermark
#: is this far past its completing event: as the duplicate horizon, 7 days of event time.
#: Without it every invoice, ticket and incident ever seen would stay in memory.
ENTITY_RETENTION_S = 7 * 86400.0


def _unknown(kind: str, entity_id: str) -> InvalidEvent:
    return InvalidEvent("unknown_entity", f"{kind} {entity_id!r} was never started")


def _invalid(detail: str) -> InvalidEvent:
    return InvalidEvent("invalid_transition", detail)


def _retired(entity: dict[str, Any], state: PartitionState) -> bool:
    """Whether a final entity is past retention (gone, whether or not swept yet)."""
    done = entity.get("z")
    return done is not None and done < state.watermark - ENTITY_RETENTION_S


def _check(state: PartitionState, key: str, kind: str, entity_id: str) -> dict[str, Any]:
    """The live entity, for the checks (not to be changed: see ``_edit``)."""
    entity: dict[str, Any] | None = state.get(key)
    if entity is None or _retired(entity, state):
        raise _unknown(kind, entity_id)
    return entity


def _edit(state: PartitionState, key: str) -> dict[str, Any]:
    """The entity, to be changed by this event (once every check passed)."""
    entity: dict[str, Any] = state.edit(key)
    return entity


def _start_new(state: PartitionState, key: str, kind: str, entity_id: str, value: Any) -> None:
    existing: dict[str, Any] | None = state.get(key)
    if existing is not None and not _retired(existing, state):
        msg = f"{kind} {entity_id!r} was already started"
        raise _invalid(msg)
    state.put(key, value)


def _complete(state: PartitionState, key: str, entity: dict[str, Any], t: float) -> None:
    """Mark an entity (being edited) final at ``t``: no event can change it any more."""
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
    entity = _check(state, key, kind, entity_id)
    if entity.get(flag):
        msg = f"{kind} {entity_id!r} {already}"
        raise _invalid(msg)
    duration = _not_before_start(entity, t, kind, entity_id)
    entity = _edit(state, key)
    entity[flag] = True
    _complete(state, key, entity, t)
    return entity, duration


def apply_event(state: PartitionState, event: Any, t: float) -> Fact:
    """Apply one valid, new, on-time event's lifecycle; raise ``InvalidEvent`` if it breaks it.

    The state is only changed when the event is applied (all checks come first). The
    lifecycle is kept whole whatever KPIs a worker computes, because it decides which
    events are applied, and so the watermark, the duplicates and the dead letters.
    """
    kind: str = event.type
    handler = _HANDLERS[kind]
    return handler(state, event, t)


# -- invoices ----------------------------------------------------------------------------


def _invoice_received(state: PartitionState, e: ev.InvoiceReceived, t: float) -> Fact:
    key = keys.entity(keys.INVOICE, e.invoice_id)
    department = intern(e.department)
    invoice: dict[str, Any] = {
        "k": "ap",
        "s": "received",
        "a": e.amount,
        "d": department,
        "t": t,
        "paid": 0.0,
    }
    booked = e.reporting_amount
    if booked is not None:
        invoice["r"] = booked
    _start_new(state, key, "invoice", e.invoice_id, invoice)
    return Fact(e.department, 0.0, e.amount if booked is None else booked)


def _decision(state: PartitionState, e: ev.InvoiceApproved | ev.InvoiceRejected, t: float) -> Fact:
    key = keys.entity(keys.INVOICE, e.invoice_id)
    inv = _check(state, key, "invoice", e.invoice_id)
    if inv["k"] != "ap":
        msg = f"invoice {e.invoice_id!r} is a customer invoice, not an AP invoice"
        raise _invalid(msg)
    if inv["s"] != "received":
        msg = f"invoice {e.invoice_id!r} was already {inv['s']}"
        raise _invalid(msg)
    duration = _not_before_start(inv, t, "invoice", e.invoice_id)
    rejected = e.type == "invoice.rejected"
    inv = _edit(state, key)
    inv["s"] = "rejected" if rejected else "approved"
    if rejected:
        _complete(state, key, inv, t)
    booked = inv.get("r")
    return Fact(inv["d"], duration, inv["a"] if booked is None else booked, e.invoice_id)


def _payment(
    state: PartitionState, e: ev.InvoicePaid | ev.PaymentReceived, t: float, *, ap: bool
) -> Fact:
    key = keys.entity(keys.INVOICE, e.invoice_id)
    inv = _check(state, key, "invoice", e.invoice_id)
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
    duration = _not_before_start(inv, t, "invoice", e.invoice_id)
    outstanding = inv["a"] - inv["paid"]
    if e.amount > outstanding + AMOUNT_TOLERANCE:
        msg = f"invoice {e.invoice_id!r}: payment {e.amount} exceeds outstanding {outstanding}"
        raise _invalid(msg)
    inv = _edit(state, key)
    paid_before = inv["paid"]
    paid = paid_before + e.amount
    inv["paid"] = paid
    if inv["a"] - paid <= AMOUNT_TOLERANCE:
        _complete(state, key, inv, t)  # paid in full
    booked = inv.get("r")
    if booked is None:
        return Fact(inv["d"], duration, e.amount)
    # A foreign invoice: the payment is what it adds to the paid share of the booked amount.
    amount = inv["a"]
    converted = _paid_reporting(booked, amount, paid) - _paid_reporting(booked, amount, paid_before)
    return Fact(inv["d"], duration, converted)


def _paid_reporting(booked: float, amount: float, paid: float) -> float:
    """How much of a foreign invoice is paid, in the reporting currency, at its booked rate.

    All of ``booked`` once the invoice is paid in full, so that its payments move AR or AP
    by exactly what the invoice added (docs/KPIS.md, "Foreign currencies").
    """
    if amount - paid <= AMOUNT_TOLERANCE:
        return booked
    return booked * paid / amount


def _invoice_paid(state: PartitionState, e: ev.InvoicePaid, t: float) -> Fact:
    return _payment(state, e, t, ap=True)


def _payment_received(state: PartitionState, e: ev.PaymentReceived, t: float) -> Fact:
    return _payment(state, e, t, ap=False)


def _invoice_issued(state: PartitionState, e: ev.InvoiceIssued, t: float) -> Fact:
    key = keys.entity(keys.INVOICE, e.invoice_id)
    department = intern(e.department)
    invoice: dict[str, Any] = {"k": "ar", "a": e.amount, "d": department, "t": t, "paid": 0.0}
    booked = e.reporting_amount
    if booked is not None:
        invoice["r"] = booked
    _start_new(state, key, "invoice", e.invoice_id, invoice)
    return Fact(e.department, 0.0, e.amount if booked is None else booked)


# -- hiring ------------------------------------------------------------------------------


def _requisition_opened(state: PartitionState, e: ev.RequisitionOpened, t: float) -> Fact:
    key = keys.entity(keys.REQUISITION, e.requisition_id)
    _start_new(state, key, "requisition", e.requisition_id, {"d": intern(e.department), "t": t})
    return Fact(e.department, 0.0, 0.0)


def _offer_accepted(state: PartitionState, e: ev.OfferAccepted, t: float) -> Fact:
    key = keys.entity(keys.REQUISITION, e.requisition_id)
    req, duration = _finish(
        state, key, "requisition", e.requisition_id, t, "filled", "was already filled"
    )
    return Fact(req["d"], duration, 0.0, e.requisition_id)


def _employee_hired(state: PartitionState, e: ev.EmployeeHired, t: float) -> Fact:
    key = keys.entity(keys.EMPLOYEE, e.employee_id)
    _start_new(state, key, "employee", e.employee_id, {"d": intern(e.department), "t": t})
    return Fact(e.department, 0.0, 0.0)


def _employee_left(state: PartitionState, e: ev.EmployeeLeft, t: float) -> Fact:
    key = keys.entity(keys.EMPLOYEE, e.employee_id)
    emp, duration = _finish(state, key, "employee", e.employee_id, t, "left", "has already left")
    return Fact(emp["d"], duration, 0.0)


def _survey_submitted(state: PartitionState, e: ev.SurveySubmitted, t: float) -> Fact:
    return Fact(e.department, 0.0, 0.0)


def _training_completed(state: PartitionState, e: ev.TrainingCompleted, t: float) -> Fact:
    booked = e.reporting_amount
    return Fact(e.department, 0.0, e.cost if booked is None else booked)


# -- incidents ---------------------------------------------------------------------------


def _incident_opened(state: PartitionState, e: ev.IncidentOpened, t: float) -> Fact:
    key = keys.entity(keys.INCIDENT, e.incident_id)
    incident = {"svc": intern(e.service), "sev": intern(e.severity), "t": t}
    _start_new(state, key, "incident", e.incident_id, incident)
    return Fact(e.service, 0.0, 0.0)


def _incident_acknowledged(state: PartitionState, e: ev.IncidentAcknowledged, t: float) -> Fact:
    key = keys.entity(keys.INCIDENT, e.incident_id)
    inc = _check(state, key, "incident", e.incident_id)
    if inc.get("ack") or inc.get("res"):
        what = "resolved" if inc.get("res") else "acknowledged"
        msg = f"incident {e.incident_id!r} was already {what}"
        raise _invalid(msg)
    duration = _not_before_start(inc, t, "incident", e.incident_id)
    inc = _edit(state, key)
    inc["ack"] = True
    return Fact(inc["svc"], duration, 0.0, e.incident_id, inc.get("sev", ""))


def _incident_resolved(state: PartitionState, e: ev.IncidentResolved, t: float) -> Fact:
    key = keys.entity(keys.INCIDENT, e.incident_id)
    inc, duration = _finish(state, key, "incident", e.incident_id, t, "res", "was already resolved")
    return Fact(inc["svc"], duration, 0.0, e.incident_id, inc.get("sev", ""))


def _ticket_opened(state: PartitionState, e: ev.TicketOpened, t: float) -> Fact:
    key = keys.entity(keys.TICKET, e.ticket_id)
    ticket = {"q": intern(e.queue), "pr": intern(e.priority), "t": t}
    _start_new(state, key, "ticket", e.ticket_id, ticket)
    return Fact(e.queue, 0.0, 0.0)


def _ticket_resolved(state: PartitionState, e: ev.TicketResolved, t: float) -> Fact:
    key = keys.entity(keys.TICKET, e.ticket_id)
    tkt, duration = _finish(state, key, "ticket", e.ticket_id, t, "res", "was already resolved")
    return Fact(tkt["q"], duration, 0.0, e.ticket_id, tkt.get("pr", ""))


def _service_status(state: PartitionState, e: ev.ServiceDown | ev.ServiceUp, t: float) -> Fact:
    return Fact(e.service, 0.0, 0.0)


_HANDLERS: dict[str, Callable[[PartitionState, Any, float], Fact]] = {
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
    "survey.submitted": _survey_submitted,
    "training.completed": _training_completed,
    "incident.opened": _incident_opened,
    "incident.acknowledged": _incident_acknowledged,
    "incident.resolved": _incident_resolved,
    "ticket.opened": _ticket_opened,
    "ticket.resolved": _ticket_resolved,
    "service.down": _service_status,
    "service.up": _service_status,
}
