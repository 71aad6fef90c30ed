"""Foreign currencies (SPEC section 1): booked reporting amounts, payments at the booked rate.

An invoice in another currency than ``KPI_CURRENCY`` counts with its ``reporting_amount``;
its payments (in the invoice's currency) move AR/AP by the share of that booked amount they
settle, all of what is left once the invoice is paid in full, so a fully paid invoice
leaves no balance. Limits stay in the invoice's own currency. docs/KPIS.md, "Foreign
currencies", has the worked example tested first here.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decode import decode
from streams.core.lifecycle import apply_event
from streams.core.state import PartitionState
from tests import reference
from tests.unit.core.test_against_reference import compare
from tests.unit.core.test_engine import DAY, T0, H, Log, closed_map, engine


def issued(log: Log, inv: str, t: float, amount: float, currency: str = "USD", **kw: Any) -> None:
    log.ev(
        "invoices",
        0,
        "invoice.issued",
        t,
        invoice_id=inv,
        amount=amount,
        currency=currency,
        department="sales",
        customer_id="c1",
        **kw,
    )


def received(log: Log, inv: str, t: float, amount: float, currency: str = "USD", **kw: Any) -> None:
    log.ev(
        "invoices",
        0,
        "invoice.received",
        t,
        invoice_id=inv,
        amount=amount,
        currency=currency,
        department="finance",
        vendor_id="v1",
        **kw,
    )


def flush(log: Log, t: float) -> None:
    received(log, "flush", t, 1.0)


def test_worked_example_eur_invoice_paid_in_two_parts() -> None:
    # docs/KPIS.md: EUR 1,000 booked at USD 1,080, paid EUR 400 on day 2 and EUR 600 on day 3.
    log = Log()
    issued(log, "eu", T0 + 60, 1000, "EUR", reporting_amount=1080)
    log.ev("invoices", 0, "payment.received", T0 + DAY + 60, invoice_id="eu", amount=400)
    log.ev("invoices", 0, "payment.received", T0 + 2 * DAY + 60, invoice_id="eu", amount=600)
    issued(log, "us", T0 + 2 * DAY + 120, 100)  # credit sales on day 3, in USD
    flush(log, T0 + 4 * DAY)
    result = engine().process(log.messages)
    assert result.dead_letters == []
    closed = closed_map(result.closed)
    # Day 1: AR 1,080 of credit sales 1,080 -> 1 day.
    assert closed[("dso", "1d", "sales", T0)] == (1.0, 1)
    # Day 2: EUR 400 is 400/1000 of the booked USD 1,080: AR 648, no credit sales.
    assert closed[("dso", "1d", "sales", T0 + DAY)] == (None, 1)
    # Day 3: EUR 600 settles the remaining USD 648; AR is the USD invoice's 100 alone.
    assert closed[("dso", "1d", "sales", T0 + 2 * DAY)] == (1.0, 2)
    # The 30 days ending with day 2: AR 648 / credit sales 1,080 x 30 days = 18 days.
    value, count = closed[("dso", "30d", "sales", T0 + 2 * DAY - 30 * DAY)]
    assert (value, count) == (pytest.approx(18.0, rel=1e-15), 2)


def test_payments_above_outstanding_are_judged_in_the_invoice_currency() -> None:
    log = Log()
    issued(log, "eu", T0, 1000, "EUR", reporting_amount=1080)
    log.ev("invoices", 0, "payment.received", T0 + 60, invoice_id="eu", amount=600)
    # 450 is above the EUR 400 outstanding, although below the USD 432 outstanding in the
    # reporting currency: a payment is compared with the invoice in its own currency.
    log.ev("invoices", 0, "payment.received", T0 + 120, invoice_id="eu", amount=450)
    # 400 pays it in full; a further cent is above the EUR 0 outstanding.
    log.ev("invoices", 0, "payment.received", T0 + 180, invoice_id="eu", amount=400)
    log.ev("invoices", 0, "payment.received", T0 + 240, invoice_id="eu", amount=0.01)
    result = engine().process(log.messages)
    assert [(d.offset, d.reason) for d in result.dead_letters] == [
        (2, "invalid_transition"),
        (4, "invalid_transition"),
    ]


def test_foreign_money_without_reporting_amount_is_dead_lettered_currency() -> None:
    log = Log()
    issued(log, "a", T0, 1000, "EUR")
    issued(log, "b", T0, 1000, "eur", reporting_amount=1080)  # not a code
    received(log, "c", T0, 1000, "GBP", reporting_amount=None)
    issued(log, "d", T0, 1000, "EUR", reporting_amount=1080)
    log.ev("invoices", 0, "payment.received", T0 + 60, invoice_id="a", amount=10)
    result = engine().process(log.messages)
    assert [(d.offset, d.reason) for d in result.dead_letters] == [
        (0, "currency"),
        (1, "currency"),
        (2, "currency"),
        (4, "unknown_entity"),  # the invoice was never applied
    ]
    assert result.applied[("invoices", "invoice.issued")] == 1


def test_reporting_amount_in_the_reporting_currency_is_ignored() -> None:
    plain, extra = Log(), Log()
    issued(plain, "a", T0, 1000)
    issued(extra, "a", T0, 1000, reporting_amount=5)
    for log in (plain, extra):
        flush(log, T0 + 3 * H)
    values = [closed_map(engine().process(log.messages).closed) for log in (plain, extra)]
    assert values[0] == values[1]
    assert values[1][("dso", "1h", "sales", T0)] == (pytest.approx(1 / 24, rel=1e-15), 1)


def test_ap_invoice_purchases_payments_and_rejection_in_the_reporting_currency() -> None:
    log = Log()
    received(log, "eu", T0 + 60, 1000, "EUR", reporting_amount=1080)
    received(log, "gb", T0 + 120, 200, "GBP", reporting_amount=254)
    log.ev("invoices", 0, "invoice.approved", T0 + H + 60, invoice_id="eu")
    log.ev("invoices", 0, "invoice.rejected", T0 + H + 120, invoice_id="gb", reason="no PO")
    log.ev("invoices", 0, "invoice.paid", T0 + 2 * H + 60, invoice_id="eu", amount=250)
    log.ev("invoices", 0, "invoice.paid", T0 + 3 * H + 60, invoice_id="eu", amount=750)
    received(log, "us", T0 + 4 * H + 60, 100)
    log.ev("invoices", 0, "invoice.rejected", T0 + 4 * H + 120, invoice_id="us", reason="x")
    flush(log, T0 + 6 * H)
    closed = closed_map(engine().process(log.messages).closed)
    # Hour 1: purchases 1,080 + 254, AP 0 -> 1,334: turnover 1,334 / 667 = 2.
    assert closed[("ap_turnover", "1h", "finance", T0)] == (2.0, 2)
    # Hour 2: the rejection takes the whole booked 254 off AP: 1,334 -> 1,080.
    assert closed[("ap_turnover", "1h", "finance", T0 + H)] == (0.0, 1)
    # Hours 3 and 4: 250/1000 of 1,080 = 270, then the remaining 810: AP back to 0.
    assert closed[("ap_turnover", "1h", "finance", T0 + 2 * H)] == (0.0, 1)
    assert closed[("ap_turnover", "1h", "finance", T0 + 3 * H)] == (0.0, 1)
    # Hour 5: AP is 0 at its start and end (one USD invoice received and rejected in it).
    assert closed[("ap_turnover", "1h", "finance", T0 + 4 * H)] == (None, 2)


def test_training_cost_counts_the_reporting_amount() -> None:
    log = Log()
    for n, (cost, currency, booked) in enumerate([(100, "USD", None), (100, "EUR", 108.5)]):
        fields: dict[str, Any] = {"cost": cost, "currency": currency}
        if booked is not None:
            fields["reporting_amount"] = booked
        log.ev("hiring", 0, "training.completed", T0 + 60 * n, training_id=f"t{n}",
               employee_id="e", department="hr", **fields)  # fmt: skip
    log.ev("hiring", 0, "survey.submitted", T0 + 3 * H, response_id="r", department="hr", score=9)
    closed = closed_map(engine().process(log.messages).closed)
    assert closed[("training_cost", "1h", "hr", T0)] == (208.5, 2)


def pay_all(amount: float, booked: float, parts: list[float]) -> list[float]:
    """The conversions the lifecycle gives the payments of a foreign AR invoice, in order."""
    state = PartitionState("invoices", 0)
    converted: list[float] = []

    def event(**body: Any) -> Any:
        body = {"event_id": f"e{len(converted)}", "occurred_at": "2026-01-01T00:00:00Z", **body}
        return decode(orjson.dumps(body), topic="invoices", currency="USD")

    issue = event(type="invoice.issued", invoice_id="x", amount=amount, currency="EUR",
                  reporting_amount=booked, department="d", customer_id="c")  # fmt: skip
    assert apply_event(state, issue, T0).amount == booked
    for part in parts:
        pay = event(type="payment.received", invoice_id="x", amount=part)
        converted.append(apply_event(state, pay, T0).amount)
    assert state.data["e|inv|x"]["z"] == T0  # paid in full
    return converted


@settings(deadline=None)
@given(
    cents=st.integers(100, 10**9),
    rate=st.floats(0.005, 200.0),
    cuts=st.lists(st.floats(0.0, 1.0), max_size=6),
    dust=st.sampled_from([0.0, 9e-7, -9e-7, 4e-7]),
)
def test_converted_payments_settle_exactly_the_booked_amount(
    cents: int, rate: float, cuts: list[float], dust: float
) -> None:
    amount = cents / 100
    booked = max(round(amount * rate, 2), 0.01)
    # Parts (in cents) adding up to the invoice, as floats a source system sends; the last
    # one may be off by less than the tolerance (1e-6) and still pays the invoice in full.
    marks = sorted({0, cents, *(round(c * cents) for c in cuts)})
    parts = [(b - a) / 100 for a, b in zip(marks, marks[1:], strict=False)]
    if parts[-1] + dust > 0:
        parts[-1] += dust
    converted = pay_all(amount, booked, parts)
    # Each payment but the last is its share at the booked rate, within rounding ...
    for part, value in zip(parts[:-1], converted[:-1], strict=True):
        assert value == pytest.approx(part * booked / amount, rel=1e-12, abs=1e-12)
    # ... and the last settles what they left: the balance returns to zero, within the
    # rounding of the subtractions (a conversion at the rate alone would leave the dust).
    balance = booked
    for value in converted:
        balance -= value
    assert abs(balance) <= 4 * math.ulp(booked)


def test_an_invoice_kept_before_currencies_is_in_the_reporting_currency() -> None:
    # Reporting-currency invoices are written to the changelog exactly as before foreign
    # currencies (no booked amount): state written by earlier versions reads as such.
    log = Log()
    issued(log, "us", T0, 1000)
    issued(log, "eu", T0, 1000, "EUR", reporting_amount=1080)
    eng = engine()
    eng.process(log.messages)
    records = eng.states[("invoices", 0)].commit()
    values = {r.key: orjson.loads(r.value)["v"] for r in records if r.key.startswith(b"e|")}
    assert values[b"e|inv|us"] == {"k": "ar", "a": 1000.0, "d": "sales", "t": T0, "paid": 0.0}
    assert values[b"e|inv|eu"]["r"] == 1080.0
    # Restored from the changelog, both are paid in full and the AR returns to 0.
    again = engine()
    again.assign(PartitionState.restore("invoices", 0, [(r.key, r.value) for r in records]))
    rest = Log()
    rest.offsets[("invoices", 0)] = 2
    rest.n = log.n  # new event ids
    rest.ev("invoices", 0, "payment.received", T0 + 60, invoice_id="us", amount=1000)
    rest.ev("invoices", 0, "payment.received", T0 + 60, invoice_id="eu", amount=1000)
    issued(rest, "new", T0 + 120, 50)
    flush(rest, T0 + 3 * H)
    closed = closed_map(again.process(rest.messages).closed)
    # AR at the end: the new invoice's 50 of credit sales 2,130 in the hour.
    assert closed[("dso", "1h", "sales", T0)] == (pytest.approx(50 / 2130 / 24, rel=1e-15), 5)


def test_simulated_company_with_foreign_invoices_equals_the_reference() -> None:
    # Realistic rates (cents, a daily-varying rate): conversions are rounded, and the engine
    # must still equal the reference on every closed window.
    import zlib

    from producers.simulator import CompanySimulator

    start = 1_736_121_600.0
    end = start + 12 * DAY
    sim = CompanySimulator(
        4, start, clock=lambda: end, domains=("invoices", "hiring"), currencies=("EUR", "GBP")
    )
    partitions = {"invoices": 2, "hiring": 2, "incidents": 1}
    offsets: dict[tuple[str, int], int] = {}
    messages: list[reference.Message] = []
    foreign = 0
    for e in sim:
        assert isinstance(e.payload, dict)
        foreign += e.payload.get("currency", "USD") != "USD"
        p = zlib.crc32(e.key.encode()) % 2
        offset = offsets.get((e.topic, p), 0)
        offsets[(e.topic, p)] = offset + 1
        messages.append(reference.Message(e.topic, p, offset, orjson.dumps(e.payload)))
    assert foreign > 50
    compare(messages, partitions, end + DAY, seed=1)
