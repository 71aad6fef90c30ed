"""What applying one event established, as the KPIs it feeds see it (see ``base``)."""

from __future__ import annotations


class Fact:
    """The lifecycle's answer for one applied event (built per event: a compiled class)."""

    __slots__ = ("scope", "since_start_s", "amount", "entity", "klass")

    def __init__(
        self, scope: str, since_start_s: float, amount: float, entity: str = "", klass: str = ""
    ) -> None:
        #: The dimension value the event counts for (follow-up events inherit their
        #: entity's: an approval counts for the invoice's department).
        self.scope = scope
        #: For an event that moves an entity on: event time minus the entity's start event
        #: time (never negative). 0.0 for a start event or an event without an entity.
        self.since_start_s = since_start_s
        #: The money the event moves, in the reporting currency: an invoice's amount for its
        #: start event and decision (a rejection carries none of its own), a payment's
        #: amount converted at its invoice's booked rate, a training's cost. Else 0.0.
        self.amount = amount
        #: For an event that completes a measurement (a decision, an acceptance, an
        #: acknowledgement, a resolution): the entity's id, listed among a window's worst.
        self.entity = entity
        #: The entity's class its SLA is looked up by: a ticket's priority, an incident's
        #: severity ("" for other entities, and for those started before version 2 kept it).
        self.klass = klass
