"""Random but meaningful event logs for property-based and integration tests.

A small simulated back office (3 departments, 3 services, 3 queues) publishes plausible
lifecycles on the three input topics; with ``faults`` it also misbehaves: events out of
order within the grace period, late events, redeliveries of earlier messages, and invalid
events of every dead-letter reason.  A log ends (unless ``flush=False``; the strategy
leaves it out in about 1 log of 10) with one "flush" event per partition of every topic,
dated :func:`flush_time`: then every 1h and 1d window holding a regular event closes, and
every 30d window ending by the end of the last day (UTC days; :func:`calendar_flush_time`
for the local days of a business time zone).

* :func:`random_log` — a plain seeded generator for larger integration logs.
* :func:`event_logs` — a hypothesis strategy of ``(messages, partitions, now)``.
* :func:`calendar_logs` — a hypothesis strategy of :class:`CalendarLog`: logs in a business
  time zone and fiscal year that cross a clock change, a month, quarter or year end.

Messages are keyed like the real producers (SPEC message keys) and placed on partition
``zlib.crc32(key) % n``; offsets increase per partition from 0.  Event times are multiples
of 0.25 s and amounts multiples of 0.25, so every sum the KPIs need is exact in floats.
A quarter of the invoices and trainings are in a foreign currency, with a
``reporting_amount`` booked at a rate of m/128: then the conversion of every payment
(``reporting * paid / amount``) is exact in floats too.
"""

from __future__ import annotations

import itertools
import math
import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.reference import DAY, HOUR, TOPICS, Calendar, Message

DEPARTMENTS = ("finance", "hr", "it-ops")
SERVICES = ("api", "billing", "web")
QUEUES = ("desk", "access", "hardware")
CURRENCY = "USD"
FOREIGN_CURRENCIES = ("EUR", "GBP", "JPY")
BASE_TIME = 1_700_000_000  # 2023-11-14T22:13:20Z

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OFFSETS = (None, None, None, None, 0, 120, -300, 330, -570)  # minutes; None = "Z"


def partition_for(key: str, n: int) -> int:
    """The partition a message with this key lands on (stable across runs)."""
    return zlib.crc32(key.encode()) % n


def format_ts(t: float, offset_minutes: int | None = None) -> str:
    """RFC 3339 for Unix seconds ``t``, with ``Z`` or the given offset from UTC."""
    local = t + (offset_minutes or 0) * 60
    secs = math.floor(local)
    text = (_EPOCH + timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%S")
    frac = local - secs
    if frac:
        text += f".{round(frac * 1000):03d}"
    if offset_minutes is None:
        return text + "Z"
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def flush_time(start: float, days: float, grace: float = 3600) -> float:
    """Event time of the final flush events: every 1h/1d window of the log closes."""
    last = start + days * DAY
    return (math.floor(last / DAY) + 1) * DAY + grace + 60


def calendar_flush_time(
    start: float, days: float, timezone: str, grace: float = 3600, after_days: int = 0
) -> float:
    """Like :func:`flush_time` for the local days of ``timezone``: the flush closes the last
    local day of the log (and ``after_days`` more days)."""
    last_day = Calendar(timezone).containing("1d", start + days * DAY)[0]
    return last_day.end + after_days * DAY + grace + 60


def log_now(start: float, days: float, grace: float = 3600) -> float:
    """The wall clock a log of :func:`random_log` is meant for (after every regular event)."""
    return flush_time(start, days, grace) + 60


@dataclass
class _Record:
    topic: str
    partition: int
    key: str | None
    emit: float  # cursor time when the source sent it
    seq: int
    value: bytes
    arrival: float = 0.0


class _Builder:
    """The simulated back office; ``rnd`` drives every choice."""

    def __init__(
        self,
        rnd: random.Random,
        partitions: Mapping[str, int],
        start: float,
        days: float,
        grace: float,
        now: float,
        faults: bool,
        flush_at: float | None = None,
    ) -> None:
        self.rnd = rnd
        self.partitions = dict(partitions)
        self.start = float(start)
        self.days = days
        self.end = self.start + days * DAY
        self.grace = grace
        self.now = now
        self.faults = faults
        self.flush_at = flush_time(start, days, grace) if flush_at is None else flush_at
        self.t = self.start
        self.records: list[_Record] = []
        self.counter = 0
        # what the source systems believe (only valid events change it)
        self.ap: dict[str, dict[str, Any]] = {}  # id -> {t, q (quarters), status, paid}
        self.ar: dict[str, dict[str, Any]] = {}  # id -> {t, q, paid}
        self.requisitions: dict[str, dict[str, Any]] = {}  # id -> {t, accepted}
        self.employees: dict[str, dict[str, Any]] = {}  # id -> {t, left}
        self.incidents: dict[str, dict[str, Any]] = {}  # id -> {t, status}
        self.tickets: dict[str, dict[str, Any]] = {}  # id -> {t, resolved}
        self.service_down: dict[str, bool] = dict.fromkeys(SERVICES, False)
        # entities started together and, if still open, finished together: id -> members
        self.bursts: dict[str, list[str]] = {}

    # ---- helpers ------------------------------------------------------------------
    def _next(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter:06d}"

    def _amount_q(self, low: int = 4, high: int = 200_000) -> int:
        return self.rnd.randint(low, high)  # quarters: 1.00 .. 50,000.00

    def _amount(self, quarters: int) -> Any:
        x = quarters / 4
        r = self.rnd.random()
        if r < 0.3:
            return f"{x:.2f}"  # numeric string
        if r < 0.5 and x == int(x):
            return int(x)
        return x

    def _money(self, quarters: int, field: str = "amount") -> dict[str, Any]:
        """``field`` (amount or cost), ``currency`` and, if foreign, ``reporting_amount``."""
        money: dict[str, Any] = {field: self._amount(quarters)}
        draw = self.rnd.random()
        if draw < 0.25:
            rate = self.rnd.randint(16, 512) / 128  # 0.125 .. 4, exact
            money["currency"] = self.rnd.choice(FOREIGN_CURRENCIES)
            money["reporting_amount"] = self._exact(quarters / 4 * rate)
        else:
            money["currency"] = CURRENCY
            if draw > 0.95:  # ignored in the reporting currency
                money["reporting_amount"] = self._exact(self.rnd.randint(1, 9) / 4)
        return money

    def _exact(self, x: float) -> Any:
        """``x`` as a JSON number or a numeric string that parses back to exactly ``x``."""
        if self.rnd.random() < 0.3:
            return repr(x)
        return int(x) if x == int(x) else x

    def _payload(self, etype: str, t: float, **fields: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "event_id": self._next("ev"),
            "type": etype,
            "occurred_at": format_ts(t, self.rnd.choice(_OFFSETS)),
        }
        doc.update(fields)
        if self.rnd.random() < 0.05:
            doc["source"] = "erp"  # unknown extra fields are ignored
        return doc

    def _send(self, topic: str, key: str | None, value: dict[str, Any] | bytes) -> _Record:
        n = self.partitions[topic]
        partition = partition_for(key, n) if key is not None else self.rnd.randrange(n)
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        rec = _Record(topic, partition, key, self.t, len(self.records), raw)
        self.records.append(rec)
        return rec

    def _emit(self, topic: str, key: str, etype: str, t: float | None = None, **f: Any) -> None:
        self._send(topic, key, self._payload(etype, self.t if t is None else t, **f))

    def _pick(
        self, table: dict[str, dict[str, Any]], cond: Callable[[dict[str, Any]], bool]
    ) -> str | None:
        """A random id among the 300 newest of ``table`` that satisfy ``cond``."""
        newest = itertools.islice(reversed(table.items()), 300)
        ids = [k for k, v in newest if cond(v)]
        return self.rnd.choice(ids) if ids else None

    # ---- valid events -------------------------------------------------------------
    def ap_receive(
        self, inv: str | None = None, vendor: str | None = None, dept: str | None = None
    ) -> None:
        inv = inv or self._next("inv")
        q = self._amount_q()
        self.ap[inv] = {"t": self.t, "q": q, "status": "received", "paid": 0}
        self._emit(
            "invoices",
            inv,
            "invoice.received",
            invoice_id=inv,
            **self._money(q),
            department=dept or self.rnd.choice(DEPARTMENTS),
            vendor_id=vendor or f"v-{self.rnd.randint(1, 20)}",
        )

    def ap_decide(self) -> None:
        inv = self._pick(self.ap, lambda v: v["status"] == "received")
        if inv is None:
            return self.ap_receive()
        if self.rnd.random() < 0.75:
            self.ap[inv]["status"] = "approved"
            self._emit("invoices", inv, "invoice.approved", invoice_id=inv)
        else:
            self.ap[inv]["status"] = "rejected"
            reason = self.rnd.choice(["wrong amount", "duplicate", "no PO"])
            self._emit("invoices", inv, "invoice.rejected", invoice_id=inv, reason=reason)
        return None

    def ap_pay(self) -> None:
        inv = self._pick(self.ap, lambda v: v["status"] == "approved" and v["paid"] < v["q"])
        if inv is None:
            return self.ap_decide()
        st_ = self.ap[inv]
        outstanding = st_["q"] - st_["paid"]
        q = outstanding if self.rnd.random() < 0.5 else self.rnd.randint(1, outstanding)
        st_["paid"] += q
        self._emit("invoices", inv, "invoice.paid", invoice_id=inv, amount=self._amount(q))
        return None

    def ar_issue(self) -> None:
        inv = self._next("ar")
        q = self._amount_q()
        self.ar[inv] = {"t": self.t, "q": q, "paid": 0}
        self._emit(
            "invoices",
            inv,
            "invoice.issued",
            invoice_id=inv,
            **self._money(q),
            department=self.rnd.choice(DEPARTMENTS),
            customer_id=f"c-{self.rnd.randint(1, 20)}",
        )

    def ar_pay(self) -> None:
        inv = self._pick(self.ar, lambda v: v["paid"] < v["q"])
        if inv is None:
            return self.ar_issue()
        st_ = self.ar[inv]
        outstanding = st_["q"] - st_["paid"]
        q = outstanding if self.rnd.random() < 0.4 else self.rnd.randint(1, outstanding)
        st_["paid"] += q
        self._emit("invoices", inv, "payment.received", invoice_id=inv, amount=self._amount(q))
        return None

    def req_open(self) -> None:
        req = self._next("req")
        self.requisitions[req] = {"t": self.t, "accepted": False}
        dept = self.rnd.choice(DEPARTMENTS)
        self._emit("hiring", req, "requisition.opened", requisition_id=req, department=dept)

    def offer_accept(self) -> None:
        req = self._pick(self.requisitions, lambda v: not v["accepted"])
        if req is None:
            return self.req_open()
        self.requisitions[req]["accepted"] = True
        cand = self._next("cand")
        self._emit("hiring", req, "offer.accepted", requisition_id=req, candidate_id=cand)
        return None

    def hire(self) -> None:
        emp = self._next("emp")
        self.employees[emp] = {"t": self.t, "left": False}
        dept = self.rnd.choice(DEPARTMENTS)
        self._emit("hiring", emp, "employee.hired", employee_id=emp, department=dept)

    def leave(self) -> None:
        emp = self._pick(self.employees, lambda v: not v["left"])
        if emp is None:
            return self.hire()
        self.employees[emp]["left"] = True
        vol = self.rnd.random() < 0.6
        self._emit("hiring", emp, "employee.left", employee_id=emp, voluntary=vol)
        return None

    def survey(self) -> None:
        resp = self._next("resp")
        self._emit(
            "hiring",
            resp,
            "survey.submitted",
            response_id=resp,
            department=self.rnd.choice(DEPARTMENTS),
            score=self.rnd.randint(0, 10),
        )

    def training(self) -> None:
        trn = self._next("trn")
        emp = self.rnd.choice(list(self.employees) or ["emp-external"])
        self._emit(
            "hiring",
            trn,
            "training.completed",
            training_id=trn,
            employee_id=emp,
            department=self.rnd.choice(DEPARTMENTS),
            **self._money(self._amount_q(4, 20_000), "cost"),
        )

    def incident_open(self, inc: str | None = None, service: str | None = None) -> None:
        inc = inc or self._next("inc")
        self.incidents[inc] = {"t": self.t, "status": "opened"}
        self._emit(
            "incidents",
            inc,
            "incident.opened",
            incident_id=inc,
            service=service or self.rnd.choice(SERVICES),
            severity=self.rnd.choice(["sev1", "sev2", "sev3", "sev4"]),
            category=self.rnd.choice(["outage", "security", "other", "other"]),
        )

    def incident_ack(self) -> None:
        inc = self._pick(self.incidents, lambda v: v["status"] == "opened")
        if inc is None:
            return self.incident_open()
        self.incidents[inc]["status"] = "acked"
        self._emit("incidents", inc, "incident.acknowledged", incident_id=inc)
        return None

    def incident_resolve(self) -> None:
        inc = self._pick(self.incidents, lambda v: v["status"] in ("opened", "acked"))
        if inc is None:
            return self.incident_open()
        self.incidents[inc]["status"] = "resolved"
        self._emit("incidents", inc, "incident.resolved", incident_id=inc)
        return None

    def ticket_open(self, tkt: str | None = None, queue: str | None = None) -> None:
        tkt = tkt or self._next("tkt")
        self.tickets[tkt] = {"t": self.t, "resolved": False}
        queue = queue or self.rnd.choice(QUEUES)
        prio = self.rnd.choice(["p1", "p2", "p3", "p4"])
        self._emit("incidents", tkt, "ticket.opened", ticket_id=tkt, queue=queue, priority=prio)

    def ticket_resolve(self) -> None:
        tkt = self._pick(self.tickets, lambda v: not v["resolved"])
        if tkt is None:
            return self.ticket_open()
        self.tickets[tkt]["resolved"] = True
        self._emit("incidents", tkt, "ticket.resolved", ticket_id=tkt)
        return None

    # ---- bursts: equal durations (ties among a window's worst) and durations of 0 ---
    def _burst(self, prefix: str, start: Callable[[str], None]) -> None:
        """2-5 entities started at once (a batch of invoices from one vendor, an outage that
        opens several incidents, a flood of tickets), a third of the time finished at once
        too (durations of 0); later, :meth:`finish_burst` finishes those left together."""
        members = [self._next(prefix) for _ in range(self.rnd.randint(2, 5))]
        for entity in members:
            start(entity)
        burst = self._next("burst")
        self.bursts[burst] = members
        if self.rnd.random() < 1 / 3:
            self._finish(burst)

    def burst_start(self) -> None:
        kind = self.rnd.randrange(3)
        if kind == 0:
            vendor = f"v-{self.rnd.randint(1, 20)}"
            dept = self.rnd.choice(DEPARTMENTS)
            self._burst("inv", lambda inv: self.ap_receive(inv, vendor, dept))
        elif kind == 1:
            service = self.rnd.choice(SERVICES)
            self._burst("inc", lambda inc: self.incident_open(inc, service))
        else:
            queue = self.rnd.choice(QUEUES)
            self._burst("tkt", lambda tkt: self.ticket_open(tkt, queue))

    def finish_burst(self) -> None:
        if not self.bursts:
            return self.burst_start()
        self._finish(self.rnd.choice(list(self.bursts)[-50:]))
        return None

    def _finish(self, burst: str) -> None:
        """Decide, resolve or acknowledge every member of a burst still open, at once."""
        for entity in self.bursts.pop(burst):
            if entity in self.ap and self.ap[entity]["status"] == "received":
                self.ap[entity]["status"] = "approved"
                self._emit("invoices", entity, "invoice.approved", invoice_id=entity)
            elif entity in self.incidents and self.incidents[entity]["status"] != "resolved":
                self.incidents[entity]["status"] = "resolved"
                self._emit("incidents", entity, "incident.resolved", incident_id=entity)
            elif entity in self.tickets and not self.tickets[entity]["resolved"]:
                self.tickets[entity]["resolved"] = True
                self._emit("incidents", entity, "ticket.resolved", ticket_id=entity)

    def service_status(self) -> None:
        service = self.rnd.choice(SERVICES)
        down = self.service_down[service]
        if self.rnd.random() < 0.25:
            new_down = down  # a repeat: changes nothing
        else:
            new_down = not down
        self.service_down[service] = new_down
        etype = "service.down" if new_down else "service.up"
        self._emit("incidents", service, etype, service=service)

    # ---- faults -------------------------------------------------------------------
    def fault_invalid_json(self) -> None:
        topic = self.rnd.choice(TOPICS)
        garbage = self.rnd.choice(
            [b"\xff\xfe\x00garbage", b"not json", b"", b'{"event_id": "x", "type": ', b"{}}"]
        )
        self._send(topic, None, garbage)

    def fault_schema(self) -> None:
        t = format_ts(self.t)
        dept = self.rnd.choice(DEPARTMENTS)
        resp = self._next("resp")
        survey = {
            "event_id": self._next("ev"),
            "type": "survey.submitted",
            "occurred_at": t,
            "response_id": resp,
            "department": dept,
            "score": 7,
        }
        variant = self.rnd.randrange(10)
        if variant == 0:  # a missing field
            del survey[self.rnd.choice(list(survey))]
            self._send("hiring", resp, survey)
        elif variant == 1:  # naive timestamp
            survey["occurred_at"] = t[:-1]
            self._send("hiring", resp, survey)
        elif variant == 2:  # reserved / bad dimension value
            survey["department"] = self.rnd.choice(["All", "all", "Finance", "-x", ""])
            self._send("hiring", resp, survey)
        elif variant == 3:  # score out of range
            survey["score"] = self.rnd.choice([11, -1, "7", 7.5])
            self._send("hiring", resp, survey)
        elif variant == 4:  # negative / zero / huge / non-numeric amount or reporting amount
            inv = self._next("inv")
            bad = self.rnd.choice([-10, 0, "-5.00", 2e12, "abc", None])
            money: dict[str, Any] = {"amount": bad, "currency": CURRENCY}
            if bad is not None and self.rnd.random() < 0.3:
                currency = self.rnd.choice([CURRENCY, "EUR"])
                money = {"amount": 10, "currency": currency, "reporting_amount": bad}
            doc = self._payload(
                "invoice.received",
                self.t,
                invoice_id=inv,
                **money,
                department=dept,
                vendor_id="v-1",
            )
            self._send("invoices", inv, doc)
        elif variant == 5:  # voluntary not a JSON boolean
            emp = self._pick(self.employees, lambda v: not v["left"]) or self._next("emp")
            doc = self._payload("employee.left", self.t, employee_id=emp, voluntary="yes")
            self._send("hiring", emp, doc)
        elif variant == 6:  # not an object
            self._send("hiring", resp, orjson.dumps([survey]))
        elif variant == 7:  # enumeration not exact lowercase
            inc = self._next("inc")
            doc = self._payload(
                "incident.opened",
                self.t,
                incident_id=inc,
                service=self.rnd.choice(SERVICES),
                severity="SEV1",
                category="outage",
            )
            self._send("incidents", inc, doc)
        elif variant == 8:  # empty event_id / id not a string
            survey["event_id"] = self.rnd.choice(["", 17])
            self._send("hiring", resp, survey)
        else:  # timestamp not a timestamp
            survey["occurred_at"] = self.rnd.choice(["yesterday", 1_700_000_000, t[:10]])
            self._send("hiring", resp, survey)

    def fault_unknown_type(self) -> None:
        if self.rnd.random() < 0.5:
            inv = self._next("inv")
            self._emit("invoices", inv, "invoice.cancelled", invoice_id=inv)
        else:  # a valid event of another topic
            tkt = self._next("tkt")
            self._emit("invoices", tkt, "ticket.opened", ticket_id=tkt, queue="desk", priority="p3")

    def fault_currency(self) -> None:
        dept = self.rnd.choice(DEPARTMENTS)
        # A foreign currency without (or with a null) reporting_amount, or not a code at all.
        currency: str = "EUR"
        extra: dict[str, Any] = {}
        variant = self.rnd.randrange(4)
        if variant == 1:
            extra = {"reporting_amount": None}
        elif variant == 2:
            currency, extra = self.rnd.choice(["eur", "EURO", "E1R", ""]), {"reporting_amount": 5}
        if self.rnd.random() < 0.5:
            inv = self._next("inv")
            etype = self.rnd.choice(["invoice.received", "invoice.issued"])
            party = {"vendor_id": "v-9"} if etype == "invoice.received" else {"customer_id": "c-9"}
            self._emit(
                "invoices",
                inv,
                etype,
                invoice_id=inv,
                amount=self._amount(self._amount_q()),
                currency=currency,
                department=dept,
                **party,
                **extra,
            )
        else:
            trn = self._next("trn")
            self._emit(
                "hiring",
                trn,
                "training.completed",
                training_id=trn,
                employee_id="emp-x",
                department=dept,
                cost=100,
                currency=currency,
                **extra,
            )

    def fault_unknown_entity(self) -> None:
        variant = self.rnd.randrange(6)
        if variant == 0:
            inv = self._next("ghost")
            self._emit("invoices", inv, "invoice.approved", invoice_id=inv)
        elif variant == 1:
            inv = self._next("ghost")
            self._emit("invoices", inv, "payment.received", invoice_id=inv, amount=10)
        elif variant == 2:
            req = self._next("ghost")
            self._emit("hiring", req, "offer.accepted", requisition_id=req, candidate_id="c")
        elif variant == 3:
            emp = self._next("ghost")
            self._emit("hiring", emp, "employee.left", employee_id=emp, voluntary=False)
        elif variant == 4:
            inc = self._next("ghost")
            self._emit("incidents", inc, "incident.acknowledged", incident_id=inc)
        else:
            tkt = self._next("ghost")
            self._emit("incidents", tkt, "ticket.resolved", ticket_id=tkt)

    def fault_invalid_transition(self) -> None:
        options: list[Callable[[], bool]] = [
            self._second_decision,
            self._overpayment,
            self._wrong_kind,
            self._paid_before_approval,
            self._second_start,
            self._second_acceptance,
            self._second_departure,
            self._incident_twice,
            self._ticket_twice,
            self._before_start,
        ]
        self.rnd.shuffle(options)
        for option in options:
            if option():
                return

    def _second_decision(self) -> bool:
        inv = self._pick(self.ap, lambda v: v["status"] != "received")
        if inv is None:
            return False
        etype = self.rnd.choice(["invoice.approved", "invoice.rejected"])
        self._emit("invoices", inv, etype, invoice_id=inv, reason="again")
        return True

    def _overpayment(self) -> bool:
        if self.rnd.random() < 0.5:
            inv = self._pick(self.ap, lambda v: v["status"] == "approved")
            etype = "invoice.paid"
            table = self.ap
        else:
            inv = self._pick(self.ar, lambda v: True)
            etype = "payment.received"
            table = self.ar
        if inv is None:
            return False
        outstanding = table[inv]["q"] - table[inv]["paid"]
        amount = self._amount(outstanding + self.rnd.randint(1, 400))
        self._emit("invoices", inv, etype, invoice_id=inv, amount=amount)
        return True

    def _wrong_kind(self) -> bool:
        if self.rnd.random() < 0.5:
            inv = self._pick(self.ap, lambda v: True)
            if inv is None:
                return False
            self._emit("invoices", inv, "payment.received", invoice_id=inv, amount=1)
        else:
            inv = self._pick(self.ar, lambda v: True)
            if inv is None:
                return False
            self._emit("invoices", inv, "invoice.approved", invoice_id=inv)
        return True

    def _paid_before_approval(self) -> bool:
        inv = self._pick(self.ap, lambda v: v["status"] in ("received", "rejected"))
        if inv is None:
            return False
        self._emit("invoices", inv, "invoice.paid", invoice_id=inv, amount=1)
        return True

    def _second_start(self) -> bool:
        inv = self._pick(self.ar, lambda v: True) or self._pick(self.ap, lambda v: True)
        if inv is None:
            return False
        self._emit(
            "invoices",
            inv,
            "invoice.received",
            invoice_id=inv,
            amount=100,
            currency=CURRENCY,
            department="finance",
            vendor_id="v-1",
        )
        return True

    def _second_acceptance(self) -> bool:
        req = self._pick(self.requisitions, lambda v: v["accepted"])
        if req is None:
            return False
        self._emit("hiring", req, "offer.accepted", requisition_id=req, candidate_id="c-2")
        return True

    def _second_departure(self) -> bool:
        emp = self._pick(self.employees, lambda v: v["left"])
        if emp is not None:
            self._emit("hiring", emp, "employee.left", employee_id=emp, voluntary=True)
            return True
        emp = self._pick(self.employees, lambda v: True)
        if emp is None:
            return False
        self._emit("hiring", emp, "employee.hired", employee_id=emp, department="hr")
        return True

    def _incident_twice(self) -> bool:
        inc = self._pick(self.incidents, lambda v: v["status"] == "resolved")
        if inc is not None:
            etype = self.rnd.choice(["incident.acknowledged", "incident.resolved"])
            self._emit("incidents", inc, etype, incident_id=inc)
            return True
        inc = self._pick(self.incidents, lambda v: v["status"] == "acked")
        if inc is None:
            return False
        self._emit("incidents", inc, "incident.acknowledged", incident_id=inc)
        return True

    def _ticket_twice(self) -> bool:
        tkt = self._pick(self.tickets, lambda v: v["resolved"])
        if tkt is None:
            return False
        self._emit("incidents", tkt, "ticket.resolved", ticket_id=tkt)
        return True

    def _before_start(self) -> bool:
        # a follow-up whose event time is before its start event's: a negative duration
        recent = self.t - self.grace / 4
        tkt = self._pick(self.tickets, lambda v: not v["resolved"] and v["t"] >= recent)
        if tkt is None:
            return False
        early = self.tickets[tkt]["t"] - self.rnd.choice([1, 60, 600])
        self._emit("incidents", tkt, "ticket.resolved", t=early, ticket_id=tkt)
        return True

    def fault_future(self) -> None:
        resp = self._next("resp")
        self._emit(
            "hiring",
            resp,
            "survey.submitted",
            t=self.now + DAY,
            response_id=resp,
            department=self.rnd.choice(DEPARTMENTS),
            score=5,
        )

    def fault_late(self) -> None:
        past = self.t - self.grace - self.rnd.choice([1, 60, 1800, 4 * HOUR, DAY])
        variant = self.rnd.randrange(3)
        if variant == 0:
            resp = self._next("resp")
            self._emit(
                "hiring",
                resp,
                "survey.submitted",
                t=past,
                response_id=resp,
                department=self.rnd.choice(DEPARTMENTS),
                score=self.rnd.randint(0, 10),
            )
        elif variant == 1:
            tkt = self._next("tkt")
            self._emit(
                "incidents",
                tkt,
                "ticket.opened",
                t=past,
                ticket_id=tkt,
                queue="desk",
                priority="p2",
            )
        else:
            inv = self._next("inv")
            self._emit(
                "invoices",
                inv,
                "invoice.received",
                t=past,
                invoice_id=inv,
                amount=40,
                currency=CURRENCY,
                department=self.rnd.choice(DEPARTMENTS),
                vendor_id="v-3",
            )

    def fault_duplicate(self) -> None:
        candidates = [r for r in self.records[-60:] if r.key is not None]
        if not candidates:
            return self.survey()
        orig = self.rnd.choice(candidates)
        rec = _Record(orig.topic, orig.partition, orig.key, self.t, len(self.records), orig.value)
        self.records.append(rec)
        return None

    # ---- the whole log ------------------------------------------------------------
    def build(self, n_events: int, flush: bool) -> list[Message]:
        valid: list[tuple[Callable[[], None], int]] = [
            (self.ap_receive, 8),
            (self.ap_decide, 6),
            (self.ap_pay, 6),
            (self.ar_issue, 6),
            (self.ar_pay, 6),
            (self.req_open, 4),
            (self.offer_accept, 3),
            (self.hire, 4),
            (self.leave, 2),
            (self.survey, 8),
            (self.training, 4),
            (self.incident_open, 5),
            (self.incident_ack, 4),
            (self.incident_resolve, 4),
            (self.ticket_open, 6),
            (self.ticket_resolve, 5),
            (self.service_status, 6),
            (self.burst_start, 2),
            (self.finish_burst, 2),
        ]
        faulty: list[Callable[[], None]] = [
            self.fault_invalid_json,
            self.fault_schema,
            self.fault_unknown_type,
            self.fault_currency,
            self.fault_unknown_entity,
            self.fault_invalid_transition,
            self.fault_future,
            self.fault_late,
            self.fault_duplicate,
            self.fault_duplicate,
        ]
        actions = [a for a, _ in valid]
        weights = [w for _, w in valid]
        mean_step = (self.end - self.start) / max(n_events, 1)
        for _ in range(n_events):
            if self.faults and self.rnd.random() < 0.2:
                self.rnd.choice(faulty)()
            else:
                self.rnd.choices(actions, weights)[0]()
            step = 0.0 if self.rnd.random() < 0.05 else self.rnd.uniform(0, 2 * mean_step)
            # whole seconds, sometimes quarters: multiples of 0.25 s keep every sum exact
            step = math.floor(step) if self.rnd.random() < 0.9 else math.floor(step * 4) / 4
            self.t = min(self.end, self.t + step)

        # arrival order: out of order within grace / 2, but in order per message key
        last_arrival: dict[tuple[str, str], float] = {}
        for rec in self.records:
            jitter = 0.0
            if self.faults and self.rnd.random() < 0.3:
                jitter = self.rnd.uniform(0, self.grace / 2)
            rec.arrival = rec.emit + jitter
            if rec.key is not None:
                k = (rec.topic, rec.key)
                rec.arrival = max(rec.arrival, last_arrival.get(k, -math.inf))
                last_arrival[k] = rec.arrival
        records = sorted(self.records, key=lambda r: (r.arrival, r.seq))

        if flush:
            self.t = self.flush_at
            records.extend(self._flush_records())

        offsets: dict[tuple[str, int], int] = {}
        messages = []
        for rec in records:
            tp = (rec.topic, rec.partition)
            offset = offsets.get(tp, 0)
            offsets[tp] = offset + 1
            messages.append(Message(rec.topic, rec.partition, offset, rec.value))
        return messages

    def _flush_records(self) -> list[_Record]:
        """One late-in-time event per partition, keyed to land on it, closing the windows."""
        before = len(self.records)
        for topic in TOPICS:
            for p in range(self.partitions[topic]):
                k = 0
                while partition_for(f"flush-{topic}-{p}-{k}", self.partitions[topic]) != p:
                    k += 1
                key = f"flush-{topic}-{p}-{k}"
                if topic == "invoices":
                    self._emit(
                        topic,
                        key,
                        "invoice.received",
                        invoice_id=key,
                        amount=1,
                        currency=CURRENCY,
                        department=DEPARTMENTS[p % 3],
                        vendor_id="v-flush",
                    )
                elif topic == "hiring":
                    self._emit(
                        topic,
                        key,
                        "survey.submitted",
                        response_id=key,
                        department=DEPARTMENTS[p % 3],
                        score=8,
                    )
                else:
                    self._emit(
                        topic, key, "ticket.opened", ticket_id=key, queue="desk", priority="p4"
                    )
        return self.records[before:]


def random_log(
    seed: int,
    n_events: int,
    days: float,
    partitions: dict[str, int],
    start: float,
    faults: bool = True,
    *,
    grace: float = 3600,
    now: float | None = None,
    flush: bool = True,
    flush_at: float | None = None,
) -> list[Message]:
    """A seeded log of about ``n_events`` messages over ``days`` days from ``start``.

    Pass ``now=log_now(start, days, grace)`` (the default) to the reference as well: the
    ``future`` faults are dated ``now + 1 day`` and every other event is ``<= now``.
    ``flush_at`` dates the flush events (default :func:`flush_time`; then the default
    ``now`` is 60 s after it).
    """
    if now is None:
        now = log_now(start, days, grace) if flush_at is None else flush_at + 60
    rnd = random.Random(seed)
    builder = _Builder(rnd, partitions, start, days, grace, now, faults, flush_at)
    return builder.build(n_events, flush)


@st.composite
def _event_logs(
    draw: st.DrawFn, max_events: int, faults: bool | None, grace: float
) -> tuple[list[Message], dict[str, int], float]:
    partitions = {topic: draw(st.integers(1, 3)) for topic in TOPICS}
    n_events = draw(st.integers(0, max_events))
    hours = draw(st.integers(1, 72))
    start = (
        BASE_TIME
        + draw(st.sampled_from([0, 3 * HOUR, DAY - 1, 7200.5]))
        + draw(st.integers(0, 2 * DAY))
    )
    with_faults = draw(st.booleans()) if faults is None else faults
    flush = draw(st.integers(0, 9)) > 0
    # a seeded PRNG rather than st.randoms(): hypothesis' own draws lean towards the first
    # choice of every list, which would make most logs faults; shrinking still works on the
    # number of events, the partitions and the time span.
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    days = hours / 24
    now = log_now(start, days, grace)
    builder = _Builder(rnd, partitions, start, days, grace, now, with_faults)
    return builder.build(n_events, flush), partitions, now


def event_logs(
    max_events: int = 60, *, faults: bool | None = None, grace: float = 3600
) -> st.SearchStrategy[tuple[list[Message], dict[str, int], float]]:
    """Hypothesis strategy of ``(messages, partitions, now)`` for ``reference.compute``.

    ``faults=None`` draws whether the log misbehaves.  Use the same ``grace`` in compute.
    """
    return _event_logs(max_events, faults, grace)


# --- SLA settings -------------------------------------------------------------------------

#: ``KPI_TICKET_SLA`` / ``KPI_INCIDENT_SLA`` values for the comparisons: the defaults (""),
#: and SLAs of minutes to hours, some naming only a few classes, under which the short logs'
#: resolutions fall on both sides (the defaults, 4h to 72h, let most of them through).
TICKET_SLAS = ("", "p1=15m,p2=1h,p3=3h,p4=0.5d", "p2=20m", "p1=90s,p3=1.5h,p4=2h")
INCIDENT_SLAS = ("", "sev1=30m,sev2=1h,sev3=2h,sev4=4h", "sev3=45m,sev4=600s")


def sla_settings() -> st.SearchStrategy[tuple[str, str]]:
    """Hypothesis strategy of ``(ticket_sla, incident_sla)`` setting texts."""
    return st.tuples(st.sampled_from(TICKET_SLAS), st.sampled_from(INCIDENT_SLAS))


# --- logs in a business calendar ------------------------------------------------------------

#: The zones of the calendar comparisons: none, an hour of DST in either hemisphere,
#: +05:30 and +05:45, and Lord Howe's 30-minute DST shift.
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
)
FISCAL_YEAR_STARTS = (1, 4, 7, 10)


def _utc(*when: int) -> float:
    return datetime(*when, tzinfo=UTC).timestamp()


#: The 2026 clock changes of the zones that have them (UTC instants).
CLOCK_CHANGES: dict[str, tuple[float, ...]] = {
    "Europe/Berlin": (_utc(2026, 3, 29, 1), _utc(2026, 10, 25, 1)),
    "America/New_York": (_utc(2026, 3, 8, 7), _utc(2026, 11, 1, 6)),
    "Australia/Lord_Howe": (_utc(2026, 4, 4, 15), _utc(2026, 10, 3, 15, 30)),
}


def calendar_anchors(timezone: str) -> list[float]:
    """Instants a calendar log should cross: the zone's 2026 clock changes and the local
    starts of the quarters from 2026-01-01 to 2027-01-01 (each ends a month and a fiscal
    quarter for fiscal starts 1, 4, 7 and 10, and the fiscal year for one of them; the
    days around 2027-01-01 are in ISO week 2026-W53)."""
    calendar = Calendar(timezone)
    quarters = [
        calendar.containing("1mo", _utc(year, month, 15))[0].start
        for year, month in ((2026, 1), (2026, 4), (2026, 7), (2026, 10), (2027, 1))
    ]
    return sorted([*CLOCK_CHANGES.get(timezone, ()), *map(float, quarters)])


@dataclass(frozen=True)
class CalendarLog:
    """A log for ``reference.compute(..., timezone=..., fiscal_year_start=...,
    ticket_sla=..., incident_sla=...)``."""

    messages: list[Message]
    partitions: dict[str, int]
    now: float
    timezone: str
    fiscal_year_start: int
    ticket_sla: str = ""
    incident_sla: str = ""


@st.composite
def _calendar_logs(draw: st.DrawFn, max_events: int, grace: float) -> CalendarLog:
    timezone = draw(st.sampled_from(ZONES))
    fiscal_year_start = draw(st.sampled_from(FISCAL_YEAR_STARTS))
    partitions = {topic: draw(st.integers(1, 3)) for topic in TOPICS}
    n_events = draw(st.integers(0, max_events))
    hours = draw(st.integers(1, 96))
    # The anchor lies in the log; at its very start now and then, so that the first events
    # fall exactly on a clock change or a quarter start.
    anchor = draw(st.sampled_from(calendar_anchors(timezone)))
    start = anchor - draw(st.sampled_from([0, 1]) | st.integers(0, hours * HOUR))
    with_faults = draw(st.booleans())
    flush = draw(st.integers(0, 9)) > 0
    # the flush closes the last local day, the day after, or the month after too
    after_days = draw(st.sampled_from([0, 0, 1, 35]))
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))  # see _event_logs
    days = hours / 24
    flush_at = calendar_flush_time(start, days, timezone, grace, after_days)
    now = flush_at + 60
    builder = _Builder(rnd, partitions, start, days, grace, now, with_faults, flush_at)
    messages = builder.build(n_events, flush)
    ticket_sla, incident_sla = draw(sla_settings())
    return CalendarLog(
        messages, partitions, now, timezone, fiscal_year_start, ticket_sla, incident_sla
    )


def calendar_logs(max_events: int = 60, *, grace: float = 3600) -> st.SearchStrategy[CalendarLog]:
    """Hypothesis strategy of :class:`CalendarLog` across :data:`ZONES` and
    :data:`FISCAL_YEAR_STARTS`, each log crossing one of :func:`calendar_anchors`."""
    return _calendar_logs(max_events, grace)
