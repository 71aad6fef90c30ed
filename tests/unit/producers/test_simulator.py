"""The virtual company: deterministic, valid per docs/SEMANTICS.md, plausible, faults exact."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.simulator import (
    INVALID_REASONS,
    TOPICS,
    CompanySimulator,
    Emission,
    Faults,
    hour_of_week,
)
from schemas.errors import ConfigurationError

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
DAY = 86400.0
GRACE = 3600.0


def run(seed: int = 7, days: float = 30, **kwargs: Any) -> tuple[CompanySimulator, list[Emission]]:
    clock = START + days * DAY
    sim = CompanySimulator(seed, START, clock=lambda: clock, grace_seconds=GRACE, **kwargs)
    return sim, list(sim)


def as_bytes(emissions: Iterable[Emission]) -> list[tuple[str, str, bytes]]:
    return [
        (e.topic, e.key, e.payload if isinstance(e.payload, bytes) else orjson.dumps(e.payload))
        for e in emissions
    ]


# -- an independent checker: docs/SEMANTICS.md for one partition per topic ------------------

TYPES = {
    "invoices": {
        "invoice.received",
        "invoice.approved",
        "invoice.rejected",
        "invoice.paid",
        "invoice.issued",
        "payment.received",
    },
    "hiring": {
        "requisition.opened",
        "offer.accepted",
        "employee.hired",
        "employee.left",
        "survey.submitted",
        "training.completed",
    },
    "incidents": {
        "incident.opened",
        "incident.acknowledged",
        "incident.resolved",
        "ticket.opened",
        "ticket.resolved",
        "service.down",
        "service.up",
    },
}
FIELDS: dict[str, dict[str, str]] = {
    "invoice.received": {
        "invoice_id": "id",
        "amount": "amount",
        "currency": "currency",
        "department": "dim",
        "vendor_id": "id",
    },
    "invoice.approved": {"invoice_id": "id"},
    "invoice.rejected": {"invoice_id": "id", "reason": "str"},
    "invoice.paid": {"invoice_id": "id", "amount": "amount"},
    "invoice.issued": {
        "invoice_id": "id",
        "amount": "amount",
        "currency": "currency",
        "department": "dim",
        "customer_id": "id",
    },
    "payment.received": {"invoice_id": "id", "amount": "amount"},
    "requisition.opened": {"requisition_id": "id", "department": "dim"},
    "offer.accepted": {"requisition_id": "id", "candidate_id": "id"},
    "employee.hired": {"employee_id": "id", "department": "dim"},
    "employee.left": {"employee_id": "id", "voluntary": "bool"},
    "survey.submitted": {"response_id": "id", "department": "dim", "score": "score"},
    "training.completed": {
        "training_id": "id",
        "employee_id": "id",
        "department": "dim",
        "cost": "amount",
        "currency": "currency",
    },
    "incident.opened": {
        "incident_id": "id",
        "service": "dim",
        "severity": "severity",
        "category": "category",
    },
    "incident.acknowledged": {"incident_id": "id"},
    "incident.resolved": {"incident_id": "id"},
    "ticket.opened": {"ticket_id": "id", "queue": "dim", "priority": "priority"},
    "ticket.resolved": {"ticket_id": "id"},
    "service.down": {"service": "dim"},
    "service.up": {"service": "dim"},
}
KEY_FIELD = {
    "invoice": "invoice_id",
    "payment": "invoice_id",
    "requisition": "requisition_id",
    "offer": "requisition_id",
    "employee": "employee_id",
    "survey": "response_id",
    "training": "training_id",
    "incident": "incident_id",
    "ticket": "ticket_id",
    "service": "service",
}
DIM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ENUMS = {
    "severity": {"sev1", "sev2", "sev3", "sev4"},
    "priority": {"p1", "p2", "p3", "p4"},
    "category": {"outage", "security", "other"},
}


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def field_ok(kind: str, value: Any) -> bool:
    if kind == "id":
        return isinstance(value, str) and 1 <= len(value) <= 128 and value.isprintable()
    if kind == "dim":
        return isinstance(value, str) and bool(DIM.match(value)) and value != "all"
    if kind == "amount":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return False
        try:
            number = float(value)
        except ValueError:
            return False
        return math.isfinite(number) and 0 < number <= 1e12
    if kind == "currency":
        return isinstance(value, str) and bool(re.fullmatch(r"[A-Z]{3}", value))
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "score":
        return type(value) is int and 0 <= value <= 10
    if kind == "str":
        return isinstance(value, str)
    return value in ENUMS[kind]


@dataclass
class Checker:
    """Classifies each message as SEMANTICS does, with one partition per topic."""

    wall: float
    currency: str = "USD"
    watermark: dict[str, float] = field(default_factory=lambda: defaultdict(lambda: -math.inf))
    applied_ids: set[str] = field(default_factory=set)
    entities: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)

    def feed(self, emission: Emission) -> str:
        outcome = self.classify(emission)
        self.outcomes[outcome] += 1
        return outcome

    def classify(self, emission: Emission) -> str:  # noqa: C901 - one rule per line, as in SEMANTICS
        topic, key, payload = emission
        if isinstance(payload, bytes):
            try:
                payload = orjson.loads(payload.decode())
            except (UnicodeDecodeError, orjson.JSONDecodeError):
                return "invalid_json"
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            return "schema"
        kind = payload["type"]
        occurred = parse_time(payload.get("occurred_at"))
        event_id = payload.get("event_id")
        if occurred is None or not (isinstance(event_id, str) and 1 <= len(event_id) <= 128):
            return "schema"
        spec = FIELDS.get(kind, {})
        if any(name not in payload or not field_ok(k, payload[name]) for name, k in spec.items()):
            return "schema"
        if kind not in TYPES[topic]:
            return "unknown_type"
        if "currency" in spec and payload["currency"] != self.currency:
            # Foreign money counts with the source's conversion, without it not at all.
            if not field_ok("amount", payload.get("reporting_amount")):
                return "currency"
        if occurred > self.wall + 300:
            return "future"
        if event_id in self.applied_ids:
            return "duplicate"
        if occurred < self.watermark[topic] - GRACE:
            return "late"
        # Every valid message is keyed by its entity (SPEC "message key").
        assert key == payload[KEY_FIELD[kind.split(".")[0]]], (key, payload)
        verdict = self.lifecycle(kind, payload, occurred)
        if verdict == "applied":
            self.applied_ids.add(event_id)
            self.watermark[topic] = max(self.watermark[topic], occurred)
        return verdict

    def lifecycle(self, kind: str, e: dict[str, Any], t: float) -> str:  # noqa: C901
        def start(namespace: str, entity_id: str, **state: Any) -> str:
            if (namespace, entity_id) in self.entities:
                return "invalid_transition"
            self.entities[namespace, entity_id] = {"start": t, **state}
            return "applied"

        def get(namespace: str, entity_id: str) -> dict[str, Any] | None:
            return self.entities.get((namespace, entity_id))

        if kind in ("invoice.received", "invoice.issued"):
            side = "ap" if kind == "invoice.received" else "ar"
            amount = float(e["amount"])
            return start(
                "invoice", e["invoice_id"], side=side, status="open", amount=amount, paid=0
            )
        if kind == "requisition.opened":
            return start("requisition", e["requisition_id"], done=False)
        if kind == "employee.hired":
            return start("employee", e["employee_id"], done=False)
        if kind == "incident.opened":
            return start("incident", e["incident_id"], acked=False, done=False)
        if kind == "ticket.opened":
            return start("ticket", e["ticket_id"], done=False)
        if kind in ("survey.submitted", "training.completed", "service.down", "service.up"):
            return "applied"
        namespace = {"payment": "invoice", "offer": "requisition"}.get(
            kind.split(".")[0], kind.split(".")[0]
        )
        state = get(namespace, e[KEY_FIELD[kind.split(".")[0]]])
        if state is None:
            return "unknown_entity"
        if t < state["start"]:
            return "invalid_transition"
        if namespace == "invoice":
            if kind in ("invoice.approved", "invoice.rejected"):
                if state["side"] != "ap" or state["status"] != "open":
                    return "invalid_transition"
                state["status"] = kind.split(".")[1]
                return "applied"
            side = "ap" if kind == "invoice.paid" else "ar"
            if state["side"] != side or (side == "ap" and state["status"] != "approved"):
                return "invalid_transition"
            if state["paid"] + float(e["amount"]) > state["amount"] + 1e-6:
                return "invalid_transition"
            state["paid"] += float(e["amount"])
            return "applied"
        if kind == "incident.acknowledged":
            if state["acked"] or state["done"]:
                return "invalid_transition"
            state["acked"] = True
            return "applied"
        if state["done"]:
            return "invalid_transition"
        state["done"] = True
        return "applied"


def checked(sim: CompanySimulator, emissions: list[Emission], wall: float) -> Checker:
    checker = Checker(wall=wall, currency=sim.currency)
    for emission in emissions:
        checker.feed(emission)
    return checker


# -- determinism ---------------------------------------------------------------------------

FAULTY = Faults.spread(out_of_order=0.05, late=0.01, duplicates=0.02, invalid=0.07)


def test_same_seed_same_stream() -> None:
    _, first = run(seed=11, days=10, faults=FAULTY)
    _, second = run(seed=11, days=10, faults=FAULTY)
    assert len(first) > 1000
    assert as_bytes(first) == as_bytes(second)


def test_different_seed_different_stream() -> None:
    _, first = run(seed=11, days=3)
    _, second = run(seed=12, days=3)
    assert as_bytes(first) != as_bytes(second)
    # Different runs never share an event id, so both can feed one processor.
    ids = {e.payload["event_id"] for e in first if isinstance(e.payload, dict)}
    assert not ids & {e.payload["event_id"] for e in second if isinstance(e.payload, dict)}


def test_pausing_at_the_clock_does_not_change_the_stream() -> None:
    # Injected "future" events are placed ahead of the clock: leave them out to compare.
    reasons = [r for r in INVALID_REASONS if r != "future"]
    faults = Faults.spread(
        out_of_order=0.05, late=0.01, duplicates=0.02, invalid=0.07, reasons=reasons
    )
    now = START
    sim = CompanySimulator(5, START, clock=lambda: now, grace_seconds=GRACE, faults=faults)
    pieces: list[Emission] = []
    for hour in range(1, 6 * 24 + 1):
        now = START + hour * 3600
        pieces.extend(sim)
        assert sim.now <= now
    _, whole = run(seed=5, days=6, faults=faults)
    assert len(pieces) > 1000
    assert as_bytes(pieces) == as_bytes(whole)


# -- validity ------------------------------------------------------------------------------


def test_clean_stream_is_valid_json_in_publication_order() -> None:
    days = 75
    sim, emissions = run(seed=3, days=days)
    checker = checked(sim, emissions, wall=START + days * DAY)
    assert checker.outcomes == Counter(applied=len(emissions))
    assert sim.injected == {}
    for emission in emissions:
        assert emission.topic in TOPICS
        assert isinstance(emission.payload, dict)
        assert orjson.loads(orjson.dumps(emission.payload)) == emission.payload
        assert emission.payload["occurred_at"].endswith("Z")
        for name in ("amount", "cost"):
            if name in emission.payload:
                assert round(emission.payload[name], 2) == emission.payload[name]
    # Without out-of-order faults, publication order is event-time order.
    times = [parse_time(e.payload["occurred_at"]) for e in emissions if isinstance(e.payload, dict)]
    assert times == sorted(times)
    assert times[-1] is not None and times[-1] <= START + days * DAY


@pytest.mark.parametrize("currencies", [(), ("EUR", "GBP", "JPY")])
def test_payments_settle_invoices_exactly_without_overpaying(currencies: tuple[str, ...]) -> None:
    # Foreign invoices are paid in their own currency: the same holds in it.
    sim, emissions = run(seed=4, days=150, domains=["invoices"], currencies=currencies)
    amount: dict[str, float] = {}
    paid: Counter[str] = Counter()
    for e in emissions:
        p = e.payload
        assert isinstance(p, dict)
        if p["type"] in ("invoice.received", "invoice.issued"):
            amount[p["invoice_id"]] = p["amount"]
        elif p["type"] in ("invoice.paid", "payment.received"):
            paid[p["invoice_id"]] += round(p["amount"] * 100)
    assert all(cents <= round(amount[i] * 100) for i, cents in paid.items())
    # Invoices whose payments all fell inside the horizon are settled to the cent.
    settled = sum(1 for i, cents in paid.items() if cents == round(amount[i] * 100))
    assert settled > 0.6 * len(paid)


def test_simulated_time_never_passes_the_clock() -> None:
    clock = START + 2 * DAY
    sim = CompanySimulator(1, START, clock=lambda: clock, faults=FAULTY)
    emissions = list(sim)
    assert emissions and sim.now <= clock
    assert sim.next_time() > clock
    assert sim.take() is None  # and it stays caught up until the clock moves
    clock += 3600
    more = list(sim)
    assert more and sim.now <= clock


def test_nothing_before_the_start_is_due() -> None:
    sim = CompanySimulator(1, START, clock=lambda: START - 1)
    assert list(sim) == []


# -- faults --------------------------------------------------------------------------------


def test_faults_are_reported_exactly_and_classified_as_intended() -> None:
    days = 20
    sim, emissions = run(seed=9, days=days, faults=FAULTY)
    checker = checked(sim, emissions, wall=START + days * DAY)
    injected = sim.injected
    outcomes = dict(checker.outcomes)
    applied = outcomes.pop("applied")
    assert outcomes == {k: v for k, v in injected.items() if k != "out_of_order"}
    assert set(injected) == {"out_of_order", "late", "duplicate", *INVALID_REASONS}
    clean = applied  # out-of-order events are clean too: applied like any other
    assert clean + sum(outcomes.values()) == len(emissions)
    # Rates are per clean event; each count within a loose binomial band.
    expected = {"out_of_order": 0.05, "late": 0.01, "duplicate": 0.02}
    expected |= {reason: 0.01 for reason in INVALID_REASONS}
    for kind, rate in expected.items():
        mean = rate * clean
        assert abs(injected[kind] - mean) < 5 * math.sqrt(mean) + 5, (kind, injected[kind], mean)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    out_of_order=st.floats(0, 0.3),
    late=st.floats(0, 0.1),
    duplicates=st.floats(0, 0.1),
    invalid=st.floats(0, 0.3),
    reasons=st.sets(st.sampled_from(INVALID_REASONS), min_size=1),
    domains=st.sets(st.sampled_from(TOPICS), min_size=1),
)
def test_any_fault_mix_is_reported_exactly(
    seed: int,
    out_of_order: float,
    late: float,
    duplicates: float,
    invalid: float,
    reasons: set[str],
    domains: set[str],
) -> None:
    faults = Faults.spread(
        out_of_order=out_of_order,
        late=late,
        duplicates=duplicates,
        invalid=invalid,
        reasons=sorted(reasons),
    )
    days = 4
    sim, emissions = run(seed=seed, days=days, faults=faults, domains=sorted(domains), scale=0.5)
    checker = checked(sim, emissions, wall=START + days * DAY)
    outcomes = dict(checker.outcomes)
    outcomes.pop("applied", None)
    assert outcomes == {k: v for k, v in sim.injected.items() if k != "out_of_order"}
    assert {e.topic for e in emissions} <= set(domains)


def test_out_of_order_stays_within_grace() -> None:
    sim, emissions = run(seed=2, days=10, faults=Faults(out_of_order=0.2))
    lags = []
    newest: dict[str, float] = defaultdict(lambda: -math.inf)
    for e in emissions:
        assert isinstance(e.payload, dict)
        t = parse_time(e.payload["occurred_at"])
        assert t is not None
        lags.append(newest[e.topic] - t)
        newest[e.topic] = max(newest[e.topic], t)
    assert sim.injected["out_of_order"] > 0.15 * len(emissions)
    assert max(lags) < GRACE
    assert sum(lag > 0 for lag in lags) > 0.05 * len(emissions)


def test_faults_leave_the_company_unchanged() -> None:
    days = 8
    _, faulty = run(seed=6, days=days, faults=FAULTY)
    _, clean = run(seed=6, days=days)
    _, shorter = run(seed=6, days=days - GRACE / DAY)

    def company(emissions: list[Emission]) -> dict[str, bytes]:
        return {
            e.payload["event_id"]: orjson.dumps(e.payload)
            for e in emissions
            if isinstance(e.payload, dict) and "-x" not in e.payload.get("event_id", "-x")
        }

    faulty_events, clean_events = company(faulty), company(clean)
    # Delayed events may still be waiting at the horizon, never for more than grace.
    assert company(shorter).keys() <= faulty_events.keys() <= clean_events.keys()
    assert all(clean_events[i] == body for i, body in faulty_events.items())


def test_invalid_events_only_where_possible() -> None:
    # No incidents event carries a currency: with only that domain, none is injected.
    faults = Faults(invalid={"currency": 0.5, "schema": 0.1})
    sim, emissions = run(seed=1, days=2, domains=["incidents"], faults=faults)
    assert {e.topic for e in emissions} == {"incidents"}
    assert "currency" not in sim.injected
    assert sim.injected["schema"] > 0


def test_decoder_agrees_on_decode_level_reasons() -> None:
    decode_module = pytest.importorskip("schemas.decode")
    invalid_event = pytest.importorskip("schemas.errors").InvalidEvent
    reasons = ("invalid_json", "schema", "unknown_type", "currency")
    faults = Faults(invalid=dict.fromkeys(reasons, 0.02))
    sim, emissions = run(seed=8, days=5, faults=faults)
    checker = Checker(wall=START + 5 * DAY)
    seen: Counter[str] = Counter()
    for emission in emissions:
        expected = checker.feed(emission)
        raw = emission.payload
        raw = raw if isinstance(raw, bytes) else orjson.dumps(raw)
        try:
            decode_module.decode(raw, topic=emission.topic, currency="USD")
        except invalid_event as exc:
            seen[exc.reason] += 1
            assert exc.reason == expected, (exc, emission)
        else:
            assert expected not in reasons, emission
    assert dict(seen) == {r: sim.injected[r] for r in reasons}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"faults": Faults.spread(invalid=0.1, reasons=["schema"])}, None),
        ({"domains": ["payroll"]}, "domains"),
        ({"domains": []}, "domains"),
        ({"scale": 0}, "scale"),
        ({"grace_seconds": -1}, "grace"),
    ],
)
def test_arguments_are_checked(kwargs: dict[str, Any], message: str | None) -> None:
    if message is None:
        CompanySimulator(1, START, clock=lambda: START, **kwargs)
        return
    with pytest.raises(ConfigurationError, match=message):
        CompanySimulator(1, START, clock=lambda: START, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"late": 1.5}, {"duplicates": -0.1}, {"invalid": {"late": 0.1}}, {"invalid": {"x": 0.1}}],
)
def test_fault_rates_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Faults(**kwargs)


# -- a plausible company -------------------------------------------------------------------


@pytest.fixture(scope="module")
def quarter() -> list[dict[str, Any]]:
    _, emissions = run(seed=21, days=120)
    events = [e.payload for e in emissions]
    assert all(isinstance(p, dict) for p in events)
    return events  # type: ignore[return-value]


def by_type(events: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in types]


def durations(events: list[dict[str, Any]], id_field: str, start: str, end: str) -> list[float]:
    started = {e[id_field]: parse_time(e["occurred_at"]) for e in by_type(events, start)}
    return [
        parse_time(e["occurred_at"]) - started[e[id_field]]  # type: ignore[operator]
        for e in by_type(events, end)
    ]


def test_shape_of_accounts_payable(quarter: list[dict[str, Any]]) -> None:
    rejected = len(by_type(quarter, "invoice.rejected"))
    decided = rejected + len(by_type(quarter, "invoice.approved"))
    assert 0.04 <= rejected / decided <= 0.09
    hours = statistics.median(
        d / 3600 for d in durations(quarter, "invoice_id", "invoice.received", "invoice.approved")
    )
    assert 4 <= hours <= 24 * 5  # hours to days
    parts = Counter(e["invoice_id"] for e in by_type(quarter, "invoice.paid"))
    assert 1.2 <= statistics.mean(parts.values()) <= 2.0  # 1-3 partial payments


def test_shape_of_receivables_gives_dso_of_one_to_two_months(quarter: list[dict[str, Any]]) -> None:
    issued = {e["invoice_id"]: e for e in by_type(quarter, "invoice.issued")}
    # Amount-weighted days from issue to payment, for invoices issued in the first month.
    first_month = {i for i, e in issued.items() if parse_time(e["occurred_at"]) < START + 30 * DAY}  # type: ignore[operator]
    weighted = total = 0.0
    for e in by_type(quarter, "payment.received"):
        if e["invoice_id"] in first_month:
            start = parse_time(issued[e["invoice_id"]]["occurred_at"])
            days = (parse_time(e["occurred_at"]) - start) / DAY  # type: ignore[operator]
            weighted += days * e["amount"]
            total += e["amount"]
    assert 30 <= weighted / total <= 60


def test_office_hours_and_weekdays_dominate(quarter: list[dict[str, Any]]) -> None:
    per_hour = Counter(
        hour_of_week(parse_time(e["occurred_at"]))  # type: ignore[arg-type]
        for e in by_type(quarter, "invoice.received", "ticket.opened", "survey.submitted")
    )
    office = statistics.mean(per_hour[d * 24 + h] for d in range(5) for h in range(9, 17))
    night = statistics.mean(per_hour[d * 24 + h] for d in range(5) for h in range(0, 6))
    weekend = statistics.mean(per_hour[d * 24 + h] for d in (5, 6) for h in range(9, 17))
    assert office > 10 * night
    assert office > 5 * weekend


def test_shape_of_it(quarter: list[dict[str, Any]]) -> None:
    opened = by_type(quarter, "incident.opened")
    security = sum(e["category"] == "security" for e in opened) / len(opened)
    assert 0.01 <= security <= 0.07
    assert {e["severity"] for e in opened} == {"sev1", "sev2", "sev3", "sev4"}
    ack = durations(quarter, "incident_id", "incident.opened", "incident.acknowledged")
    assert 60 <= statistics.median(ack) <= 3600  # minutes
    fix = durations(quarter, "incident_id", "incident.opened", "incident.resolved")
    assert 3600 <= statistics.median(fix) <= 24 * 3600  # hours
    tickets = durations(quarter, "ticket_id", "ticket.opened", "ticket.resolved")
    assert 1800 <= statistics.median(tickets) <= 24 * 3600
    status = by_type(quarter, "service.down", "service.up")
    assert {e["service"] for e in status} <= {"erp", "crm", "email", "payroll", "vpn", "website"}
    down_since: dict[str, float] = {}
    outages, repeats = [], 0
    for e in status:
        t = parse_time(e["occurred_at"])
        assert t is not None
        if e["type"] == "service.down":
            repeats += e["service"] in down_since
            down_since.setdefault(e["service"], t)
        else:
            outages.append(t - down_since.pop(e["service"]))
    assert 60 <= statistics.median(outages) <= 4 * 3600  # minutes to hours
    assert repeats > 0


def test_shape_of_people(quarter: list[dict[str, Any]]) -> None:
    scores = [e["score"] for e in by_type(quarter, "survey.submitted")]
    assert 7.0 <= statistics.mean(scores) <= 8.5
    assert Counter(scores).most_common(1)[0][0] in (7, 8, 9)
    to_hire = durations(quarter, "requisition_id", "requisition.opened", "offer.accepted")
    assert 15 * DAY <= statistics.median(to_hire) <= 50 * DAY
    hires = by_type(quarter, "employee.hired")
    assert len({e["department"] for e in hires}) == 6
    left = by_type(quarter, "employee.left")
    assert left and 0.5 <= statistics.mean(e["voluntary"] for e in left) <= 0.95
    costs = [e["cost"] for e in by_type(quarter, "training.completed")]
    assert 300 <= statistics.median(costs) <= 3000


def test_future_faults_are_ahead_of_the_wall_clock_when_the_simulated_clock_lags() -> None:
    # `kpi simulate --start 2d --speed 300` paces a simulated clock two days behind the real
    # one; a "future" event must still be future for the worker, which reads the wall clock.
    wall = 1_800_000_000.0
    simulated_now = wall - 2 * 86400
    sim = CompanySimulator(
        3,
        simulated_now - 5 * 86400,
        clock=lambda: simulated_now,
        wall_clock=lambda: wall,
        faults=Faults(invalid={"future": 0.05}),
    )
    future = [
        e.payload
        for e in sim
        if isinstance(e.payload, dict)
        and e.payload.get("event_id", "").startswith("sim-3")
        and "x" in e.payload["event_id"].rsplit("-", 1)[-1]
    ]
    times = [datetime.fromisoformat(p["occurred_at"]).timestamp() for p in future]
    assert sim.injected["future"] > 0
    assert len([t for t in times if t > wall + 300]) == sim.injected["future"]


# -- currencies and time zones -------------------------------------------------------------


def local_day(event: dict[str, Any], offset_s: float = 0.0) -> int:
    return int((parse_time(event["occurred_at"]) + offset_s) // DAY)  # type: ignore[operator]


def test_foreign_invoices_are_booked_at_a_daily_rate_and_paid_in_their_currency() -> None:
    days = 40
    sim, emissions = run(seed=9, days=days, currencies=["EUR", "GBP"])
    checker = checked(sim, emissions, wall=START + days * DAY)
    assert checker.outcomes == Counter(applied=len(emissions))  # all valid, all applied
    events = [e.payload for e in emissions]
    assert all(isinstance(p, dict) for p in events)
    priced = [p for p in events if "currency" in p]  # type: ignore[operator]
    foreign = [p for p in priced if p["currency"] != "USD"]  # type: ignore[index]
    assert {p["currency"] for p in foreign} == {"EUR", "GBP"}  # type: ignore[index]
    assert {p["type"] for p in foreign} == {  # type: ignore[index]
        "invoice.received",
        "invoice.issued",
        "training.completed",
    }
    assert 0.2 <= len(foreign) / len(priced) <= 0.4
    assert all("reporting_amount" not in p for p in priced if p["currency"] == "USD")  # type: ignore[index]
    # One rate per currency and day (within the rounding of cents), moving from day to day.
    rates: dict[tuple[str, int], list[float]] = defaultdict(list)
    for p in foreign:
        assert isinstance(p, dict)
        money = p.get("amount", p.get("cost"))
        assert round(p["reporting_amount"], 2) == p["reporting_amount"] > 0
        if money >= 100:
            rates[p["currency"], local_day(p)].append(p["reporting_amount"] / money)
    for day_rates in rates.values():
        assert max(day_rates) / min(day_rates) < 1.001
    eur = [statistics.mean(r) for (c, _), r in sorted(rates.items()) if c == "EUR"]
    assert 0.9 < min(eur) and max(eur) < 1.3  # about 1.08 USD per EUR
    assert len({round(r, 4) for r in eur}) > 10  # a new rate most days
    # Payments are in the invoice's currency (test_payments_settle_invoices_exactly...).
    owed = {p["invoice_id"] for p in foreign if "invoice_id" in p}  # type: ignore[index]
    payments = [
        p
        for p in events
        if p["type"] in ("invoice.paid", "payment.received") and p["invoice_id"] in owed  # type: ignore[index]
    ]
    assert len(payments) > 100
    assert not any("currency" in p or "reporting_amount" in p for p in payments)  # type: ignore[operator]


def test_currencies_leave_the_rest_of_the_company_unchanged() -> None:
    _, plain = run(seed=9, days=20)
    _, mixed = run(seed=9, days=20, currencies=["JPY", "GBP"])

    def shape(e: Emission) -> tuple[str, str, str, str]:
        assert isinstance(e.payload, dict)
        return e.topic, e.key, e.payload["event_id"], e.payload["occurred_at"]

    assert [shape(e) for e in mixed] == [shape(e) for e in plain]
    same = sum(a.payload == b.payload for a, b in zip(plain, mixed, strict=True))
    assert 0.7 < same / len(plain) < 1  # all but the foreign money and its payments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"currencies": ["eur"]}, "not an ISO 4217"),
        ({"currencies": ["EURO"]}, "not an ISO 4217"),
        ({"currencies": ["EUR", "USD"]}, "reporting currency"),
        ({"currencies": ["GBP"], "currency": "GBP"}, "reporting currency"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"timezone": ""}, "unknown time zone"),
    ],
)
def test_currency_and_zone_arguments_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CompanySimulator(1, START, clock=lambda: START, **kwargs)


def office_and_night(events: list[dict[str, Any]], offset_s: float) -> tuple[float, float]:
    """Mean arrivals per weekday office hour (9-17) and night hour (0-6), at ``offset_s``."""
    per_hour = Counter(
        hour_of_week(parse_time(e["occurred_at"]) + offset_s)  # type: ignore[operator]
        for e in by_type(events, "invoice.received", "ticket.opened", "survey.submitted")
    )
    office = statistics.mean(per_hour[d * 24 + h] for d in range(5) for h in range(9, 17))
    night = statistics.mean(per_hour[d * 24 + h] for d in range(5) for h in range(0, 6))
    return office, night


def test_office_hours_follow_the_time_zone() -> None:
    # New York in January is UTC-5: its office hours are 14:00-22:00 UTC.
    new_york = -5 * 3600.0
    _, zoned = run(seed=21, days=28, timezone="America/New_York")
    _, utc = run(seed=21, days=28)
    zoned_events = [e.payload for e in zoned if isinstance(e.payload, dict)]
    utc_events = [e.payload for e in utc if isinstance(e.payload, dict)]
    office, night = office_and_night(zoned_events, new_york)
    assert office > 10 * night
    # Without the zone, New York's night (05:00-11:00 UTC) is a UTC morning at the office.
    office, night = office_and_night(utc_events, new_york)
    assert office < 3 * night


def test_office_hours_follow_daylight_saving_time() -> None:
    # Berlin moves from UTC+1 to UTC+2 on 2026-03-29: the morning peak moves an hour in UTC.
    start = 1_773_532_800.0  # 2026-03-15T00:00:00Z
    days = 28
    sim = CompanySimulator(3, start, clock=lambda: start + days * DAY, timezone="Europe/Berlin")
    events = [e.payload for e in sim if isinstance(e.payload, dict)]
    change = 1_774_746_000.0  # 2026-03-29T01:00:00Z
    winter = [e for e in events if parse_time(e["occurred_at"]) < change]  # type: ignore[operator]
    summer = [e for e in events if parse_time(e["occurred_at"]) >= change]  # type: ignore[operator]
    for part, offset_s in ((winter, 3600.0), (summer, 7200.0)):
        # On weekdays the office opens at 07:00 local (intensity 0.25 after 0.03 at night):
        # an offset off by the hour would see the same night level in both hours.
        per_hour = Counter(
            hour_of_week(parse_time(e["occurred_at"]) + offset_s)  # type: ignore[operator]
            for e in by_type(part, "invoice.received", "ticket.opened", "survey.submitted")
        )
        night = sum(per_hour[d * 24 + 6] for d in range(5))
        opening = sum(per_hour[d * 24 + 7] for d in range(5))
        assert opening > 4 * max(night, 1)
