"""Plain batch reference for the streaming KPI core (tests only).

Given a complete event log, this module computes by brute force what the streaming
processor must end up with: the dead letters, the number of duplicates, the per-partition
watermarks and every *closed* KPI window with its value and count.  It implements
``/work/shared/SPEC.md`` and ``docs/SEMANTICS.md`` directly and on purpose shares no code
with ``streams/`` or ``schemas/``: only the standard library and orjson.

Values are computed the obvious way: for every window, the applied measurements whose
event time lies in ``[start, end)`` are selected (binary search over a time-sorted list)
and the SPEC formula is evaluated on them.  No panes.

The five duration KPIs (``DISTRIBUTION_KPIS``) also get, per closed window and scope, the
exact percentiles ``x_k`` of the window's durations sorted ascending, ``k = (pct * (n - 1))
// 100`` for pct 50, 90, 99 (integers: no float rounding of ``q * (n - 1)``), and the
``worst``: the 10 longest measurements as ``(entity id, seconds)``, seconds descending then
id ascending (SPEC section 2, "Distributions", "Worst entities").

Windows follow the business calendar (SPEC section 2: ``timezone``, ``fiscal_year_start``),
found by brute force with zoneinfo: see ``Calendar``.

Exact float expressions (a streaming implementation that wants bit-identical values must
evaluate the same ones; tests should still compare with a relative tolerance):

* means: ``sum(x) / n``;  error rate: ``rejected / decisions``
* dso: ``ar_end / credit_sales * window_days`` (``Span.days``; 1h: ``1 / 24``)
* ap_turnover: ``purchases / ((ap_start + ap_end) / 2)``
* employee_turnover_rate: ``separations / ((hc_start + hc_end) / 2)``
* enps: ``(promoters / n - detractors / n) * 100``
* system_uptime: ``1 - downtime / (end - start)``; roll-up ``sum(values by service name) / n``
* training_cost: ``sum(cost)``;  security_incidents: ``float(n)``
* SLA attainments: ``within / n`` (``sum`` of 1.0 / 0.0 per resolution, over ``n``)
* money of an event in a foreign currency: its ``reporting_amount``; a payment of a foreign
  invoice: ``settled(paid after) - settled(paid before)``, ``settled(p) = reporting * p /
  amount``, or ``reporting`` once ``amount - p <= 1e-6`` (paid in full)
"""

from __future__ import annotations

import bisect
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import orjson

HOUR = 3600
DAY = 86400
#: The windows of SPEC section 2; every KPI is kept for all of them.
WINDOWS: tuple[str, ...] = ("1h", "1d", "1w", "1mo", "1q", "1y", "30d")
DEDUP_HORIZON = 7 * DAY
FUTURE_TOLERANCE = 300.0
OVERPAY_EPSILON = 1e-6
# A finished entity (rejected or paid-in-full invoice, filled requisition, departed
# employee, resolved incident or ticket) is forgotten once its partition's watermark is
# this far past the event that finished it.
ENTITY_RETENTION = 7 * DAY
TOPICS = ("invoices", "hiring", "incidents")
ALL = "all"

#: KPI name -> (topic that feeds and closes it, dimension)
KPIS: dict[str, tuple[str, str]] = {
    "invoice_processing_time": ("invoices", "department"),
    "invoice_error_rate": ("invoices", "department"),
    "dso": ("invoices", "department"),
    "ap_turnover": ("invoices", "department"),
    "time_to_hire": ("hiring", "department"),
    "employee_turnover_rate": ("hiring", "department"),
    "employee_satisfaction": ("hiring", "department"),
    "enps": ("hiring", "department"),
    "training_cost": ("hiring", "department"),
    "system_uptime": ("incidents", "service"),
    "incident_response_time": ("incidents", "service"),
    "incident_resolution_time": ("incidents", "service"),
    "ticket_resolution_time": ("incidents", "queue"),
    "security_incidents": ("incidents", "service"),
    "ticket_sla_attainment": ("incidents", "queue"),
    "incident_sla_attainment": ("incidents", "service"),
}

#: The duration KPIs: each closed window also has its percentiles and worst entities.
DISTRIBUTION_KPIS = frozenset(
    {
        "invoice_processing_time",
        "time_to_hire",
        "incident_response_time",
        "incident_resolution_time",
        "ticket_resolution_time",
    }
)
#: The percentiles of SPEC section 2, as whole percents (k = pct * (n - 1) // 100).
PERCENTS = (50, 90, 99)
WORST_N = 10

#: Resolution SLAs (SPEC section 2, ``KPI_TICKET_SLA`` / ``KPI_INCIDENT_SLA``), as the
#: settings spell them; a class a setting does not name keeps its default.
DEFAULT_TICKET_SLA = "p1=4h,p2=8h,p3=24h,p4=72h"
DEFAULT_INCIDENT_SLA = "sev1=4h,sev2=8h,sev3=24h,sev4=72h"
_SLA_UNITS = {"s": 1, "m": 60, "h": HOUR, "d": DAY}


def sla_seconds(text: str, default: str) -> dict[str, float]:
    """``"p1=30m,p3=2d"`` -> seconds per class, over the classes of ``default``.

    Only what the tests need: well-formed settings (the product validates them).
    """
    out: dict[str, float] = {}
    for source in (default, text):
        for item in filter(None, (x.strip() for x in source.split(","))):
            name, amount = item.split("=")
            out[name] = float(amount[:-1]) * _SLA_UNITS[amount[-1]]
    return out


@dataclass(frozen=True)
class ExtraKpi:
    """A KPI computed by the reference without editing it (tests that add a KPI).

    For an event type that carries the KPI's dimension field: ``measure`` maps the event
    type to a function of the event's fields giving the measurement (None: the event does
    not count); the window value is ``formula`` of the window's measurements.
    """

    topic: str
    dimension: str
    measure: Mapping[str, Callable[[dict[str, Any]], float | None]]
    formula: Callable[[list[float]], float | None]


class Distribution(NamedTuple):
    """A duration KPI's window: exact percentiles (None without durations) and its worst."""

    p50: float | None
    p90: float | None
    p99: float | None
    worst: tuple[tuple[str, float], ...]


def distribution(measurements: Sequence[tuple[str, float]]) -> Distribution:
    """The exact percentiles and the worst 10 of ``(entity id, seconds)`` measurements."""
    if not measurements:
        return Distribution(None, None, None, ())
    xs = sorted(x for _, x in measurements)
    n = len(xs)
    p50, p90, p99 = (xs[pct * (n - 1) // 100] for pct in PERCENTS)
    worst = sorted(measurements, key=lambda m: (-m[1], m[0]))[:WORST_N]
    return Distribution(p50, p90, p99, tuple(worst))


@dataclass(frozen=True)
class Message:
    """One Kafka message of an input topic."""

    topic: str  # logical, unprefixed: "invoices" | "hiring" | "incidents"
    partition: int
    offset: int
    value: bytes  # the raw message payload


@dataclass
class RefResult:
    """Everything the reference derives from a log."""

    # (kpi name, window name, scope) -> {window_start: (value or None, count)}; closed windows only
    history: dict[tuple[str, str, str], dict[int, tuple[float | None, int]]]
    # (topic, partition, offset, reason), in input order
    dead_letters: list[tuple[str, int, int, str]]
    duplicates: int
    # (topic, partition) -> final watermark (-inf when nothing was applied); extra, for tests
    watermarks: dict[tuple[str, int], float] = field(default_factory=dict)
    # number of applied events; extra, for tests
    applied: int = 0
    # window name -> {window_start: Span} for every window start in ``history``
    spans: dict[str, dict[int, Span]] = field(default_factory=dict)
    # (kpi, window, scope) -> {window_start: Distribution}: the duration KPIs' closed windows
    distributions: dict[tuple[str, str, str], dict[int, Distribution]] = field(default_factory=dict)

    def records(self, key: tuple[str, str, str]) -> dict[int, HistoryRecord]:
        """The closed windows of (kpi, window, scope) as Redis history holds them, by start."""
        spans = self.spans.get(key[1], {})
        distributions = self.distributions.get(key, {})
        out = {}
        for start, (value, count) in self.history.get(key, {}).items():
            span = spans[start]
            d = distributions.get(start)
            if d is None:
                out[start] = HistoryRecord(start, span.end, span.label, value, count)
            else:
                out[start] = HistoryRecord(start, span.end, span.label, value, count, *d)
        return out


class HistoryRecord(NamedTuple):
    """One closed window as a history member (SPEC section 3), times in Unix seconds."""

    window_start: int
    window_end: int
    label: str
    value: float | None
    count: int
    # the duration KPIs' (DISTRIBUTION_KPIS) distribution; None for the other KPIs
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    worst: tuple[tuple[str, float], ...] | None = None


# --------------------------------------------------------------------------------------
# Section 1: validation of one payload (reasons invalid_json, schema, unknown_type,
# currency, future).  Field kinds of the event types:

_ID = "id"  # 1-128 printable characters, a JSON string
_DIM = "dim"  # ^[a-z0-9][a-z0-9_-]{0,62}$ and not "all"
_AMOUNT = "amount"  # JSON number or numeric string, finite, > 0, <= 1e12
_OPTIONAL_AMOUNT = "optional amount"  # an amount, absent or JSON null
_CURRENCY = "currency"  # a JSON string; its shape (ISO 4217) is the "currency" check
_TEXT = "text"  # any JSON string
_BOOL = "bool"  # JSON true/false
_SCORE = "score"  # JSON integer 0..10
_SEVERITY = frozenset({"sev1", "sev2", "sev3", "sev4"})
_CATEGORY = frozenset({"outage", "security", "other"})
_PRIORITY = frozenset({"p1", "p2", "p3", "p4"})

#: type -> (topic, {field: kind})
EVENT_TYPES: dict[str, tuple[str, dict[str, Any]]] = {
    "invoice.received": (
        "invoices",
        {
            "invoice_id": _ID,
            "amount": _AMOUNT,
            "currency": _CURRENCY,
            "department": _DIM,
            "vendor_id": _ID,
            "reporting_amount": _OPTIONAL_AMOUNT,
        },
    ),
    "invoice.approved": ("invoices", {"invoice_id": _ID}),
    "invoice.rejected": ("invoices", {"invoice_id": _ID, "reason": _TEXT}),
    "invoice.paid": ("invoices", {"invoice_id": _ID, "amount": _AMOUNT}),
    "invoice.issued": (
        "invoices",
        {
            "invoice_id": _ID,
            "amount": _AMOUNT,
            "currency": _CURRENCY,
            "department": _DIM,
            "customer_id": _ID,
            "reporting_amount": _OPTIONAL_AMOUNT,
        },
    ),
    "payment.received": ("invoices", {"invoice_id": _ID, "amount": _AMOUNT}),
    "requisition.opened": ("hiring", {"requisition_id": _ID, "department": _DIM}),
    "offer.accepted": ("hiring", {"requisition_id": _ID, "candidate_id": _ID}),
    "employee.hired": ("hiring", {"employee_id": _ID, "department": _DIM}),
    "employee.left": ("hiring", {"employee_id": _ID, "voluntary": _BOOL}),
    "survey.submitted": ("hiring", {"response_id": _ID, "department": _DIM, "score": _SCORE}),
    "training.completed": (
        "hiring",
        {
            "training_id": _ID,
            "employee_id": _ID,
            "department": _DIM,
            "cost": _AMOUNT,
            "currency": _CURRENCY,
            "reporting_amount": _OPTIONAL_AMOUNT,
        },
    ),
    "incident.opened": (
        "incidents",
        {"incident_id": _ID, "service": _DIM, "severity": _SEVERITY, "category": _CATEGORY},
    ),
    "incident.acknowledged": ("incidents", {"incident_id": _ID}),
    "incident.resolved": ("incidents", {"incident_id": _ID}),
    "ticket.opened": ("incidents", {"ticket_id": _ID, "queue": _DIM, "priority": _PRIORITY}),
    "ticket.resolved": ("incidents", {"ticket_id": _ID}),
    "service.down": ("incidents", {"service": _DIM}),
    "service.up": ("incidents", {"service": _DIM}),
}

_DIM_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def parse_timestamp(value: object) -> float | None:
    """RFC 3339 with a mandatory offset -> Unix seconds (UTC); None when invalid.

    Accepted: ``YYYY-MM-DD(T|t| )hh:mm:ss[.fraction](Z|z|+hh:mm|-hh:mm)``; the fraction is
    truncated to microseconds; no leap second (ss <= 59).
    """
    if not isinstance(value, str):
        return None
    m = _TIMESTAMP_RE.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if hour > 23 or minute > 59 or second > 59:
        return None
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    offset = 0
    if m.group(8) is not None:
        off_h, off_m = int(m.group(9)), int(m.group(10))
        if off_h > 23 or off_m > 59:
            return None
        offset = (off_h * 3600 + off_m * 60) * (1 if m.group(8) == "+" else -1)
    micros = int((m.group(7) or ".")[1:7].ljust(6, "0"))
    seconds = days * DAY + hour * 3600 + minute * 60 + second - offset
    return (seconds * 10**6 + micros) / 10**6


def parse_amount(value: object) -> float | None:
    """A JSON number or numeric string, finite, > 0, <= 1e12 -> float; None when invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            x = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str) and _NUMBER_RE.fullmatch(value):
        x = float(value)
    else:
        return None
    if not math.isfinite(x) or x <= 0 or x > 1e12:
        return None
    return x


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 128 and value.isprintable()


def _check_field(kind: Any, value: object) -> tuple[bool, object]:
    """(ok, normalised value) for one field of a known kind."""
    if kind == _ID:
        return _valid_id(value), value
    if kind == _DIM:
        ok = isinstance(value, str) and bool(_DIM_RE.fullmatch(value)) and value != ALL
        return ok, value
    if kind == _AMOUNT:
        x = parse_amount(value)
        return x is not None, x
    if kind == _OPTIONAL_AMOUNT:
        if value is None:
            return True, None
        x = parse_amount(value)
        return x is not None, x
    if kind == _CURRENCY:
        return isinstance(value, str), value
    if kind == _TEXT:
        return isinstance(value, str), value
    if kind == _BOOL:
        return isinstance(value, bool), value
    if kind == _SCORE:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10
        return ok, value
    # an enumeration: exact lowercase member
    return isinstance(value, str) and value in kind, value


@dataclass(frozen=True)
class Event:
    """A payload that passed the stateless checks."""

    type: str
    event_id: str
    t: float  # occurred_at, Unix seconds UTC
    fields: dict[str, Any]  # the type's fields, normalised (amounts as float)


def validate(topic: str, value: bytes, *, currency: str, now: float) -> Event | str:
    """The stateless checks 1-5 of SEMANTICS; returns the Event or the dead-letter reason."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "invalid_json"
    if not isinstance(doc, dict):
        return "schema"
    etype = doc.get("type")
    if not isinstance(etype, str):
        return "schema"
    event_id = doc.get("event_id")
    if not (isinstance(event_id, str) and 1 <= len(event_id) <= 128):
        return "schema"
    t = parse_timestamp(doc.get("occurred_at"))
    if t is None:
        return "schema"
    if etype not in EVENT_TYPES:
        return "unknown_type"
    etopic, spec = EVENT_TYPES[etype]
    fields: dict[str, Any] = {}
    for name, kind in spec.items():
        if name not in doc and kind != _OPTIONAL_AMOUNT:
            return "schema"
        ok, norm = _check_field(kind, doc.get(name))
        if not ok:
            return "schema"
        fields[name] = norm
    if etopic != topic:
        return "unknown_type"
    if "currency" in fields:
        # Money in another currency counts by the source's own conversion, required then;
        # in the reporting currency that conversion is ignored.
        if fields["currency"] == currency:
            fields["reporting_amount"] = None
        elif not _CURRENCY_RE.fullmatch(fields["currency"]) or fields["reporting_amount"] is None:
            return "currency"
    if t > now + FUTURE_TOLERANCE:
        return "future"
    return Event(etype, event_id, t, fields)


# --------------------------------------------------------------------------------------
# Lifecycles and measurements.


_Record = tuple[float, str, float, str]


@dataclass(frozen=True)
class _Slas:
    """Seconds allowed to resolve a ticket per priority, an incident per severity."""

    ticket: Mapping[str, float]
    incident: Mapping[str, float]


@dataclass
class _Facts:
    """The applied measurements, per KPI and dimension value, plus the status events."""

    # kpi -> dimension value -> [(t, kind, x, entity id: a duration's, else "")]
    records: dict[str, dict[str, list[_Record]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    # service -> [(t, arrival, "down" | "up")]
    status: dict[str, list[tuple[float, tuple[int, int], str]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, kpi: str, dim: str, t: float, kind: str, x: float, entity: str = "") -> None:
        self.records[kpi][dim].append((t, kind, x, entity))


@dataclass
class _Partition:
    """State of one input partition."""

    watermark: float = -math.inf
    applied_ids: dict[str, float] = field(default_factory=dict)  # event_id -> occurred_at
    entities: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _booked(inv: dict[str, Any]) -> float:
    """An invoice's amount in the reporting currency."""
    return float(inv["amount"] if inv["reporting"] is None else inv["reporting"])


def _settled(inv: dict[str, Any], paid: float) -> float:
    """How much of a foreign invoice's booked reporting amount ``paid`` (its currency) settles.

    At the booked rate, ``reporting * paid / amount``; all of it once the invoice is paid in
    full (what is left is at most the overpay tolerance), so no balance remains.
    """
    if inv["amount"] - paid <= OVERPAY_EPSILON:
        return float(inv["reporting"])
    return float(inv["reporting"] * paid / inv["amount"])


def _pay(inv: dict[str, Any], amount: float) -> float:
    """Record a payment of ``amount`` (the invoice's currency); its value in the reporting one."""
    before = inv["paid"]
    inv["paid"] += amount
    if inv["reporting"] is None:
        return amount
    return _settled(inv, inv["paid"]) - _settled(inv, before)


def _lifecycle(
    ev: Event, part: _Partition, facts: _Facts, arrival: tuple[int, int], slas: _Slas
) -> str | None:
    """Check 8 and the application: the dead-letter reason, or None after applying ``ev``."""
    f, t, typ = ev.fields, ev.t, ev.type
    stored = part.entities

    class _Live:
        """The partition's entities, less the finished ones past retention."""

        def get(self, key: tuple[str, str]) -> dict[str, Any] | None:
            ent = stored.get(key)
            if ent is not None and ent.get("done", math.inf) < part.watermark - ENTITY_RETENTION:
                return None
            return ent

        def __contains__(self, key: tuple[str, str]) -> bool:
            return self.get(key) is not None

        def __setitem__(self, key: tuple[str, str], value: dict[str, Any]) -> None:
            stored[key] = value

    ents = _Live()

    if typ in ("invoice.received", "invoice.issued"):
        key = ("invoice", f["invoice_id"])
        if key in ents:
            return "invalid_transition"
        ap = typ == "invoice.received"
        ents[key] = {
            "kind": "ap" if ap else "ar",
            "t": t,
            "amount": f["amount"],
            "reporting": f["reporting_amount"],  # None: in the reporting currency
            "department": f["department"],
            "status": "received" if ap else "issued",
            "paid": 0.0,
        }
        booked = f["amount"] if f["reporting_amount"] is None else f["reporting_amount"]
        if ap:
            facts.add("ap_turnover", f["department"], t, "received", booked)
        else:
            facts.add("dso", f["department"], t, "issued", booked)
        return None

    if typ in ("invoice.approved", "invoice.rejected", "invoice.paid", "payment.received"):
        inv = ents.get(("invoice", f["invoice_id"]))
        if inv is None:
            return "unknown_entity"
        if t < inv["t"]:
            return "invalid_transition"
        dept = inv["department"]
        if typ == "payment.received":
            if inv["kind"] != "ar" or inv["paid"] + f["amount"] > inv["amount"] + OVERPAY_EPSILON:
                return "invalid_transition"
            x = _pay(inv, f["amount"])
            if inv["amount"] - inv["paid"] <= OVERPAY_EPSILON:
                inv["done"] = t
            facts.add("dso", dept, t, "payment", x)
            return None
        if inv["kind"] != "ap":
            return "invalid_transition"
        if typ == "invoice.paid":
            if inv["status"] != "approved":
                return "invalid_transition"
            if inv["paid"] + f["amount"] > inv["amount"] + OVERPAY_EPSILON:
                return "invalid_transition"
            x = _pay(inv, f["amount"])
            if inv["amount"] - inv["paid"] <= OVERPAY_EPSILON:
                inv["done"] = t
            facts.add("ap_turnover", dept, t, "paid", x)
            return None
        if inv["status"] != "received":
            return "invalid_transition"
        decision = "approved" if typ == "invoice.approved" else "rejected"
        inv["status"] = decision
        duration = t - inv["t"]
        facts.add("invoice_processing_time", dept, t, decision, duration, f["invoice_id"])
        facts.add("invoice_error_rate", dept, t, decision, 1.0 if decision == "rejected" else 0.0)
        if decision == "rejected":
            inv["done"] = t
            facts.add("ap_turnover", dept, t, "rejected", _booked(inv))
        return None

    if typ == "requisition.opened":
        key = ("requisition", f["requisition_id"])
        if key in ents:
            return "invalid_transition"
        ents[key] = {"t": t, "department": f["department"], "accepted": False}
        return None
    if typ == "offer.accepted":
        req = ents.get(("requisition", f["requisition_id"]))
        if req is None:
            return "unknown_entity"
        if t < req["t"] or req["accepted"]:
            return "invalid_transition"
        req["accepted"] = True
        req["done"] = t
        facts.add(
            "time_to_hire", req["department"], t, "accepted", t - req["t"], f["requisition_id"]
        )
        return None

    if typ == "employee.hired":
        key = ("employee", f["employee_id"])
        if key in ents:
            return "invalid_transition"
        ents[key] = {"t": t, "department": f["department"], "left": False}
        facts.add("employee_turnover_rate", f["department"], t, "hired", 1.0)
        return None
    if typ == "employee.left":
        emp = ents.get(("employee", f["employee_id"]))
        if emp is None:
            return "unknown_entity"
        if t < emp["t"] or emp["left"]:
            return "invalid_transition"
        emp["left"] = True
        emp["done"] = t
        facts.add("employee_turnover_rate", emp["department"], t, "left", 1.0)
        return None

    if typ == "survey.submitted":
        facts.add("employee_satisfaction", f["department"], t, "survey", float(f["score"]))
        facts.add("enps", f["department"], t, "survey", float(f["score"]))
        return None
    if typ == "training.completed":
        cost = f["cost"] if f["reporting_amount"] is None else f["reporting_amount"]
        facts.add("training_cost", f["department"], t, "training", cost)
        return None

    if typ == "incident.opened":
        key = ("incident", f["incident_id"])
        if key in ents:
            return "invalid_transition"
        ents[key] = {
            "t": t,
            "service": f["service"],
            "severity": f["severity"],
            "acked": False,
            "resolved": False,
        }
        if f["category"] == "security":
            facts.add("security_incidents", f["service"], t, "security", 1.0)
        return None
    if typ in ("incident.acknowledged", "incident.resolved"):
        incident = f["incident_id"]
        inc = ents.get(("incident", incident))
        if inc is None:
            return "unknown_entity"
        if t < inc["t"] or inc["resolved"]:
            return "invalid_transition"
        if typ == "incident.acknowledged":
            if inc["acked"]:
                return "invalid_transition"
            inc["acked"] = True
            duration = t - inc["t"]
            facts.add("incident_response_time", inc["service"], t, "ack", duration, incident)
        else:
            inc["resolved"] = True
            inc["done"] = t
            duration = t - inc["t"]
            facts.add("incident_resolution_time", inc["service"], t, "resolved", duration, incident)
            within = duration <= slas.incident[inc["severity"]]
            facts.add("incident_sla_attainment", inc["service"], t, "resolved", float(within))
        return None

    if typ == "ticket.opened":
        key = ("ticket", f["ticket_id"])
        if key in ents:
            return "invalid_transition"
        ents[key] = {"t": t, "queue": f["queue"], "priority": f["priority"], "resolved": False}
        return None
    if typ == "ticket.resolved":
        tic = ents.get(("ticket", f["ticket_id"]))
        if tic is None:
            return "unknown_entity"
        if t < tic["t"] or tic["resolved"]:
            return "invalid_transition"
        tic["resolved"] = True
        tic["done"] = t
        duration = t - tic["t"]
        facts.add("ticket_resolution_time", tic["queue"], t, "resolved", duration, f["ticket_id"])
        within = duration <= slas.ticket[tic["priority"]]
        facts.add("ticket_sla_attainment", tic["queue"], t, "resolved", float(within))
        return None

    if typ in ("service.down", "service.up"):
        facts.status[f["service"]].append((t, arrival, typ.split(".")[1]))
        return None

    raise AssertionError(typ)  # every type of EVENT_TYPES is handled above


# --------------------------------------------------------------------------------------
# The business calendar (SPEC section 2), by brute force on zoneinfo.
#
# Hour boundaries are the instants at which the local clock (after any change) reads
# hh:00:00, plus the clock changes whose forward jump skips such a reading; day boundaries
# likewise with 00:00:00.  A 1h or 1d window runs from one boundary to the next and is
# labelled with the local clock at its start.  Weeks, months, fiscal quarters and years run
# from the start of their first local date to the start of the date after their last; the
# rolling 30d window holds the 30 local dates ending with the one it is labelled with.
# (A zone whose clock read 00:00:00 twice on one date would get two 1d windows of that
# date, and its coarser windows would start at the first; none of the tested zones does.)

#: Offsets are sampled this far apart to find clock changes (then bisected to the second):
#: no zone changes its clock twice within 15 minutes.
_SAMPLE_S = 900


@dataclass(frozen=True)
class Span:
    """One calendar window ``[start, end)`` in Unix seconds, its label, its calendar days."""

    start: int
    end: int
    label: str
    days: float  # dso's window_days: the calendar days it covers (1h: 1/24)


class _Zone:
    """Hour and day boundaries of one IANA zone, found per UTC day and kept."""

    def __init__(self, name: str) -> None:
        self.tz = ZoneInfo(name)
        self._boundaries: dict[tuple[int, int], list[int]] = {}
        self._around: dict[tuple[int, int], list[int]] = {}
        self._day_starts: dict[date, int] = {}

    def reading(self, t: float) -> datetime:
        """What the local clock shows at instant ``t`` (after a change at ``t``)."""
        return datetime.fromtimestamp(t, self.tz)

    def offset(self, t: int) -> int:
        off = self.reading(t).utcoffset()
        assert off is not None
        return int(off.total_seconds())

    def changes(self, day: int) -> list[tuple[int, int, int]]:
        """(instant, offset before, offset after) of every clock change in UTC day ``day``."""
        a = day * DAY
        out = []
        prev_t, prev = a - _SAMPLE_S, self.offset(a - _SAMPLE_S)
        for t in range(a, a + DAY + 1, _SAMPLE_S):
            off = self.offset(t)
            if off != prev:
                lo, hi = prev_t, t  # offset(lo) == prev != offset(hi)
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self.offset(mid) == prev:
                        lo = mid
                    else:
                        hi = mid
                if a <= hi < a + DAY:
                    out.append((hi, prev, self.offset(hi)))
            prev_t, prev = t, off
        return out

    def boundaries(self, period: int, day: int) -> list[int]:
        """Hour (``period`` 3600) or day (86400) boundaries within UTC day ``day``."""
        key = (period, day)
        found = self._boundaries.get(key)
        if found is None:
            a, b = day * DAY, (day + 1) * DAY
            points: set[int] = set()
            start, off = a, self.offset(a)
            for change, before, after in [*self.changes(day), (b, 0, 0)]:
                # [start, change) has one offset: the clock reads a multiple of ``period``
                # at the instants t with (t + off) % period == 0
                points.update(range(start + (-(start + off)) % period, change, period))
                # a forward jump from change + before to change + after skips a multiple
                if after > before and (-(change + before)) % period < after - before:
                    points.add(change)
                start, off = change, after
            found = self._boundaries[key] = sorted(points)
        return found

    def bounds(self, period: int, t: float) -> tuple[int, int]:
        """The boundaries ``b <= t < b'`` of the hour or day holding ``t``."""
        day = math.floor(t / DAY)
        points = self._around.get((period, day))
        if points is None:
            points = [b for k in range(day - 2, day + 3) for b in self.boundaries(period, k)]
            self._around[(period, day)] = points
        i = bisect.bisect_right(points, t) - 1
        return points[i], points[i + 1]

    def day_start(self, d: date) -> int:
        """The first instant of local date ``d``: its midnight, or the change skipping it."""
        start = self._day_starts.get(d)
        if start is None:
            utc_day = d.toordinal() - _EPOCH_ORDINAL
            found = (
                b
                for k in (utc_day - 1, utc_day, utc_day + 1)
                for b in self.boundaries(DAY, k)
                if self.reading(b).date() == d
            )
            start = next(found, None)
            if start is None:
                raise ValueError(f"{d} does not exist in {self.tz.key}")
            self._day_starts[d] = start
        return start


@cache
def _zone(name: str) -> _Zone:
    return _Zone(name)


def _add_months(first: date, months: int) -> date:
    """The 1st of the month ``months`` after the month of ``first`` (a 1st)."""
    years, month0 = divmod(first.month - 1 + months, 12)
    return date(first.year + years, month0 + 1, 1)


class Calendar:
    """The seven windows of SPEC section 2 in one time zone and fiscal year."""

    def __init__(self, timezone: str = "UTC", fiscal_year_start: int = 1) -> None:
        if not 1 <= fiscal_year_start <= 12:
            raise ValueError(f"fiscal_year_start {fiscal_year_start} is not a month")
        self.zone = _zone(timezone)
        self.fiscal_year_start = fiscal_year_start
        self._spans: dict[tuple[str, int], list[Span]] = {}

    def containing(self, window: str, t: float) -> list[Span]:
        """The windows named ``window`` that hold instant ``t``: one, or 30 for ``30d``."""
        if window == "1h":
            start, end = self.zone.bounds(HOUR, t)
            key = (window, start)
            spans = self._spans.get(key)
            if spans is None:
                label = self.zone.reading(start).strftime("%Y-%m-%dT%H")
                spans = self._spans[key] = [Span(start, end, label, 1 / 24)]
            return spans
        start, end = self.zone.bounds(DAY, t)
        key = (window, start)
        spans = self._spans.get(key)
        if spans is None:
            today = self.zone.reading(start).date()
            if window == "1d":
                spans = [Span(start, end, today.isoformat(), 1.0)]
            else:
                spans = [
                    Span(self.zone.day_start(a), self.zone.day_start(b), label, float((b - a).days))
                    for a, b, label in self._dates(window, today)
                ]
            self._spans[key] = spans
        return spans

    def between(self, window: str, after: float, upto: float) -> list[Span]:
        """Every window named ``window`` with ``after < end <= upto``, by start."""
        out: list[Span] = []
        if window == "30d":
            # the window ending with the local date of ``after`` is the first to end later
            last = self.zone.reading(self.zone.bounds(DAY, after)[0]).date()
            while True:
                first, label = last - timedelta(days=29), last.isoformat()
                span = Span(
                    self.zone.day_start(first),
                    self.zone.day_start(last + timedelta(days=1)),
                    label,
                    30.0,
                )
                if span.end > upto:
                    return out
                out.append(span)
                last += timedelta(days=1)
        span = self.containing(window, after)[0]
        while span.end <= upto:
            out.append(span)
            span = self.containing(window, span.end)[0]
        return out

    def _dates(self, window: str, d: date) -> list[tuple[date, date, str]]:
        """(first date, date after the last, label) of the windows holding local date ``d``."""
        if window == "1w":
            monday = d - timedelta(days=d.weekday())
            iso_year, iso_week, _ = monday.isocalendar()
            return [(monday, monday + timedelta(days=7), f"{iso_year}-W{iso_week:02d}")]
        if window == "1mo":
            first = d.replace(day=1)
            return [(first, _add_months(first, 1), f"{first:%Y-%m}")]
        if window in ("1q", "1y"):
            start_month = self.fiscal_year_start
            year_first = date(d.year if d.month >= start_month else d.year - 1, start_month, 1)
            # a fiscal year is named by the calendar year it ends in
            name = str(year_first.year) if start_month == 1 else f"FY{year_first.year + 1}"
            if window == "1y":
                return [(year_first, _add_months(year_first, 12), name)]
            quarter = ((d.month - start_month) % 12) // 3
            first = _add_months(year_first, 3 * quarter)
            return [(first, _add_months(first, 3), f"{name}-Q{quarter + 1}")]
        if window == "30d":
            lasts = [d + timedelta(days=k) for k in range(30)]
            return [(x - timedelta(days=29), x + timedelta(days=1), x.isoformat()) for x in lasts]
        raise ValueError(f"unknown window {window!r}")


# --------------------------------------------------------------------------------------
# Values of the closed windows.


_DELTAS: dict[str, dict[str, float]] = {
    "dso": {"issued": 1.0, "payment": -1.0},
    "ap_turnover": {"received": 1.0, "paid": -1.0, "rejected": -1.0},
    "employee_turnover_rate": {"hired": 1.0, "left": -1.0},
}


class _Series:
    """The records of one KPI and scope, sorted by time, with prefix sums of balance deltas."""

    def __init__(self, kpi: str, records: list[_Record]) -> None:
        self.records = sorted(records, key=lambda r: r[0])
        self.times = [r[0] for r in self.records]
        deltas = _DELTAS.get(kpi, {})
        self.prefix = [0.0]
        for _, kind, x, _ in self.records:
            self.prefix.append(self.prefix[-1] + deltas.get(kind, 0.0) * x)

    def between(self, start: float, end: float) -> list[_Record]:
        """Records with start <= t < end."""
        lo = bisect.bisect_left(self.times, start)
        hi = bisect.bisect_left(self.times, end)
        return self.records[lo:hi]

    def balance(self, t: float) -> float:
        """Sum of the deltas of every record with occurred_at < t."""
        return self.prefix[bisect.bisect_left(self.times, t)]


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def _value(kpi: str, series: _Series, recs: list[_Record], span: Span) -> float | None:
    """The SPEC formula of ``kpi`` for the window ``span``."""
    start, end = span.start, span.end
    n = len(recs)
    xs = [x for _, _, x, _ in recs]
    if kpi in (
        "invoice_processing_time",
        "invoice_error_rate",
        "time_to_hire",
        "employee_satisfaction",
        "incident_response_time",
        "incident_resolution_time",
        "ticket_resolution_time",
        "ticket_sla_attainment",
        "incident_sla_attainment",
    ):
        return _ratio(sum(xs), n)
    if kpi == "enps":
        if n == 0:
            return None
        promoters = sum(1 for x in xs if x >= 9)
        detractors = sum(1 for x in xs if x <= 6)
        return (promoters / n - detractors / n) * 100
    if kpi == "training_cost":
        return sum(xs)
    if kpi == "security_incidents":
        return float(n)
    if kpi == "dso":
        credit_sales = sum(x for _, kind, x, _ in recs if kind == "issued")
        ar_end = series.balance(end)
        if credit_sales == 0:
            return None
        return ar_end / credit_sales * span.days
    if kpi == "ap_turnover":
        purchases = sum(x for _, kind, x, _ in recs if kind == "received")
        average = (series.balance(start) + series.balance(end)) / 2
        return _ratio(purchases, average)
    if kpi == "employee_turnover_rate":
        separations = float(sum(1 for _, kind, _, _ in recs if kind == "left"))
        average = (series.balance(start) + series.balance(end)) / 2
        return _ratio(separations, average)
    raise AssertionError(kpi)


def _closed_limit(
    topic: str, partitions: Mapping[str, int], wms: dict[tuple[str, int], float]
) -> float:
    """The topic's frontier: min watermark over all its partitions (-inf if any is empty)."""
    n = partitions.get(topic, 0)
    if n <= 0:
        return -math.inf
    return min(wms.get((topic, p), -math.inf) for p in range(n))


_History = dict[tuple[str, str, str], dict[int, tuple[float | None, int]]]


def _history_of_records(
    facts: _Facts,
    limits: dict[str, float],
    extra: Mapping[str, ExtraKpi],
    calendar: Calendar,
    spans: dict[str, dict[int, Span]],
    distributions: dict[tuple[str, str, str], dict[int, Distribution]],
) -> _History:
    """Every closed window of the KPIs of records; the duration KPIs' distributions too."""
    history: _History = {}
    topics = {**KPIS, **{name: (k.topic, k.dimension) for name, k in extra.items()}}
    for kpi, (topic, _dim) in topics.items():
        if kpi == "system_uptime":
            continue
        by_dim = facts.records.get(kpi, {})
        scopes: dict[str, list[_Record]] = {d: list(r) for d, r in by_dim.items()}
        all_records = [r for d in sorted(by_dim) for r in by_dim[d]]
        if all_records:
            scopes[ALL] = all_records
        limit = limits[topic]
        for scope, records in scopes.items():
            series = _Series(kpi, records)
            for wname in WINDOWS:
                held = {s.start: s for t in series.times for s in calendar.containing(wname, t)}
                out: dict[int, tuple[float | None, int]] = {}
                for start, span in sorted(held.items()):
                    if limit < span.end:  # not closed: frontier - grace < end
                        continue
                    recs = series.between(span.start, span.end)
                    if recs and kpi in extra:
                        value = extra[kpi].formula([x for _, _, x, _ in recs])
                        out[start] = (value, len(recs))
                    elif recs:
                        out[start] = (_value(kpi, series, recs, span), len(recs))
                    if recs and kpi in DISTRIBUTION_KPIS:
                        durations = [(entity, x) for _, _, x, entity in recs]
                        distributions.setdefault((kpi, wname, scope), {})[start] = distribution(
                            durations
                        )
                    spans[wname][start] = span
                if out:
                    history[(kpi, wname, scope)] = out
    return history


def _uptime_history(
    facts: _Facts, limit: float, calendar: Calendar, spans: dict[str, dict[int, Span]]
) -> _History:
    """system_uptime per SEMANTICS "Uptime"; ``limit`` = incidents frontier - grace."""
    history: _History = {}
    for wname in WINDOWS:
        per_service: dict[str, dict[int, tuple[float, int]]] = {}
        for service in sorted(facts.status):
            events = sorted(facts.status[service], key=lambda e: (e[0], e[1]))
            times = [e[0] for e in events]
            # the state machine: up -> (down) -> down -> (up) -> up; repeats change nothing
            intervals: list[tuple[float, float]] = []
            down_since: float | None = None
            for t, _, kind in events:
                if kind == "down" and down_since is None:
                    down_since = t
                elif kind == "up" and down_since is not None:
                    intervals.append((down_since, t))
                    down_since = None
            if down_since is not None:
                intervals.append((down_since, math.inf))  # still open: up to the window end
            if math.isinf(limit):
                continue  # a partition of the topic never applied anything: nothing closes
            out: dict[int, tuple[float, int]] = {}
            # every closed window from the one holding the first status event on
            for span in calendar.between(wname, times[0], limit):
                start, end = span.start, span.end
                downtime = sum(
                    max(0.0, min(b, end) - max(a, start)) for a, b in intervals if a < end
                )
                count = bisect.bisect_left(times, end) - bisect.bisect_left(times, start)
                out[start] = (1 - downtime / (end - start), count)
                spans[wname][start] = span
            if out:
                per_service[service] = out
                history[("system_uptime", wname, service)] = dict(out)
        rollup: dict[int, tuple[float | None, int]] = {}
        for start in sorted({s for out in per_service.values() for s in out}):
            values = [out[start] for _, out in sorted(per_service.items()) if start in out]
            rollup[start] = (sum(v for v, _ in values) / len(values), sum(c for _, c in values))
        if rollup:
            history[("system_uptime", wname, ALL)] = rollup
    return history


# --------------------------------------------------------------------------------------


def compute(
    messages: Sequence[Message],
    *,
    partitions: Mapping[str, int],
    grace_seconds: float = 3600,
    currency: str = "USD",
    now: float,
    extra: Mapping[str, ExtraKpi] | None = None,
    timezone: str = "UTC",
    fiscal_year_start: int = 1,
    ticket_sla: str = DEFAULT_TICKET_SLA,
    incident_sla: str = DEFAULT_INCIDENT_SLA,
) -> RefResult:
    """Run the whole log through SEMANTICS and return every closed window of every KPI.

    ``extra`` adds KPIs by name (see ``ExtraKpi``).  ``timezone`` (an IANA name) and
    ``fiscal_year_start`` (a month) are the settings of the business calendar;
    ``ticket_sla`` and ``incident_sla`` those of the SLA attainments, as
    ``KPI_TICKET_SLA`` / ``KPI_INCIDENT_SLA`` spell them.
    """
    extra = extra or {}
    slas = _Slas(
        sla_seconds(ticket_sla, DEFAULT_TICKET_SLA),
        sla_seconds(incident_sla, DEFAULT_INCIDENT_SLA),
    )
    calendar = Calendar(timezone, fiscal_year_start)
    parts: dict[tuple[str, int], _Partition] = defaultdict(_Partition)
    last_offset: dict[tuple[str, int], int] = {}
    facts = _Facts()
    dead_letters: list[tuple[str, int, int, str]] = []
    duplicates = 0
    applied = 0

    for msg in messages:
        if msg.topic not in TOPICS:
            raise ValueError(f"unknown topic {msg.topic!r}")
        if not 0 <= msg.partition < partitions.get(msg.topic, 0):
            raise ValueError(f"partition {msg.partition} out of range for {msg.topic!r}")
        tp = (msg.topic, msg.partition)
        if tp in last_offset and msg.offset <= last_offset[tp]:
            raise ValueError(f"offsets of {tp} not increasing at {msg.offset}")
        last_offset[tp] = msg.offset
        part = parts[tp]

        checked = validate(msg.topic, msg.value, currency=currency, now=now)
        if isinstance(checked, str):
            dead_letters.append((msg.topic, msg.partition, msg.offset, checked))
            continue
        ev = checked
        previous = part.applied_ids.get(ev.event_id)
        if previous is not None and previous >= part.watermark - DEDUP_HORIZON:
            duplicates += 1
            continue
        if ev.t < part.watermark - grace_seconds:
            dead_letters.append((msg.topic, msg.partition, msg.offset, "late"))
            continue
        reason = _lifecycle(ev, part, facts, (msg.partition, msg.offset), slas)
        if reason is not None:
            dead_letters.append((msg.topic, msg.partition, msg.offset, reason))
            continue
        applied += 1
        for name, kpi in extra.items():
            measure = kpi.measure.get(ev.type)
            x = None if measure is None else measure(ev.fields)
            if x is not None:
                facts.add(name, ev.fields[kpi.dimension], ev.t, ev.type, x)
        part.watermark = max(part.watermark, ev.t)
        part.applied_ids[ev.event_id] = max(ev.t, previous if previous is not None else ev.t)

    watermarks = {
        (topic, p): parts[(topic, p)].watermark if (topic, p) in parts else -math.inf
        for topic in TOPICS
        for p in range(partitions.get(topic, 0))
    }
    limits = {
        topic: _closed_limit(topic, partitions, watermarks) - grace_seconds for topic in TOPICS
    }
    spans: dict[str, dict[int, Span]] = {wname: {} for wname in WINDOWS}
    distributions: dict[tuple[str, str, str], dict[int, Distribution]] = {}
    history = _history_of_records(facts, limits, extra, calendar, spans, distributions)
    history.update(_uptime_history(facts, limits["incidents"], calendar, spans))
    return RefResult(history, dead_letters, duplicates, watermarks, applied, spans, distributions)
