"""Hand-computed examples that pin the batch reference (tests/reference.py) down.

Every test states its hand computation in comments.  T0 is a day boundary
(2023-11-15T00:00:00Z); "H0" is the hour [T0, T0+1h), "D0" the day [T0, T0+1d).
"""

from __future__ import annotations

import collections
import math
import random
import zlib
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from tests import reference
from tests.eventgen import FOREIGN_CURRENCIES, event_logs, log_now, random_log
from tests.reference import (
    DAY,
    EVENT_TYPES,
    HOUR,
    Calendar,
    HistoryRecord,
    Message,
    RefResult,
    compute,
    parse_timestamp,
)

T0 = 1_700_006_400  # 2023-11-15T00:00:00Z
assert T0 % DAY == 0
NOW = T0 + 100 * DAY


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class Log:
    """A tiny hand-written log; offsets are assigned per partition in call order."""

    def __init__(self, **partitions: int) -> None:
        self.partitions = {"invoices": 1, "hiring": 1, "incidents": 1, **partitions}
        self.messages: list[Message] = []
        self.offsets: dict[tuple[str, int], int] = collections.defaultdict(int)
        self.n = 0

    def raw(self, topic: str, value: bytes, partition: int = 0) -> tuple[str, int, int]:
        offset = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        self.messages.append(Message(topic, partition, offset, value))
        return (topic, partition, offset)

    def add(
        self,
        topic: str,
        etype: str,
        t: float | str,
        *,
        partition: int = 0,
        event_id: str | None = None,
        **fields: Any,
    ) -> tuple[str, int, int]:
        self.n += 1
        doc = {
            "event_id": event_id or f"e{self.n}",
            "type": etype,
            "occurred_at": t if isinstance(t, str) else iso(t),
            **fields,
        }
        return self.raw(topic, orjson.dumps(doc), partition)

    def flush(
        self, t: float, topics: tuple[str, ...] = ("invoices", "hiring", "incidents")
    ) -> None:
        """Move every partition of ``topics`` to watermark t (events feeding no closed window)."""
        for topic in topics:
            for p in range(self.partitions[topic]):
                if topic == "invoices":
                    self.add(
                        topic,
                        "invoice.issued",
                        t,
                        partition=p,
                        invoice_id=f"fl{p}",
                        amount=1,
                        currency="USD",
                        department="zz",
                        customer_id="c",
                    )
                elif topic == "hiring":
                    self.add(
                        topic,
                        "requisition.opened",
                        t,
                        partition=p,
                        requisition_id=f"fl{p}",
                        department="zz",
                    )
                else:
                    self.add(
                        topic,
                        "ticket.opened",
                        t,
                        partition=p,
                        ticket_id=f"fl{p}",
                        queue="zz",
                        priority="p4",
                    )

    def run(self, **kw: Any) -> RefResult:
        kw.setdefault("now", NOW)
        return compute(self.messages, partitions=self.partitions, **kw)


def ap(log: Log, inv: str, t: float, amount: float, dept: str = "finance") -> None:
    log.add(
        "invoices",
        "invoice.received",
        t,
        invoice_id=inv,
        amount=amount,
        currency="USD",
        department=dept,
        vendor_id="v1",
    )


def ar(log: Log, inv: str, t: float, amount: float, dept: str = "finance") -> None:
    log.add(
        "invoices",
        "invoice.issued",
        t,
        invoice_id=inv,
        amount=amount,
        currency="USD",
        department=dept,
        customer_id="c1",
    )


def survey(log: Log, t: float, score: int, dept: str = "sales", **kw: Any) -> tuple[str, int, int]:
    return log.add(
        "hiring", "survey.submitted", t, response_id=f"r{log.n}", department=dept, score=score, **kw
    )


def reasons(res: RefResult) -> list[str]:
    return [r for *_, r in res.dead_letters]


# ---------------------------------------------------------------------------------------


def test_processing_time_and_error_rate_per_department_and_all() -> None:
    log = Log()
    ap(log, "A", T0 + 600, 100)
    ap(log, "B", T0 + 900, 100)
    ap(log, "C", T0 + 0, 100, dept="hr")
    ap(log, "D", T0 + 3000, 100)
    log.add("invoices", "invoice.approved", T0 + 1800, invoice_id="A")  # 1200 s, H0
    log.add("invoices", "invoice.rejected", T0 + 3000, invoice_id="B", reason="x")  # 2100 s, H0
    log.add("invoices", "invoice.approved", T0 + 3599, invoice_id="C")  # 3599 s, H0, hr
    log.add("invoices", "invoice.approved", T0 + 4000, invoice_id="D")  # 1000 s, H1
    log.flush(T0 + 2 * DAY + HOUR)
    h = log.run().history
    pt, er = "invoice_processing_time", "invoice_error_rate"
    # H0: finance (1200 + 2100) / 2 = 1650 over 2; hr 3599 over 1;
    #     all (1200 + 2100 + 3599) / 3 = 2299.67 (not the mean of 1650 and 3599)
    assert h[(pt, "1h", "finance")][T0] == (1650.0, 2)
    assert h[(pt, "1h", "hr")][T0] == (3599.0, 1)
    assert h[(pt, "1h", "all")][T0] == (6899 / 3, 3)
    # H1: finance 1000 over 1; hr has no H1 entry
    assert h[(pt, "1h", "finance")][T0 + HOUR] == (1000.0, 1)
    assert T0 + HOUR not in h[(pt, "1h", "hr")]
    # D0: finance (1200 + 2100 + 1000) / 3; all 7899 / 4
    assert h[(pt, "1d", "finance")] == {T0: (4300 / 3, 3)}
    assert h[(pt, "1d", "all")] == {T0: (7899 / 4, 4)}
    # error rate H0: finance 1 rejected / 2 = 0.5, hr 0 / 1, all 1 / 3; D0 finance 1/3, all 1/4
    assert h[(er, "1h", "finance")][T0] == (0.5, 2)
    assert h[(er, "1h", "hr")][T0] == (0.0, 1)
    assert h[(er, "1h", "all")][T0] == (1 / 3, 3)
    assert h[(er, "1d", "finance")][T0] == (1 / 3, 3)
    assert h[(er, "1d", "all")][T0] == (0.25, 4)


def test_dso_with_partial_payments() -> None:
    log = Log()
    ar(log, "X", T0 + 100, 100)
    log.add("invoices", "payment.received", T0 + 200, invoice_id="X", amount=30)  # H0
    log.add("invoices", "payment.received", T0 + 4000, invoice_id="X", amount="20")  # H1
    ar(log, "Y", T0 + 3700, 50, dept="hr")  # H1
    bad = log.add("invoices", "payment.received", T0 + 5000, invoice_id="X", amount=60)
    log.flush(T0 + 2 * DAY + HOUR)
    res = log.run()
    # X has 50 outstanding: 60 is above it -> invalid_transition, applied to nothing
    assert res.dead_letters == [(*bad, "invalid_transition")]
    h = res.history
    # H0 finance: AR_end = 100 - 30 = 70, credit sales 100, window_days 1/24 -> 0.7/24; count 2
    assert h[("dso", "1h", "finance")][T0] == pytest.approx((0.7 / 24, 2))
    assert h[("dso", "1h", "all")][T0] == pytest.approx((0.7 / 24, 2))
    # H1 finance: AR_end 50, credit sales 0 -> undefined, count 1 (the payment)
    assert h[("dso", "1h", "finance")][T0 + HOUR] == (None, 1)
    # H1 hr: 50 / 50 / 24; all: AR_end 100, credit sales 50 -> 2 / 24, count 2
    assert h[("dso", "1h", "hr")][T0 + HOUR] == pytest.approx((1 / 24, 1))
    assert h[("dso", "1h", "all")][T0 + HOUR] == pytest.approx((2 / 24, 2))
    # D0: finance 50 / 100 * 1 = 0.5 over 3; hr 1.0 over 1; all 100 / 150 over 4
    assert h[("dso", "1d", "finance")] == {T0: (0.5, 3)}
    assert h[("dso", "1d", "hr")] == {T0: (1.0, 1)}
    assert h[("dso", "1d", "all")][T0] == pytest.approx((100 / 150, 4))
    # 30d window [T0 - 29d, T0 + 1d): same events, window_days 30 -> finance 0.5 * 30 = 15
    assert h[("dso", "30d", "finance")][T0 - 29 * DAY] == (15.0, 3)


def test_foreign_invoices_count_their_reporting_amount_and_payments_the_booked_rate() -> None:
    log = Log()
    # EUR 1,000 booked at USD 1,080; paid EUR 400 (H1) and EUR 600 (H2).
    log.add("invoices", "invoice.issued", T0 + 100, invoice_id="E", amount=1000, currency="EUR",
            reporting_amount="1080", department="finance", customer_id="c1")  # fmt: skip
    log.add("invoices", "payment.received", T0 + 3700, invoice_id="E", amount=400)
    over = log.add("invoices", "payment.received", T0 + 7300, invoice_id="E", amount=601)
    log.add("invoices", "payment.received", T0 + 7400, invoice_id="E", amount=600)
    # A USD invoice with a reporting_amount: ignored, it counts with its amount.
    ar_doc = {"invoice_id": "U", "amount": 100, "currency": "USD", "reporting_amount": 7}
    log.add("invoices", "invoice.issued", T0 + 7500, department="finance", customer_id="c",
            **ar_doc)  # fmt: skip
    # A GBP training of 100 that cost USD 127.5.
    log.add("hiring", "training.completed", T0 + 100, training_id="t", employee_id="e",
            department="hr", cost=100, currency="GBP", reporting_amount=127.5)  # fmt: skip
    log.flush(T0 + 2 * DAY + HOUR)
    res = log.run()
    # 601 is above the EUR 600 outstanding (not compared with USD 648)
    assert res.dead_letters == [(*over, "invalid_transition")]
    h = res.history
    # H0: AR 1,080 of credit sales 1,080 -> 1/24 day
    assert h[("dso", "1h", "finance")][T0] == (1 / 24, 1)
    # H1: the EUR 400 is 400/1000 of USD 1,080 = 432: AR 648, no credit sales
    assert h[("dso", "1h", "finance")][T0 + HOUR] == (None, 1)
    # H2: EUR 600 settles the remaining 648, then USD 100 issued: AR 100 / 100 -> 1/24
    assert h[("dso", "1h", "finance")][T0 + 2 * HOUR] == (1 / 24, 2)
    # D0: AR_end 100, credit sales 1,180 -> 100 / 1180 days
    assert h[("dso", "1d", "finance")][T0] == (100 / 1180, 4)
    assert h[("training_cost", "1h", "hr")][T0] == (127.5, 1)


def test_ap_turnover_balances_across_windows_and_30d_rolling() -> None:
    log = Log()
    ap(log, "A", T0 + 100, 400)
    ap(log, "B", T0 + 200, 200)
    log.add("invoices", "invoice.approved", T0 + 300, invoice_id="A")  # not an AP movement
    log.add("invoices", "invoice.paid", T0 + 400, invoice_id="A", amount=100)  # partial
    log.add("invoices", "invoice.paid", T0 + DAY + 100, invoice_id="A", amount=300)
    log.add("invoices", "invoice.rejected", T0 + DAY + 200, invoice_id="B", reason="x")
    ap(log, "C", T0 + DAY + 300, 600)
    log.flush(T0 + 3 * DAY + HOUR)  # frontier - grace = T0 + 3d
    h = log.run().history
    # D0: purchases 600, AP_start 0, AP_end 400 + 200 - 100 = 500 -> 600 / 250 = 2.4; count
    #     received 2 + paid 1 = 3
    # D1: purchases 600, AP_start 500, AP_end 500 - 300 - 200 (rejected B) + 600 = 600
    #     -> 600 / 550; count paid + rejected + received = 3.  D2: no event -> no entry.
    assert h[("ap_turnover", "1d", "finance")] == {T0: (2.4, 3), T0 + DAY: (600 / 550, 3)}
    assert h[("ap_turnover", "1d", "all")] == h[("ap_turnover", "1d", "finance")]
    # 30d windows [d - 30d, d): d = T0+1d holds D0 -> 2.4 over 3; d = T0+2d and T0+3d hold
    # both days: purchases 1200, AP_start 0, AP_end 600 -> 1200 / 300 = 4.0 over 6.
    # d = T0+4d is not closed (frontier - grace = T0 + 3d).
    assert h[("ap_turnover", "30d", "finance")] == {
        T0 - 29 * DAY: (2.4, 3),
        T0 - 28 * DAY: (4.0, 6),
        T0 - 27 * DAY: (4.0, 6),
    }


def test_employee_turnover_rate_with_headcount() -> None:
    log = Log()
    for i, t in enumerate((100, 200, 300), start=1):
        log.add("hiring", "employee.hired", T0 + t, employee_id=f"e{i}", department="hr")
    log.add("hiring", "employee.hired", T0 + DAY + 100, employee_id="e4", department="hr")
    log.add("hiring", "employee.left", T0 + DAY + 200, employee_id="e1", voluntary=True)
    log.add("hiring", "employee.left", T0 + DAY + 300, employee_id="e2", voluntary=False)
    twice = log.add("hiring", "employee.left", T0 + DAY + 350, employee_id="e1", voluntary=True)
    ghost = log.add("hiring", "employee.left", T0 + DAY + 360, employee_id="e9", voluntary=True)
    # ops: hired and gone within D1 -> HC_start 0, HC_end 0 -> undefined
    log.add("hiring", "employee.hired", T0 + DAY + 400, employee_id="e5", department="ops")
    log.add("hiring", "employee.left", T0 + DAY + 500, employee_id="e5", voluntary=False)
    log.flush(T0 + 3 * DAY)
    res = log.run()
    assert res.dead_letters == [(*twice, "invalid_transition"), (*ghost, "unknown_entity")]
    tr = "employee_turnover_rate"
    # hr D0: 0 separations / ((0 + 3) / 2) = 0.0 over 3 hires
    # hr D1: 2 separations / ((3 + 2) / 2) = 0.8 over hire + 2 departures = 3
    assert res.history[(tr, "1d", "hr")] == {T0: (0.0, 3), T0 + DAY: (0.8, 3)}
    assert res.history[(tr, "1d", "ops")] == {T0 + DAY: (None, 2)}
    # all D1: 3 separations / ((3 + 2) / 2) = 1.2 over 5
    assert res.history[(tr, "1d", "all")][T0 + DAY] == pytest.approx((1.2, 5))


def test_enps_and_satisfaction() -> None:
    log = Log()
    for s in (10, 9, 9, 7, 3):
        survey(log, T0 + 100 + s, s, dept="sales")
    for s in (0, 6):
        survey(log, T0 + 200 + s, s, dept="hr")
    log.flush(T0 + DAY + HOUR)
    h = log.run().history
    # sales: 3 promoters, 1 detractor of 5 -> (3/5 - 1/5) * 100 = 40; mean 38 / 5 = 7.6
    assert h[("enps", "1h", "sales")][T0] == ((3 / 5 - 1 / 5) * 100, 5)
    assert h[("enps", "1h", "sales")][T0][0] == pytest.approx(40.0)
    assert h[("employee_satisfaction", "1h", "sales")][T0] == (7.6, 5)
    # hr: 0 promoters, 2 detractors -> -100; mean 3
    assert h[("enps", "1h", "hr")][T0] == (-100.0, 2)
    assert h[("employee_satisfaction", "1h", "hr")][T0] == (3.0, 2)
    # all: 3 promoters, 3 detractors of 7 -> 0; mean 44 / 7
    assert h[("enps", "1d", "all")][T0] == (0.0, 7)
    assert h[("employee_satisfaction", "1d", "all")][T0] == (44 / 7, 7)


def test_training_cost_time_to_hire_and_security_incidents() -> None:
    log = Log()
    log.add("hiring", "requisition.opened", T0 - 5000, requisition_id="q1", department="hr")
    log.add(
        "hiring",
        "training.completed",
        T0 + 10,
        training_id="t1",
        employee_id="x",
        department="hr",
        cost="99.5",
        currency="USD",
    )
    log.add(
        "hiring",
        "training.completed",
        T0 + 20,
        training_id="t2",
        employee_id="x",
        department="hr",
        cost=0.5,
        currency="USD",
    )
    log.add("hiring", "offer.accepted", T0 + 30, requisition_id="q1", candidate_id="c")
    for i, cat in enumerate(("security", "security", "outage")):
        log.add(
            "incidents",
            "incident.opened",
            T0 + 40 + i,
            incident_id=f"i{i}",
            service="api",
            severity="sev2",
            category=cat,
        )
    log.flush(T0 + DAY + HOUR)
    h = log.run().history
    # training cost = sum 99.5 + 0.5 = 100, count = 2 trainings
    assert h[("training_cost", "1h", "hr")] == {T0: (100.0, 2)}
    # time to hire: accepted at T0+30, opened T0-5000 -> 5030 s, in the window of the acceptance
    assert h[("time_to_hire", "1h", "hr")] == {T0: (5030.0, 1)}
    # 2 security incidents (the outage does not count)
    assert h[("security_incidents", "1h", "api")] == {T0: (2.0, 2)}
    assert h[("security_incidents", "1d", "all")] == {T0: (2.0, 2)}


def test_incident_and_ticket_durations() -> None:
    log = Log()
    log.add(
        "incidents",
        "incident.opened",
        T0 + 0,
        incident_id="i1",
        service="api",
        severity="sev1",
        category="outage",
    )
    log.add("incidents", "incident.acknowledged", T0 + 300, incident_id="i1")
    log.add(
        "incidents",
        "incident.opened",
        T0 + 100,
        incident_id="i2",
        service="web",
        severity="sev3",
        category="other",
    )
    log.add("incidents", "incident.resolved", T0 + 700, incident_id="i2")  # directly
    ack_late = log.add("incidents", "incident.acknowledged", T0 + 800, incident_id="i2")
    log.add("incidents", "ticket.opened", T0 + 50, ticket_id="k1", queue="desk", priority="p1")
    log.add("incidents", "ticket.resolved", T0 + 1050, ticket_id="k1")
    log.add("incidents", "incident.resolved", T0 + 4000, incident_id="i1")  # H1, arrives last
    log.flush(T0 + DAY + HOUR)
    res = log.run()
    # acknowledgement after resolution -> invalid_transition
    assert res.dead_letters == [(*ack_late, "invalid_transition")]
    h = res.history
    assert h[("incident_response_time", "1h", "api")] == {T0: (300.0, 1)}
    assert h[("incident_resolution_time", "1h", "api")] == {T0 + HOUR: (4000.0, 1)}
    assert h[("incident_resolution_time", "1h", "web")] == {T0: (600.0, 1)}
    # D0 all: (4000 + 600) / 2
    assert h[("incident_resolution_time", "1d", "all")] == {T0: (2300.0, 2)}
    assert h[("ticket_resolution_time", "1h", "desk")] == {T0: (1000.0, 1)}


def test_uptime_outage_spanning_two_windows_with_repeats() -> None:
    log = Log()
    inc = "incidents"
    log.add(inc, "service.up", T0 + 600, service="api")  # first status event; up already
    log.add(inc, "service.down", T0 + 1800, service="api")
    log.add(inc, "service.down", T0 + 2400, service="api")  # repeat: nothing changes
    log.add(inc, "service.up", T0 + 5400, service="api")
    log.add(inc, "service.up", T0 + 6000, service="api")  # repeat
    log.add(inc, "service.down", T0 + 8100, service="web")  # first event; never up again
    log.flush(T0 + DAY + 2 * HOUR)  # frontier - grace = T0 + 1d + 1h: H0..H24 and D0 close
    h = log.run().history
    up = "system_uptime"
    api, web, all_ = h[(up, "1h", "api")], h[(up, "1h", "web")], h[(up, "1h", "all")]
    # api H0: down 1800..3600 = 1800 s -> 0.5, 3 status events; H1: down 3600..5400 -> 0.5,
    # 2 events; H2..H24: up, 1.0, count 0 (still in history: after the first status event)
    assert api[T0] == (0.5, 3)
    assert api[T0 + HOUR] == (0.5, 2)
    assert api[T0 + 2 * HOUR] == (1.0, 0)
    assert sorted(api) == [T0 + k * HOUR for k in range(25)]
    # web H2: down 8100..10800 = 2700 s -> 0.25, 1 event; H3: open outage -> 0.0; windows
    # only from H2 (its first status event) on
    assert web[T0 + 2 * HOUR] == (0.25, 1)
    assert web[T0 + 3 * HOUR] == (0.0, 0)
    assert sorted(web) == [T0 + k * HOUR for k in range(2, 25)]
    # all: H0, H1 only api; H2 mean(1.0, 0.25) = 0.625 count 1; H3 mean(1.0, 0.0)
    assert all_[T0] == (0.5, 3)
    assert all_[T0 + HOUR] == (0.5, 2)
    assert all_[T0 + 2 * HOUR] == (0.625, 1)
    assert all_[T0 + 3 * HOUR] == (0.5, 0)
    # D0: api down 3600 s -> 1 - 3600/86400; web open outage 8100..86400 = 78300 s
    api_d, web_d = 1 - 3600 / DAY, 1 - 78300 / DAY
    assert h[(up, "1d", "api")] == {T0: (api_d, 5)}
    assert h[(up, "1d", "web")] == {T0: (web_d, 1)}
    assert h[(up, "1d", "all")] == {T0: ((api_d + web_d) / 2, 6)}
    # 30d [T0 - 29d, T0 + 1d): downtime the same, window length 30 days
    assert h[(up, "30d", "web")][T0 - 29 * DAY] == (1 - 78300 / (30 * DAY), 1)
    assert T0 - 30 * DAY not in h[(up, "30d", "web")]  # ends at T0, before the first event


def test_uptime_event_time_order_and_ties() -> None:
    log = Log()
    inc = "incidents"
    # billing: the up arrives before the down but happened after it: sorted by event time,
    # down 3000..3300 -> 300 s of downtime
    log.add(inc, "service.up", T0 + 3300, service="billing")
    log.add(inc, "service.down", T0 + 3000, service="billing")
    # db: down and up at the same instant, down first (arrival order) -> no downtime;
    # then up and down at the same instant, up first -> down from T0+2000 on
    log.add(inc, "service.down", T0 + 1000, service="db")
    log.add(inc, "service.up", T0 + 1000, service="db")
    log.add(inc, "service.up", T0 + 2000, service="db")
    log.add(inc, "service.down", T0 + 2000, service="db")
    log.flush(T0 + 2 * HOUR)  # frontier - grace = T0 + 1h: only H0 closes
    h = log.run().history
    assert h[("system_uptime", "1h", "billing")] == {T0: (1 - 300 / HOUR, 2)}
    assert h[("system_uptime", "1h", "db")] == {T0: (1 - 1600 / HOUR, 4)}
    assert ("system_uptime", "1d", "db") not in h


def test_30d_rolling_window() -> None:
    log = Log()
    for t, cost in ((T0 + 100, 100), (T0 + 10 * DAY + 5, 50)):
        log.add(
            "hiring",
            "training.completed",
            t,
            training_id=f"t{t}",
            employee_id="x",
            department="hr",
            cost=cost,
            currency="USD",
        )
    log.flush(T0 + 45 * DAY + HOUR)
    h = log.run().history[("training_cost", "30d", "hr")]
    # windows [d - 30d, d): the first training is in those with d = T0+1d .. T0+30d, the
    # second in d = T0+11d .. T0+40d -> 100 (10 windows), 150 (20 windows), 50 (10 windows)
    expected = {}
    for k in range(1, 41):
        cost = (100 if k <= 30 else 0) + (50 if k >= 11 else 0)
        expected[T0 + k * DAY - 30 * DAY] = (float(cost), (k <= 30) + (k >= 11))
    assert h == expected


# ---------------------------------------------------------------------------------------
# Calendar windows (SPEC section 2), worked out by hand from each zone's clock changes.
# u(...) is an instant given in UTC; the comments give what the local clock reads.


def u(*when: int) -> int:
    """Unix seconds of a UTC date and time."""
    return int(datetime(*when, tzinfo=UTC).timestamp())


LATER = u(2030, 1, 1)  # a wall clock after every event of the logs below


def spans(cal: Calendar, window: str, *instants: float) -> list[tuple[int, int, str]]:
    """(start, end, label) of the windows holding each instant, in order."""
    return [(s.start, s.end, s.label) for t in instants for s in cal.containing(window, t)]


def test_berlin_spring_forward_day_has_23_hours_and_no_t02() -> None:
    # 2026-03-29: CET (+1) until 01:00Z, when the clock jumps from 02:00 to 03:00 CEST (+2)
    cal = Calendar("Europe/Berlin")
    assert spans(cal, "1h", u(2026, 3, 29, 0, 59, 59), u(2026, 3, 29, 1), u(2026, 3, 29, 2)) == [
        (u(2026, 3, 29, 0), u(2026, 3, 29, 1), "2026-03-29T01"),
        (u(2026, 3, 29, 1), u(2026, 3, 29, 2), "2026-03-29T03"),  # T01 ends at the change
        (u(2026, 3, 29, 2), u(2026, 3, 29, 3), "2026-03-29T04"),
    ]
    # the day runs from 00:00 CET (03-28 23:00Z) to 00:00 CEST (03-29 22:00Z): 23 hours
    day = (u(2026, 3, 28, 23), u(2026, 3, 29, 22), "2026-03-29")
    assert spans(cal, "1d", u(2026, 3, 28, 23), u(2026, 3, 29, 21, 59, 59)) == [day, day]
    hours = cal.between("1h", u(2026, 3, 28, 23), u(2026, 3, 29, 22))
    assert [h.label[-2:] for h in hours] == [f"{h:02d}" for h in range(24) if h != 2]


def test_berlin_fall_back_day_has_25_hours_and_two_t02() -> None:
    # 2026-10-25: CEST (+2) until 01:00Z, when the clock goes back from 03:00 to 02:00 CET
    cal = Calendar("Europe/Berlin")
    assert spans(cal, "1h", *(u(2026, 10, 24, 23) + k * HOUR for k in range(4))) == [
        (u(2026, 10, 24, 23), u(2026, 10, 25, 0), "2026-10-25T01"),
        (u(2026, 10, 25, 0), u(2026, 10, 25, 1), "2026-10-25T02"),  # 02:00 CEST
        (u(2026, 10, 25, 1), u(2026, 10, 25, 2), "2026-10-25T02"),  # 02:00 CET, again
        (u(2026, 10, 25, 2), u(2026, 10, 25, 3), "2026-10-25T03"),
    ]
    assert spans(cal, "1d", u(2026, 10, 25, 12)) == [
        (u(2026, 10, 24, 22), u(2026, 10, 25, 23), "2026-10-25")  # 25 hours
    ]
    assert len(cal.between("1h", u(2026, 10, 24, 22), u(2026, 10, 25, 23))) == 25


def test_berlin_clock_change_days_in_compute() -> None:
    log = Log()
    # spring: surveys at 01:30 CET (T01), 03:30 CEST (T03), 23:30 CEST (T23)
    survey(log, u(2026, 3, 29, 0, 30), 10)
    survey(log, u(2026, 3, 29, 1, 30), 4)
    survey(log, u(2026, 3, 29, 21, 30), 7)
    ar(log, "A", u(2026, 3, 29, 10), 100)
    # api down for 2 h 18 min of the 23-hour day: uptime 1 - 8280 / 82800 = 0.9
    log.add("incidents", "service.down", u(2026, 3, 29, 10), service="api")
    log.add("incidents", "service.up", u(2026, 3, 29, 12, 18), service="api")
    # autumn: surveys at 02:30 CEST and, an hour later, 02:30 CET
    survey(log, u(2026, 10, 25, 0, 30), 9)
    survey(log, u(2026, 10, 25, 1, 30), 5)
    # api down 2.5 h of the 25-hour day: 1 - 9000 / 90000 = 0.9
    log.add("incidents", "service.down", u(2026, 10, 25, 10), service="api")
    log.add("incidents", "service.up", u(2026, 10, 25, 12, 30), service="api")
    log.flush(u(2026, 10, 27) + HOUR)
    res = log.run(now=LATER, timezone="Europe/Berlin")
    spring, autumn = u(2026, 3, 28, 23), u(2026, 10, 24, 22)
    sat = res.records(("employee_satisfaction", "1h", "sales"))
    assert sat == {
        u(2026, 3, 29, 0): HistoryRecord(
            u(2026, 3, 29, 0), u(2026, 3, 29, 1), "2026-03-29T01", 10.0, 1
        ),
        u(2026, 3, 29, 1): HistoryRecord(
            u(2026, 3, 29, 1), u(2026, 3, 29, 2), "2026-03-29T03", 4.0, 1
        ),
        u(2026, 3, 29, 21): HistoryRecord(
            u(2026, 3, 29, 21), u(2026, 3, 29, 22), "2026-03-29T23", 7.0, 1
        ),
        u(2026, 10, 25, 0): HistoryRecord(
            u(2026, 10, 25, 0), u(2026, 10, 25, 1), "2026-10-25T02", 9.0, 1
        ),
        u(2026, 10, 25, 1): HistoryRecord(
            u(2026, 10, 25, 1), u(2026, 10, 25, 2), "2026-10-25T02", 5.0, 1
        ),
    }
    assert res.records(("employee_satisfaction", "1d", "sales")) == {
        spring: HistoryRecord(spring, u(2026, 3, 29, 22), "2026-03-29", 7.0, 3),
        autumn: HistoryRecord(autumn, u(2026, 10, 25, 23), "2026-10-25", 7.0, 2),
    }
    # dso counts the 23-hour day as 1 day: AR 100 / credit sales 100 * 1
    assert res.history[("dso", "1d", "finance")][spring] == (1.0, 1)
    uptime = res.history[("system_uptime", "1d", "api")]
    assert uptime[spring] == (pytest.approx(0.9), 2)
    assert uptime[autumn] == (pytest.approx(0.9), 2)
    assert uptime[u(2026, 3, 29, 22)] == (1.0, 0)  # 2026-03-30: up all day


def test_lord_howe_half_hour_clock_changes() -> None:
    # +11:00 in summer, +10:30 in winter. 2026-04-05 02:00 (+11) = 04-04 15:00Z: back to
    # 01:30, so T01 runs from 01:00 (+11) = 14:00Z to 02:00 (+10:30) = 15:30Z, 90 minutes
    cal = Calendar("Australia/Lord_Howe")
    assert spans(cal, "1h", u(2026, 4, 4, 13, 59, 59), u(2026, 4, 4, 14, 10)) == [
        (u(2026, 4, 4, 13), u(2026, 4, 4, 14), "2026-04-05T00"),
        (u(2026, 4, 4, 14), u(2026, 4, 4, 15, 30), "2026-04-05T01"),
    ]
    assert spans(cal, "1h", u(2026, 4, 4, 15, 10)) == spans(cal, "1h", u(2026, 4, 4, 14))
    assert spans(cal, "1h", u(2026, 4, 4, 15, 30)) == [
        (u(2026, 4, 4, 15, 30), u(2026, 4, 4, 16, 30), "2026-04-05T02")
    ]
    # the day: 00:00 (+11) = 04-04 13:00Z to 00:00 (+10:30) = 04-05 13:30Z, 24.5 hours
    assert spans(cal, "1d", u(2026, 4, 5)) == [
        (u(2026, 4, 4, 13), u(2026, 4, 5, 13, 30), "2026-04-05")
    ]
    # 2026-10-04 02:00 (+10:30) = 10-03 15:30Z jumps to 02:30 (+11): T02 is 30 minutes
    assert spans(
        cal, "1h", u(2026, 10, 3, 15, 29, 59), u(2026, 10, 3, 15, 30), u(2026, 10, 3, 16)
    ) == [
        (u(2026, 10, 3, 14, 30), u(2026, 10, 3, 15, 30), "2026-10-04T01"),
        (u(2026, 10, 3, 15, 30), u(2026, 10, 3, 16), "2026-10-04T02"),
        (u(2026, 10, 3, 16), u(2026, 10, 3, 17), "2026-10-04T03"),
    ]
    # 00:00 (+10:30) = 10-03 13:30Z to 00:00 (+11) = 10-04 13:00Z, 23.5 hours
    assert spans(cal, "1d", u(2026, 10, 4)) == [
        (u(2026, 10, 3, 13, 30), u(2026, 10, 4, 13), "2026-10-04")
    ]

    # in compute: two invoices issued in the 90-minute T01; dso's window_days stays 1/24
    log = Log()
    ar(log, "A", u(2026, 4, 4, 14, 10), 100)
    ar(log, "B", u(2026, 4, 4, 15, 10), 100)
    log.flush(u(2026, 4, 6) + HOUR)
    res = log.run(now=LATER, timezone="Australia/Lord_Howe")
    assert res.records(("dso", "1h", "finance")) == {
        u(2026, 4, 4, 14): HistoryRecord(
            u(2026, 4, 4, 14), u(2026, 4, 4, 15, 30), "2026-04-05T01", 1 / 24, 2
        )
    }


def test_kolkata_and_kathmandu_hours_start_at_half_and_quarter_past_utc() -> None:
    kolkata = Calendar("Asia/Kolkata")  # +05:30
    assert spans(kolkata, "1h", u(2026, 3, 10, 9, 29, 59), u(2026, 3, 10, 9, 30)) == [
        (u(2026, 3, 10, 8, 30), u(2026, 3, 10, 9, 30), "2026-03-10T14"),
        (u(2026, 3, 10, 9, 30), u(2026, 3, 10, 10, 30), "2026-03-10T15"),
    ]
    assert spans(kolkata, "1d", u(2026, 3, 10, 18, 29)) == [
        (u(2026, 3, 9, 18, 30), u(2026, 3, 10, 18, 30), "2026-03-10")
    ]
    assert spans(kolkata, "1mo", u(2026, 3, 31, 18, 29)) == [
        (u(2026, 2, 28, 18, 30), u(2026, 3, 31, 18, 30), "2026-03")
    ]
    kathmandu = Calendar("Asia/Kathmandu")  # +05:45
    assert spans(kathmandu, "1h", u(2026, 3, 10, 9, 14, 59), u(2026, 3, 10, 9, 15)) == [
        (u(2026, 3, 10, 8, 15), u(2026, 3, 10, 9, 15), "2026-03-10T14"),
        (u(2026, 3, 10, 9, 15), u(2026, 3, 10, 10, 15), "2026-03-10T15"),
    ]
    assert spans(kathmandu, "1d", u(2026, 3, 10, 18, 15)) == [
        (u(2026, 3, 10, 18, 15), u(2026, 3, 11, 18, 15), "2026-03-11")
    ]


def test_santiago_falls_back_at_midnight_and_skips_one() -> None:
    cal = Calendar("America/Santiago")
    # 2026-04-04 24:00 (-03) = 04-05 03:00Z goes back to 23:00 (-04): 04-04 has 25 hours and
    # two T23, the next day starts when the clock reads 00:00 (-04) = 04:00Z
    assert spans(cal, "1d", u(2026, 4, 4, 12), u(2026, 4, 5, 4)) == [
        (u(2026, 4, 4, 3), u(2026, 4, 5, 4), "2026-04-04"),
        (u(2026, 4, 5, 4), u(2026, 4, 6, 4), "2026-04-05"),
    ]
    assert spans(cal, "1h", u(2026, 4, 5, 2, 30), u(2026, 4, 5, 3, 30)) == [
        (u(2026, 4, 5, 2), u(2026, 4, 5, 3), "2026-04-04T23"),
        (u(2026, 4, 5, 3), u(2026, 4, 5, 4), "2026-04-04T23"),
    ]
    # 2026-09-06 00:00 (-04) = 04:00Z jumps to 01:00 (-03): no midnight, the day starts at
    # the change with T01 and has 23 hours
    assert spans(cal, "1d", u(2026, 9, 6, 3, 59, 59), u(2026, 9, 6, 4)) == [
        (u(2026, 9, 5, 4), u(2026, 9, 6, 4), "2026-09-05"),
        (u(2026, 9, 6, 4), u(2026, 9, 7, 3), "2026-09-06"),
    ]
    assert spans(cal, "1h", u(2026, 9, 6, 4)) == [
        (u(2026, 9, 6, 4), u(2026, 9, 6, 5), "2026-09-06T01")
    ]
    # the month of September starts at 00:00 (-04) on the 1st, ends at 00:00 (-03) on Oct 1
    assert spans(cal, "1mo", u(2026, 9, 6, 4)) == [(u(2026, 9, 1, 4), u(2026, 10, 1, 3), "2026-09")]


def test_days_other_than_24_hours_in_2026() -> None:
    lengths = {
        "UTC": {},
        "Europe/Berlin": {"2026-03-29": 23.0, "2026-10-25": 25.0},
        "America/New_York": {"2026-03-08": 23.0, "2026-11-01": 25.0},
        "Asia/Kolkata": {},
        "Asia/Kathmandu": {},
        "Australia/Lord_Howe": {"2026-04-05": 24.5, "2026-10-04": 23.5},
    }
    for zone, odd in lengths.items():
        cal = Calendar(zone)
        year = cal.containing("1y", u(2026, 6, 1))[0]
        days = cal.between("1d", year.start, year.end)
        assert len(days) == 365
        assert days[0].start == year.start
        assert all(a.end == b.start for a, b in zip(days, days[1:], strict=False))
        assert [d.label for d in days] == [
            (date(2026, 1, 1) + timedelta(days=k)).isoformat() for k in range(365)
        ]
        hours = {d.label: (d.end - d.start) / HOUR for d in days if d.end - d.start != DAY}
        assert hours == odd, zone
        months = cal.between("1mo", year.start, year.end)
        assert [m.label for m in months] == [f"2026-{m:02d}" for m in range(1, 13)]
        assert {m.start for m in months} <= {d.start for d in days}


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        ("Europe/Berlin", u(2026, 3, 29, 1)),
        ("Europe/Berlin", u(2026, 10, 25, 1)),
        ("America/New_York", u(2026, 3, 8, 7)),
        ("America/New_York", u(2026, 11, 1, 6)),
        ("Australia/Lord_Howe", u(2026, 4, 4, 15)),
        ("Australia/Lord_Howe", u(2026, 10, 3, 15, 30)),
        ("America/Santiago", u(2026, 4, 5, 3)),
        ("America/Santiago", u(2026, 9, 6, 4)),
    ],
)
def test_hour_boundaries_equal_a_minute_by_minute_scan(zone: str, change: int) -> None:
    # Every minute of the two days around each 2026 clock change: the hour windows start
    # exactly where the clock reads hh:00, and at a forward change that skips such a reading.
    tz = ZoneInfo(zone)

    def clock(t: int) -> datetime:
        return datetime.fromtimestamp(t, tz).replace(tzinfo=None)

    assert clock(change) != clock(change - 60) + timedelta(minutes=1)  # the change is there
    lo, hi = change - DAY, change + DAY
    starts = set()
    for t in range(lo, hi, 60):
        now, expected = clock(t), clock(t - 60) + timedelta(minutes=1)
        if now.minute == 0:
            starts.add(t)
        if now > expected:  # a jump forward: readings [expected, now) are skipped
            hour = expected.replace(minute=0)
            skipped = hour if hour == expected else hour + timedelta(hours=1)
            if skipped < now:
                starts.add(t)
    windows = Calendar(zone).between("1h", lo - 1, hi + 2 * HOUR)
    assert {w.start for w in windows if lo <= w.start < hi} == starts
    assert all(a.end == b.start for a, b in zip(windows, windows[1:], strict=False))


def test_fiscal_quarter_and_year_labels() -> None:
    # fiscal year from April: FY2027 = 2026-04-01 .. 2027-03-31, named by the year it ends in
    april = Calendar("UTC", fiscal_year_start=4)
    assert spans(april, "1q", u(2026, 5, 15)) == [(u(2026, 4, 1), u(2026, 7, 1), "FY2027-Q1")]
    assert spans(april, "1y", u(2026, 5, 15)) == [(u(2026, 4, 1), u(2027, 4, 1), "FY2027")]
    assert spans(april, "1q", u(2026, 3, 31, 23, 59, 59)) == [
        (u(2026, 1, 1), u(2026, 4, 1), "FY2026-Q4")
    ]
    assert spans(april, "1y", u(2026, 3, 31, 23, 59, 59)) == [
        (u(2025, 4, 1), u(2026, 4, 1), "FY2026")
    ]
    assert [s.days for s in april.containing("1q", u(2026, 5, 15))] == [91.0]  # 30 + 31 + 30
    july = Calendar("UTC", fiscal_year_start=7)
    assert spans(july, "1q", u(2026, 6, 30)) == [(u(2026, 4, 1), u(2026, 7, 1), "FY2026-Q4")]
    assert spans(july, "1y", u(2026, 7, 1)) == [(u(2026, 7, 1), u(2027, 7, 1), "FY2027")]
    october = Calendar("UTC", fiscal_year_start=10)
    assert spans(october, "1q", u(2026, 11, 3)) == [(u(2026, 10, 1), u(2027, 1, 1), "FY2027-Q1")]
    assert spans(october, "1q", u(2027, 1, 1)) == [(u(2027, 1, 1), u(2027, 4, 1), "FY2027-Q2")]
    # the default (January): plain calendar quarters and years
    january = Calendar("UTC")
    assert spans(january, "1q", u(2026, 5, 15)) == [(u(2026, 4, 1), u(2026, 7, 1), "2026-Q2")]
    assert spans(january, "1y", u(2026, 5, 15)) == [(u(2026, 1, 1), u(2027, 1, 1), "2026")]
    assert spans(january, "1mo", u(2026, 5, 15)) == [(u(2026, 5, 1), u(2026, 6, 1), "2026-05")]
    # local: in Berlin FY2026-Q4 runs from 00:00 CET on Jan 1 to 00:00 CEST on April 1
    berlin = Calendar("Europe/Berlin", fiscal_year_start=4)
    assert spans(berlin, "1q", u(2026, 2, 10)) == [
        (u(2025, 12, 31, 23), u(2026, 3, 31, 22), "FY2026-Q4")
    ]


def test_fiscal_year_end_in_compute() -> None:
    # Berlin, fiscal year from April: 23:59:59 CEST on March 31 is FY2026, 00:00 on April 1
    # is FY2027; the flush closes everything up to 2026-07-01 00:00Z (Q1 ends 06-30 22:00Z)
    log = Log()
    for tid, t, cost in (("t1", u(2026, 3, 31, 21, 59, 59), 100), ("t2", u(2026, 3, 31, 22), 50)):
        log.add(
            "hiring",
            "training.completed",
            t,
            training_id=tid,
            employee_id="x",
            department="hr",
            cost=cost,
            currency="USD",
        )
    log.flush(u(2026, 7, 1) + HOUR)
    res = log.run(now=LATER, timezone="Europe/Berlin", fiscal_year_start=4)
    q4, q1 = u(2025, 12, 31, 23), u(2026, 3, 31, 22)
    assert res.records(("training_cost", "1q", "hr")) == {
        q4: HistoryRecord(q4, q1, "FY2026-Q4", 100.0, 1),
        q1: HistoryRecord(q1, u(2026, 6, 30, 22), "FY2027-Q1", 50.0, 1),
    }
    fy2026 = u(2025, 3, 31, 22)
    assert res.records(("training_cost", "1y", "hr")) == {
        fy2026: HistoryRecord(fy2026, q1, "FY2026", 100.0, 1)  # FY2027 is still open
    }
    march, april = u(2026, 2, 28, 23), q1
    assert res.records(("training_cost", "1mo", "hr")) == {
        march: HistoryRecord(march, q1, "2026-03", 100.0, 1),
        april: HistoryRecord(april, u(2026, 4, 30, 22), "2026-04", 50.0, 1),
    }
    week = u(2026, 3, 29, 22)  # Monday March 30, 00:00 CEST
    assert res.records(("training_cost", "1w", "hr")) == {
        week: HistoryRecord(week, u(2026, 4, 5, 22), "2026-W14", 150.0, 2)
    }
    assert [r.label for r in res.records(("training_cost", "1h", "hr")).values()] == [
        "2026-03-31T23",
        "2026-04-01T00",
    ]


def test_iso_week_53() -> None:
    utc = Calendar("UTC")
    # 2026 ends on a Thursday: ISO 2026 has 53 weeks, W53 = Mon 2026-12-28 .. Sun 2027-01-03
    w53 = (u(2026, 12, 28), u(2027, 1, 4), "2026-W53")
    assert spans(utc, "1w", u(2026, 12, 28), u(2026, 12, 31), u(2027, 1, 3, 23, 59, 59)) == [
        w53,
        w53,
        w53,
    ]
    assert spans(utc, "1w", u(2027, 1, 4)) == [(u(2027, 1, 4), u(2027, 1, 11), "2027-W01")]
    # 2020 had a W53 too; 2025 does not: its last days are in 2026-W01
    assert spans(utc, "1w", u(2021, 1, 1)) == [(u(2020, 12, 28), u(2021, 1, 4), "2020-W53")]
    assert spans(utc, "1w", u(2025, 12, 28)) == [(u(2025, 12, 22), u(2025, 12, 29), "2025-W52")]
    assert spans(utc, "1w", u(2025, 12, 31)) == [(u(2025, 12, 29), u(2026, 1, 5), "2026-W01")]
    # local Monday 00:00 in Kolkata is Sunday 18:30Z
    kolkata = Calendar("Asia/Kolkata")
    assert spans(kolkata, "1w", u(2026, 12, 27, 18, 30)) == [
        (u(2026, 12, 27, 18, 30), u(2027, 1, 3, 18, 30), "2026-W53")
    ]
    assert spans(kolkata, "1w", u(2026, 12, 27, 18, 29, 59))[0][2] == "2026-W52"


def test_dso_counts_calendar_days_february_quarter_year() -> None:
    log = Log()
    # ops: 100 issued in February 2024 (29 days), never paid: AR_end / credit sales = 1
    ar(log, "O", u(2024, 2, 10, 12), 100, dept="ops")
    # finance: 100 issued in February 2026 (28 days), 50 paid ten days later: ratio 0.5
    ar(log, "F", u(2026, 2, 10, 12), 100)
    log.add("invoices", "payment.received", u(2026, 2, 20, 12), invoice_id="F", amount=50)
    log.flush(u(2027, 1, 1, 1))  # closes up to 2027-01-01 00:00Z: the year 2026 too
    res = log.run(now=LATER)

    def by_label(window: str, dept: str) -> dict[str, tuple[float | None, int]]:
        return {r.label: (r.value, r.count) for r in res.records(("dso", window, dept)).values()}

    assert by_label("1mo", "ops") == {"2024-02": (29.0, 1)}
    assert by_label("1q", "ops") == {"2024-Q1": (91.0, 1)}  # 31 + 29 + 31
    assert by_label("1y", "ops") == {"2024": (366.0, 1)}
    assert by_label("1mo", "finance") == {"2026-02": (14.0, 2)}  # 0.5 x 28
    assert by_label("1q", "finance") == {"2026-Q1": (45.0, 2)}  # 0.5 x 90
    assert by_label("1y", "finance") == {"2026": (182.5, 2)}  # 0.5 x 365
    # the week of the invoice (AR_end 100) x 7; the week of the payment has no credit sale
    assert by_label("1w", "finance") == {"2026-W07": (7.0, 1), "2026-W08": (None, 1)}
    assert by_label("1d", "finance")["2026-02-10"] == (1.0, 1)
    # the 30 days ending with Feb 28: both events, 0.5 x 30
    assert by_label("30d", "finance")["2026-02-28"] == (15.0, 2)
    feb = res.records(("dso", "1mo", "finance"))[u(2026, 2, 1)]
    assert (feb.window_end - feb.window_start) == 28 * DAY


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_logs(max_events=80))
def test_utc_hours_days_and_30d_are_version_1_windows(
    log: tuple[list[Message], dict[str, int], float],
) -> None:
    # With the defaults the 1h, 1d and 30d windows are fixed UTC seconds, as in version 1:
    # [k x size, (k + 1) x size) and 30-day windows stepping by a day, labelled in UTC.
    messages, partitions, now = log
    res = compute(messages, partitions=partitions, now=now)
    fixed = {"1h": (HOUR, HOUR, "%Y-%m-%dT%H"), "1d": (DAY, DAY, "%Y-%m-%d")}
    fixed["30d"] = (30 * DAY, DAY, "%Y-%m-%d")
    for key in res.history:
        if key[1] not in fixed:
            continue
        size, step, fmt = fixed[key[1]]
        for start, rec in res.records(key).items():
            assert start % step == 0
            assert rec.window_end == start + size
            last = datetime.fromtimestamp(rec.window_end - step, UTC)
            assert rec.label == last.strftime(fmt)


def test_late_versus_within_grace() -> None:
    log = Log()
    survey(log, T0 + 10_000, 5)  # watermark T0 + 10000
    log.add(
        "hiring", "survey.submitted", T0 + 10 * DAY, response_id="f", department="sales", score=1
    )  # future for now = T0 + 5d: dead-lettered, the watermark does not move
    survey(log, T0 + 10_000 - 3600, 7)  # == watermark - grace: not late (strict <)
    late = survey(log, T0 + 10_000 - 3601, 9)  # < watermark - grace: late
    survey(log, T0 + 7000, 3)  # within grace: applied as if it had arrived in order
    log.flush(T0 + DAY + HOUR)
    res = log.run(now=T0 + 5 * DAY)
    assert reasons(res) == ["future", "late"]
    assert res.dead_letters[1][:3] == late
    h = res.history[("employee_satisfaction", "1h", "sales")]
    # H1 [T0+3600, T0+7200): 7 (T0+6400) and 3 (T0+7000) -> mean 5 over 2; H2: 5 over 1
    assert h == {T0 + HOUR: (5.0, 2), T0 + 2 * HOUR: (5.0, 1)}
    # with 2 h of grace the 9 is on time: H1 = (7 + 9 + 3) / 3 over 3
    res2 = log.run(now=T0 + 5 * DAY, grace_seconds=7200)
    assert reasons(res2) == ["future"]
    assert res2.history[("employee_satisfaction", "1h", "sales")][T0 + HOUR] == (19 / 3, 3)


def test_duplicates() -> None:
    log = Log(hiring=2)
    survey(log, T0 + 100, 10, event_id="dup")
    survey(log, T0 + 150, 0, event_id="dup")  # same id, applied within 7 days -> duplicate
    survey(log, T0 + 20_000, 5)  # watermark moves far: the duplicate check precedes late
    survey(log, T0 + 100, 10, event_id="dup")  # exact redelivery, 5.5 h old -> duplicate
    survey(log, T0 + 100, 10, event_id="dup", partition=1)  # another partition: applied
    # a dead-lettered event is judged again when redelivered
    orphan = log.add("incidents", "ticket.resolved", T0 + 500, ticket_id="k", event_id="r")
    log.add("incidents", "ticket.opened", T0 + 400, ticket_id="k", queue="desk", priority="p2")
    log.add("incidents", "ticket.resolved", T0 + 500, ticket_id="k", event_id="r")
    log.flush(T0 + DAY + HOUR)
    res = log.run()
    assert res.duplicates == 2
    assert res.dead_letters == [(*orphan, "unknown_entity")]
    h = res.history
    # H0 sales: 10 (partition 0) and 10 (partition 1) -> mean 10 over 2
    assert h[("employee_satisfaction", "1h", "sales")][T0] == (10.0, 2)
    assert h[("ticket_resolution_time", "1h", "desk")] == {T0: (100.0, 1)}


def test_duplicate_horizon_is_seven_days_of_event_time() -> None:
    log = Log()
    survey(log, T0, 10, event_id="old")
    survey(log, T0 + 7 * DAY, 5)  # watermark T0+7d: "old" (T0) >= wm - 7d -> still a duplicate
    survey(log, T0, 10, event_id="old")
    survey(log, T0 + 7 * DAY + 1, 5)  # now T0 < wm - 7d: no longer a duplicate, but late
    survey(log, T0, 10, event_id="old")
    res = log.run()
    assert res.duplicates == 1
    assert reasons(res) == ["late"]


def _dead_letter_cases() -> list[tuple[str, str, bytes]]:
    ts = iso(T0 + 100)
    base = {"event_id": "x", "occurred_at": ts}

    def doc(etype: str, **fields: Any) -> bytes:
        return orjson.dumps({**base, "type": etype, **fields})

    inv = {
        "invoice_id": "n1",
        "amount": 10,
        "currency": "USD",
        "department": "finance",
        "vendor_id": "v",
    }
    sv = {"response_id": "r", "department": "sales", "score": 5}
    return [
        ("invalid_json", "hiring", b"\xff\xfe garbage"),
        ("invalid_json", "hiring", b'{"event_id": "x",'),
        ("invalid_json", "hiring", b""),
        ("schema", "hiring", b"[1, 2]"),
        ("schema", "hiring", orjson.dumps({"event_id": "x", "occurred_at": ts, **sv})),  # no type
        ("schema", "hiring", doc("survey.submitted", department="sales", score=5)),  # no resp.
        (
            "schema",
            "hiring",
            orjson.dumps({**base, "occurred_at": ts[:-1], "type": "survey.submitted", **sv}),
        ),  # naive
        (
            "schema",
            "hiring",
            orjson.dumps({**base, "occurred_at": "2023-11-15", "type": "survey.submitted", **sv}),
        ),
        (
            "schema",
            "hiring",
            orjson.dumps({**base, "occurred_at": T0, "type": "survey.submitted", **sv}),
        ),
        ("schema", "hiring", doc("survey.submitted", **{**sv, "department": "All"})),
        ("schema", "hiring", doc("survey.submitted", **{**sv, "department": "all"})),
        ("schema", "hiring", doc("survey.submitted", **{**sv, "score": 11})),
        ("schema", "hiring", doc("survey.submitted", **{**sv, "score": "7"})),
        ("schema", "hiring", doc("survey.submitted", **{**sv, "score": True})),
        ("schema", "invoices", doc("invoice.received", **{**inv, "amount": -5})),
        ("schema", "invoices", doc("invoice.received", **{**inv, "amount": 0})),
        ("schema", "invoices", doc("invoice.received", **{**inv, "amount": 1e12 + 1})),
        ("schema", "invoices", doc("invoice.received", **{**inv, "amount": "ten"})),
        ("schema", "hiring", doc("employee.left", employee_id="e", voluntary="yes")),
        (
            "schema",
            "incidents",
            doc(
                "incident.opened",
                incident_id="i",
                service="api",
                severity="Sev1",
                category="outage",
            ),
        ),
        (
            "schema",
            "hiring",
            orjson.dumps({**base, "event_id": "", "type": "survey.submitted", **sv}),
        ),
        (
            "schema",
            "hiring",
            orjson.dumps({**base, "event_id": "x" * 129, "type": "survey.submitted", **sv}),
        ),
        ("schema", "hiring", orjson.dumps({"occurred_at": ts, "type": "nope"})),  # before type
        ("schema", "invoices", doc("ticket.opened", ticket_id="k", queue="desk")),  # before topic
        ("unknown_type", "hiring", doc("nope")),
        (
            "unknown_type",
            "invoices",
            doc("ticket.opened", ticket_id="k", queue="desk", priority="p1"),
        ),
        ("currency", "invoices", doc("invoice.received", **{**inv, "currency": "EUR"})),
        (
            "currency",
            "invoices",
            doc("invoice.received", **{**inv, "currency": "EUR", "reporting_amount": None}),
        ),
        (
            "currency",
            "invoices",
            doc("invoice.received", **{**inv, "currency": "eur", "reporting_amount": 5}),
        ),
        ("schema", "invoices", doc("invoice.received", **{**inv, "currency": 978})),
        (
            "schema",
            "invoices",
            doc("invoice.received", **{**inv, "currency": "EUR", "reporting_amount": -5}),
        ),
        ("schema", "invoices", doc("invoice.received", **{**inv, "reporting_amount": "ten"})),
        (
            "future",
            "hiring",
            orjson.dumps({**base, "occurred_at": iso(NOW + 301), "type": "survey.submitted", **sv}),
        ),
        ("unknown_entity", "invoices", doc("invoice.approved", invoice_id="never")),
    ]


@pytest.mark.parametrize(("reason", "topic", "value"), _dead_letter_cases())
def test_each_stateless_dead_letter_reason(reason: str, topic: str, value: bytes) -> None:
    log = Log()
    where = log.raw(topic, value)
    assert log.run().dead_letters == [(*where, reason)]


def test_currency_is_checked_before_future_and_future_before_duplicate() -> None:
    log = Log()
    inv = {"invoice_id": "n1", "amount": 10, "department": "finance", "vendor_id": "v"}
    log.add("invoices", "invoice.received", NOW + DAY, currency="EUR", **inv)
    survey(log, NOW + 300, 5, event_id="s")  # exactly 300 s ahead: accepted
    survey(log, NOW + 301, 5, event_id="s")  # future, although its id was applied
    res = log.run()
    assert reasons(res) == ["currency", "future"]
    assert res.duplicates == 0


def test_lifecycle_dead_letters() -> None:
    log = Log()
    ap(log, "A", T0 + 100, 100)
    ar(log, "R", T0 + 100, 100)
    expected = []

    def bad(etype: str, why: str, t: float = T0 + 500, **fields: Any) -> None:
        expected.append((*log.add("invoices", etype, t, **fields), why))

    bad("invoice.paid", "invalid_transition", invoice_id="A", amount=1)  # not approved yet
    bad("invoice.approved", "invalid_transition", t=T0 + 99, invoice_id="A")  # before receipt
    log.add("invoices", "invoice.approved", T0 + 200, invoice_id="A")
    bad("invoice.approved", "invalid_transition", invoice_id="A")  # second approval
    bad("invoice.rejected", "invalid_transition", invoice_id="A", reason="x")
    log.add("invoices", "invoice.paid", T0 + 300, invoice_id="A", amount=60)
    bad("invoice.paid", "invalid_transition", invoice_id="A", amount=40.01)  # overpayment
    log.add("invoices", "invoice.paid", T0 + 300, invoice_id="A", amount=40)  # exactly the rest
    bad("payment.received", "invalid_transition", invoice_id="A", amount=1)  # AP invoice
    bad("invoice.approved", "invalid_transition", invoice_id="R")  # AR invoice
    bad(
        "invoice.received",
        "invalid_transition",
        invoice_id="R",
        amount=5,
        currency="USD",
        department="finance",
        vendor_id="v",
    )  # start for an existing id
    bad("invoice.paid", "unknown_entity", invoice_id="Z", amount=1)
    res = log.run()
    assert res.dead_letters == expected
    assert res.applied == 5


def test_topic_with_an_empty_partition_closes_nothing() -> None:
    log = Log(hiring=2)
    survey(log, T0 + 100, 8)  # partition 0 only
    log.raw("hiring", b"garbage", partition=1)  # dead-lettered: does not move a watermark
    ap(log, "A", T0 + 100, 10)
    log.add("invoices", "invoice.approved", T0 + 200, invoice_id="A")
    log.flush(T0 + 5 * DAY, topics=("invoices",))
    survey(log, T0 + 5 * DAY, 8)
    res = log.run()
    assert res.watermarks[("hiring", 1)] == -math.inf
    assert not any(k[0] in ("employee_satisfaction", "enps") for k in res.history)
    assert res.history[("invoice_processing_time", "1h", "finance")] == {T0: (100.0, 1)}


def test_min_watermark_over_partitions_closes() -> None:
    log = Log(invoices=2)
    ap(log, "A", T0 + 100, 10)
    log.add("invoices", "invoice.approved", T0 + 200, invoice_id="A")
    log.add(
        "invoices",
        "invoice.issued",
        T0 + 5 * DAY,
        partition=0,
        invoice_id="p0",
        amount=1,
        currency="USD",
        department="zz",
        customer_id="c",
    )
    log.add(
        "invoices",
        "invoice.issued",
        T0 + 2 * HOUR,
        partition=1,
        invoice_id="p1",
        amount=1,
        currency="USD",
        department="zz",
        customer_id="c",
    )
    # frontier = min(T0 + 5d, T0 + 2h) = T0 + 2h; - grace = T0 + 1h: H0 closes, D0 does not
    h = log.run().history
    assert h[("invoice_processing_time", "1h", "finance")] == {T0: (100.0, 1)}
    assert ("invoice_processing_time", "1d", "finance") not in h


def test_timestamps_are_normalised_to_utc() -> None:
    assert parse_timestamp("2023-11-15T02:00:00+02:00") == T0
    assert parse_timestamp("2023-11-14T19:00:00.250-05:00") == T0 + 0.25
    assert parse_timestamp("2023-11-15T00:00:00Z") == T0
    assert parse_timestamp("2023-11-15T00:00:00") is None
    assert parse_timestamp("2023-02-29T00:00:00Z") is None
    assert parse_timestamp(T0) is None


def test_unknown_extra_fields_are_ignored_and_amount_strings_accepted() -> None:
    log = Log()
    log.add(
        "invoices",
        "invoice.received",
        "2023-11-15T01:00:00+01:00",
        invoice_id="A",
        amount="12.5",
        currency="USD",
        department="finance",
        vendor_id="v",
        extra={"a": 1},
    )
    log.add("invoices", "invoice.rejected", T0 + 60, invoice_id="A", reason="r")
    log.flush(T0 + DAY + HOUR)
    h = log.run().history
    # received at 01:00+01:00 = T0; rejected 60 s later
    assert h[("invoice_processing_time", "1h", "finance")] == {T0: (60.0, 1)}
    # AP_start 0, AP_end 12.5 - 12.5 (rejected) = 0 -> undefined; count received + rejected
    assert h[("ap_turnover", "1h", "finance")] == {T0: (None, 2)}


# ---------------------------------------------------------------------------------------
# The generator, and properties of the reference on generated logs.


def test_random_log_covers_every_type_and_reason() -> None:
    parts = {"invoices": 3, "hiring": 2, "incidents": 4}
    start = T0 + 1234
    messages = random_log(7, 3000, 4, parts, start)
    now = log_now(start, 4)
    res = compute(messages, partitions=parts, now=now)
    types = collections.Counter()
    foreign: set[str] = set()  # invoices in another currency, with their conversion
    for m in messages:
        try:
            doc = orjson.loads(m.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            types[doc.get("type")] += 1
            if doc.get("currency") in FOREIGN_CURRENCIES and "reporting_amount" in doc:
                foreign.add(doc.get("invoice_id", "training"))
            key = next(
                (
                    doc[f]
                    for f in (
                        "invoice_id",
                        "requisition_id",
                        "employee_id",
                        "response_id",
                        "training_id",
                        "incident_id",
                        "ticket_id",
                        "service",
                    )
                    if f in doc
                ),
                None,
            )
            if doc.get("type") == "training.completed":
                key = doc["training_id"]
            if isinstance(key, str) and doc.get("type") in EVENT_TYPES:
                assert m.partition == zlib.crc32(key.encode()) % parts[m.topic]
    assert set(EVENT_TYPES) <= set(types)
    assert len(foreign) > 100
    # ... and their payments, in the invoice's currency
    paid = {
        orjson.loads(m.value)["invoice_id"]
        for m in messages
        if b'"invoice.paid"' in m.value or b'"payment.received"' in m.value
    }
    # (was > 50 before the log's bursts of tickets, incidents and invoices took their share)
    assert len(paid & foreign) > 30
    assert set(reasons(res)) == {
        "invalid_json",
        "schema",
        "unknown_type",
        "currency",
        "future",
        "late",
        "unknown_entity",
        "invalid_transition",
    }
    assert res.duplicates > 0
    # offsets 0, 1, 2, ... per partition, in the order of the list
    seen: dict[tuple[str, int], int] = collections.defaultdict(int)
    for m in messages:
        assert m.offset == seen[(m.topic, m.partition)]
        seen[(m.topic, m.partition)] += 1
    # the flush closed every partition's 1d windows of the regular events
    assert len(res.history[("system_uptime", "1d", "all")]) >= 4
    assert all(wm >= start + 4 * DAY for wm in res.watermarks.values())
    assert len(res.history) > 100
    # the same seed gives the same log
    assert random_log(7, 3000, 4, parts, start) == messages


def _interleave(messages: list[Message], seed: int) -> list[Message]:
    """Another arbitrary interleaving of the partitions, each still in offset order."""
    queues: dict[tuple[str, int], list[Message]] = collections.defaultdict(list)
    for m in messages:
        queues[(m.topic, m.partition)].append(m)
    rnd = random.Random(seed)
    pending = [q for q in queues.values()]
    out = []
    while pending:
        q = rnd.choice(pending)
        out.append(q.pop(0))
        if not q:
            pending.remove(q)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_logs(max_events=80))
def test_reference_ignores_interleaving_and_is_consistent(
    log: tuple[list[Message], dict[str, int], float],
) -> None:
    messages, partitions, now = log
    res = compute(messages, partitions=partitions, now=now)
    other = compute(_interleave(messages, len(messages)), partitions=partitions, now=now)
    assert other.history == res.history
    assert sorted(other.dead_letters) == sorted(res.dead_letters)
    assert other.duplicates == res.duplicates
    assert res.applied + len(res.dead_letters) + res.duplicates == len(messages)
    for (kpi, _window, _scope), windows in res.history.items():
        for value, count in windows.values():
            assert count >= 0
            assert count > 0 or kpi == "system_uptime"
            if value is not None:
                assert math.isfinite(value)
                if kpi in ("system_uptime", "invoice_error_rate"):
                    assert 0.0 <= value <= 1.0
                if kpi == "enps":
                    assert -100.0 <= value <= 100.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_logs(max_events=80, faults=False))
def test_logs_without_faults_are_all_applied(
    log: tuple[list[Message], dict[str, int], float],
) -> None:
    # the generator's idea of every lifecycle agrees with the reference: nothing is refused
    messages, partitions, now = log
    res = compute(messages, partitions=partitions, now=now)
    assert res.dead_letters == []
    assert res.duplicates == 0
    assert res.applied == len(messages)


def test_larger_log_without_faults_is_all_applied() -> None:
    parts = {"invoices": 2, "hiring": 3, "incidents": 1}
    start = T0 - 5000
    messages = random_log(11, 2000, 3.5, parts, start, faults=False)
    res = compute(messages, partitions=parts, now=log_now(start, 3.5))
    assert (res.dead_letters, res.duplicates, res.applied) == ([], 0, len(messages))
    # every occurred_at <= now (only the future faults are dated later)
    times = [parse_timestamp(orjson.loads(m.value)["occurred_at"]) for m in messages]
    assert max(t for t in times if t is not None) <= log_now(start, 3.5)


# --- SLA attainment, percentiles and worst entities (SPEC version 2, section 2) ----------


def tickets(log: Log, *lifecycles: tuple[str, float, float, str, str]) -> None:
    """(ticket id, opened, resolved, queue, priority): the events in event-time order."""
    events = []
    for tid, opened, resolved, queue, priority in lifecycles:
        events.append(
            (opened, "ticket.opened", {"ticket_id": tid, "queue": queue, "priority": priority})
        )
        events.append((resolved, "ticket.resolved", {"ticket_id": tid}))
    for t, etype, fields in sorted(events, key=lambda e: (e[0], e[1] == "ticket.resolved")):
        log.add("incidents", etype, t, **fields)


def test_ticket_sla_attainment_by_priority_with_default_and_given_slas() -> None:
    log = Log()
    tickets(
        log,
        ("a", T0, T0 + 4 * HOUR, "desk", "p1"),  # 4h: p1 is 4h, within (<=)
        ("b", T0, T0 + 4 * HOUR + 1, "desk", "p1"),  # 4h 1s: missed
        ("c", T0 + HOUR, T0 + 5 * HOUR, "desk", "p2"),  # 4h: p2 is 8h, within
        ("d", T0, T0 + 80 * HOUR, "access", "p4"),  # 80h: p4 is 72h, missed (D3)
        ("e", T0, T0 + 6 * HOUR, "access", "p3"),  # 6h: p3 is 24h, within
    )
    log.flush(T0 + 5 * DAY)
    sla = "ticket_sla_attainment"
    h = log.run().history
    # D0: desk 2 of 3, access 1 of 1, all 3 of 4 (summed parts); D3: access 0 of 1
    assert h[(sla, "1d", "desk")] == {T0: (2 / 3, 3)}
    assert h[(sla, "1d", "access")] == {T0: (1.0, 1), T0 + 3 * DAY: (0.0, 1)}
    assert h[(sla, "1d", "all")] == {T0: (0.75, 4), T0 + 3 * DAY: (0.0, 1)}
    # KPI_TICKET_SLA=p1=4h1s,p3=5h: b now within, e missed; p2 and p4 keep their defaults
    h = log.run(ticket_sla="p1=14401s,p3=5h").history
    assert h[(sla, "1d", "desk")] == {T0: (1.0, 3)}
    assert h[(sla, "1d", "access")] == {T0: (0.0, 1), T0 + 3 * DAY: (0.0, 1)}
    # in minutes and days, decimals: p4=3.5d (84h) lets d through
    h = log.run(ticket_sla="p1=240m,p4=3.5d").history
    assert h[(sla, "1d", "access")] == {T0: (1.0, 1), T0 + 3 * DAY: (1.0, 1)}


def test_incident_sla_attainment_by_severity() -> None:
    log = Log()
    incidents = (("i1", "sev1", 240), ("i2", "sev1", 241), ("i3", "sev3", 600))
    for iid, sev, _ in incidents:
        log.add(
            "incidents",
            "incident.opened",
            T0,
            incident_id=iid,
            service="api",
            severity=sev,
            category="outage",
        )
    for iid, _, _ in incidents:
        log.add("incidents", "incident.acknowledged", T0 + 60, incident_id=iid)
    for iid, _, minutes in incidents:
        log.add("incidents", "incident.resolved", T0 + minutes * 60, incident_id=iid)
    log.flush(T0 + 2 * DAY)
    key = ("incident_sla_attainment", "1d", "api")
    # i1 240 min <= 4h, i2 241 min > 4h, i3 10h <= 24h; acknowledgements do not count
    assert log.run().history[key] == {T0: (2 / 3, 3)}
    assert log.run(incident_sla="sev3=9h").history[key] == {T0: (1 / 3, 3)}


def test_exact_percentiles_use_integer_ranks() -> None:
    # k = pct * (n - 1) // 100 on x sorted ascending
    d = reference.distribution([(f"t{i}", float(i)) for i in range(11)])  # 0 .. 10
    assert (d.p50, d.p90, d.p99) == (5.0, 9.0, 9.0)  # k = 5, 9, 9 (99 * 10 // 100)
    d = reference.distribution([(f"t{i}", float(i)) for i in range(101)])
    assert (d.p50, d.p90, d.p99) == (50.0, 90.0, 99.0)
    d = reference.distribution([(f"t{i}", float(i)) for i in range(30)])  # n - 1 = 29
    assert (d.p50, d.p90, d.p99) == (14.0, 26.0, 28.0)  # 1450 // 100, 2610 // 100, 2871 // 100
    d = reference.distribution([("only", 0.0)])
    assert d == reference.Distribution(0.0, 0.0, 0.0, (("only", 0.0),))
    assert reference.distribution([]) == reference.Distribution(None, None, None, ())


def test_percentiles_and_worst_per_window_and_roll_up() -> None:
    log = Log()
    # D0, desk: 11 tickets; durations 0 (t0), 100 x 3 (t3, t1, t2: a tie), 200 .. 900 (t4..t10)
    durations = {"t0": 0, "t3": 100, "t1": 100, "t2": 100}
    durations.update({f"t{i}": 100 * (i - 2) for i in range(4, 11)})
    # D0, access: one ticket of 250 s; D1, desk: one of 50 s
    tickets(
        log,
        *(
            (tid, T0 + 1000, T0 + 1000 + seconds, "desk", "p3")
            for tid, seconds in durations.items()
        ),
        ("x", T0 + 2000, T0 + 2250, "access", "p3"),
        ("y", T0 + DAY, T0 + DAY + 50, "desk", "p3"),
    )
    log.flush(T0 + 3 * DAY)
    res = log.run()
    trt = "ticket_resolution_time"
    desk = res.records((trt, "1d", "desk"))
    # sorted: 0, 100, 100, 100, 200, 300, 400, 500, 600, 700, 800 (n = 11):
    # p50 x_5 = 300, p90 x_9 = 700, p99 x_9 = 700; the worst ten leave out t0 (0 s), and
    # the three of 100 s come by id: t1, t2, t3
    assert desk[T0] == HistoryRecord(
        T0,
        T0 + DAY,
        "2023-11-15",
        3800 / 11,
        11,
        300.0,
        700.0,
        700.0,
        (
            ("t10", 800.0),
            ("t9", 700.0),
            ("t8", 600.0),
            ("t7", 500.0),
            ("t6", 400.0),
            ("t5", 300.0),
            ("t4", 200.0),
            ("t1", 100.0),
            ("t2", 100.0),
            ("t3", 100.0),
        ),
    )
    assert desk[T0 + DAY][5:] == (50.0, 50.0, 50.0, (("y", 50.0),))
    # all, D0: n = 12 with access' 250 s; x_5 = 250, x_9 = 600, x_10 = 700 (99 * 11 // 100)
    roll_up = res.records((trt, "1d", "all"))[T0]
    assert roll_up[5:8] == (250.0, 600.0, 700.0)
    assert roll_up.worst is not None and roll_up.worst[6:8] == (("x", 250.0), ("t4", 200.0))
    # the KPIs without durations have no distribution
    assert res.records(("ticket_sla_attainment", "1d", "desk"))[T0].worst is None
    assert (trt, "1d", "desk") in res.distributions
