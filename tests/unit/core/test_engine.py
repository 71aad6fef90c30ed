"""Edge cases of the streaming engine, by name, with explicit timestamps and no broker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.core.engine import Engine
from streams.core.records import Message, WindowValue
from streams.core.state import PartitionState

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a day boundary
H = 3600
DAY = 86400
NOW = T0 + 90 * DAY


def ts(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


class Log:
    """Builds messages with per-partition offsets."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self.n = 0

    def add(self, topic: str, partition: int, payload: dict[str, Any] | bytes) -> None:
        off = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = off + 1
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        self.messages.append(Message(topic, partition, off, raw))

    def ev(self, topic: str, partition: int, type_: str, t: float, **fields: Any) -> None:
        self.n += 1
        event_id = fields.pop("event_id", f"ev{self.n}")
        self.add(
            topic, partition, {"event_id": event_id, "type": type_, "occurred_at": ts(t), **fields}
        )


def engine(partitions: dict[str, int] | None = None, grace: float = H) -> Engine:
    return Engine(
        partitions=partitions or {"invoices": 1, "hiring": 1, "incidents": 1},
        grace_s=grace,
        currency="USD",
        clock=lambda: NOW,
    )


def closed_map(
    values: list[WindowValue],
) -> dict[tuple[str, str, str, int], tuple[float | None, int]]:
    out = {}
    for wv in values:
        key = (wv.kpi, wv.window, wv.scope, wv.start)
        assert key not in out, f"window closed twice: {key}"
        out[key] = (wv.value, wv.count)
    return out


def received(
    log: Log, p: int, inv: str, t: float, amount: float = 100.0, dept: str = "finance", **kw: Any
) -> None:
    log.ev(
        "invoices",
        p,
        "invoice.received",
        t,
        invoice_id=inv,
        amount=amount,
        currency="USD",
        department=dept,
        vendor_id="v1",
        **kw,
    )


def test_processing_time_and_error_rate_per_department_and_rollup() -> None:
    log = Log()
    received(log, 0, "a", T0)
    received(log, 0, "b", T0 + 600, dept="hr")
    log.ev("invoices", 0, "invoice.approved", T0 + 1800, invoice_id="a")  # 1800 s
    log.ev(
        "invoices", 0, "invoice.rejected", T0 + 3000, invoice_id="b", reason="wrong vat"
    )  # 2400 s
    received(log, 0, "flush", T0 + 3 * H)  # moves the watermark: [T0, T0+1h) closes
    eng = engine()
    closed = closed_map(eng.process(log.messages).closed)
    assert closed[("invoice_processing_time", "1h", "finance", T0)] == (1800.0, 1)
    assert closed[("invoice_processing_time", "1h", "hr", T0)] == (2400.0, 1)
    # Roll-up from summed parts: (1800 + 2400) / 2.
    assert closed[("invoice_processing_time", "1h", "all", T0)] == (2100.0, 2)
    assert closed[("invoice_error_rate", "1h", "all", T0)] == (0.5, 2)
    # The day is not closed yet: watermark - grace = T0 + 2h < T0 + 1d.
    assert ("invoice_processing_time", "1d", "all", T0) not in closed


def test_window_is_not_closed_until_every_partition_passed_it() -> None:
    log = Log()
    received(log, 0, "a", T0)
    log.ev("invoices", 0, "invoice.approved", T0 + 60, invoice_id="a")
    received(log, 0, "x", T0 + 10 * H)
    eng = engine({"invoices": 2, "hiring": 1, "incidents": 1})
    assert eng.process(log.messages).closed == []  # partition 1 has no watermark yet
    log2 = Log()
    received(log2, 1, "y", T0 + 10 * H)
    closed = closed_map(eng.process(log2.messages).closed)
    assert closed[("invoice_processing_time", "1h", "all", T0)] == (60.0, 1)


def test_late_within_grace_is_applied_and_beyond_grace_is_dead_lettered() -> None:
    log = Log()
    received(log, 0, "a", T0 + 2 * H)
    received(log, 0, "b", T0 + H + 600)  # 50 min behind the watermark: applied
    received(log, 0, "c", T0 + 2 * H + 1800)  # watermark = T0 + 2.5h
    log.ev("invoices", 0, "invoice.approved", T0 + H + 1800, invoice_id="b")  # 1 h behind: applied
    log.ev("invoices", 0, "invoice.approved", T0 + H + 1900, invoice_id="b", event_id="other")
    received(log, 0, "d", T0 + 1000)  # 2.2 h behind: late
    received(log, 0, "flush", T0 + 5 * H)
    eng = engine()
    result = eng.process(log.messages)
    assert [(d.reason, d.offset) for d in result.dead_letters] == [
        ("invalid_transition", 4),
        ("late", 5),
    ]
    closed = closed_map(result.closed)
    # b: received T0+1h10m, approved T0+1h30m, in the [T0+1h, T0+2h) window as if in order.
    assert closed[("invoice_processing_time", "1h", "all", T0 + H)] == (1200.0, 1)


def test_duplicates_never_count_twice() -> None:
    log = Log()
    received(log, 0, "a", T0, event_id="same")
    received(log, 0, "a", T0, event_id="same")
    log.ev("invoices", 0, "invoice.approved", T0 + 60, invoice_id="a", event_id="ok")
    log.ev("invoices", 0, "invoice.approved", T0 + 60, invoice_id="a", event_id="ok")
    received(log, 0, "z", T0 + 5 * H)
    eng = engine()
    result = eng.process(log.messages)
    assert result.duplicates["invoices"] == 2
    assert result.dead_letters == []
    assert closed_map(result.closed)[("invoice_error_rate", "1h", "all", T0)] == (0.0, 1)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        ({"event_id": "x", "type": "invoice.received"}, "schema"),
        (
            {
                "event_id": "x",
                "type": "ticket.opened",
                "occurred_at": ts(T0),
                "ticket_id": "t",
                "queue": "q",
                "priority": "p1",
            },
            "unknown_type",
        ),
        (
            {
                "event_id": "x",
                "type": "invoice.received",
                "occurred_at": ts(T0),
                "invoice_id": "i",
                "amount": 5,
                "currency": "EUR",
                "department": "d",
                "vendor_id": "v",
            },
            "currency",
        ),
        (
            {
                "event_id": "x",
                "type": "invoice.approved",
                "occurred_at": ts(T0),
                "invoice_id": "nope",
            },
            "unknown_entity",
        ),
        (
            {
                "event_id": "x",
                "type": "invoice.received",
                "occurred_at": ts(NOW + 3600),
                "invoice_id": "i",
                "amount": 5,
                "currency": "USD",
                "department": "d",
                "vendor_id": "v",
            },
            "future",
        ),
    ],
)
def test_invalid_events_are_dead_lettered_with_their_reason(payload: Any, reason: str) -> None:
    log = Log()
    log.add("invoices", 0, payload)
    result = engine().process(log.messages)
    assert [d.reason for d in result.dead_letters] == [reason]
    assert not result.applied


def test_overpayment_is_an_invalid_transition_and_partial_payments_are_fine() -> None:
    log = Log()
    log.ev(
        "invoices",
        0,
        "invoice.issued",
        T0,
        invoice_id="ar1",
        amount=100,
        currency="USD",
        department="sales",
        customer_id="c1",
    )
    log.ev("invoices", 0, "payment.received", T0 + 60, invoice_id="ar1", amount=60)
    log.ev("invoices", 0, "payment.received", T0 + 120, invoice_id="ar1", amount=40)
    log.ev("invoices", 0, "payment.received", T0 + 180, invoice_id="ar1", amount=1)
    result = engine().process(log.messages)
    assert [d.reason for d in result.dead_letters] == ["invalid_transition"]


def test_dso_uses_receivables_at_window_end() -> None:
    log = Log()
    log.ev(
        "invoices",
        0,
        "invoice.issued",
        T0 + 60,
        invoice_id="ar1",
        amount=1000,
        currency="USD",
        department="sales",
        customer_id="c1",
    )
    log.ev("invoices", 0, "payment.received", T0 + H + 60, invoice_id="ar1", amount=400)
    log.ev(
        "invoices",
        0,
        "invoice.issued",
        T0 + DAY + 60,
        invoice_id="ar2",
        amount=500,
        currency="USD",
        department="sales",
        customer_id="c1",
    )
    received(log, 0, "flush", T0 + 3 * DAY)
    closed = closed_map(engine().process(log.messages).closed)
    # Day 1: AR_end = 1000 - 400 = 600, credit sales 1000 -> 0.6 days.
    assert closed[("dso", "1d", "sales", T0)] == (pytest.approx(0.6), 2)
    # Day 2: AR_end = 600 + 500, credit sales 500 -> 2.2 days.
    assert closed[("dso", "1d", "sales", T0 + DAY)] == (pytest.approx(2.2), 1)
    # Hour 2 has only the payment: no credit sales, undefined, but in history (count 1).
    assert closed[("dso", "1h", "sales", T0 + H)] == (None, 1)


def test_uptime_outage_spanning_windows_and_repeats() -> None:
    log = Log()
    log.ev("incidents", 0, "service.up", T0, service="erp")
    log.ev("incidents", 0, "service.down", T0 + H + 1800, service="erp")
    log.ev("incidents", 0, "service.down", T0 + H + 2000, service="erp")  # repeat: no change
    log.ev("incidents", 0, "service.up", T0 + 2 * H + 900, service="erp")
    log.ev("incidents", 0, "service.up", T0 + 5 * H, service="crm")
    closed = closed_map(engine().process(log.messages).closed)
    assert closed[("system_uptime", "1h", "erp", T0)] == (1.0, 1)
    assert closed[("system_uptime", "1h", "erp", T0 + H)] == (0.5, 2)
    assert closed[("system_uptime", "1h", "erp", T0 + 2 * H)] == (0.75, 1)
    assert closed[("system_uptime", "1h", "erp", T0 + 3 * H)] == (1.0, 0)
    # crm's first status event is at T0 + 5h: it joins the roll-up only from then on.
    assert closed[("system_uptime", "1h", "all", T0 + H)] == (0.5, 2)
    assert ("system_uptime", "1h", "crm", T0 + 3 * H) not in closed


def test_rolling_30d_window_sums_thirty_daily_panes() -> None:
    log = Log()
    for day in (0, 10, 29, 30):
        log.ev(
            "hiring",
            0,
            "training.completed",
            T0 + day * DAY + 60,
            training_id=f"t{day}",
            employee_id="e",
            department="hr",
            cost=100.0 * (day + 1),
            currency="USD",
        )
    log.ev(
        "hiring", 0, "survey.submitted", T0 + 40 * DAY, response_id="r", department="hr", score=9
    )
    closed = closed_map(engine().process(log.messages).closed)
    # [T0, T0+30d) holds days 0, 10 and 29.
    assert closed[("training_cost", "30d", "hr", T0)] == (100.0 + 1100.0 + 3000.0, 3)
    # [T0+1d, T0+31d) holds days 10, 29 and 30.
    assert closed[("training_cost", "30d", "hr", T0 + DAY)] == (1100.0 + 3000.0 + 3100.0, 3)


def test_restore_from_changelog_resumes_exactly() -> None:
    log = Log()
    received(log, 0, "a", T0)
    log.ev("invoices", 0, "invoice.approved", T0 + 60, invoice_id="a")
    received(log, 0, "b", T0 + 120)
    first, rest = log.messages[:2], log.messages[2:]
    eng = engine()
    eng.process(first)
    records = [r for st in eng.states.values() if st.topic == "invoices" for r in st.commit()]
    # A crashed commit: the next batch's records without its meta record.
    eng.process(rest)
    st = eng.states[("invoices", 0)]
    partial = [r for r in st.commit() if r.key != b"m"]
    restored = PartitionState.restore("invoices", 0, [(r.key, r.value) for r in records + partial])
    assert restored.applied_offset == 1
    assert "e|inv|b" not in restored.data
    eng2 = engine()
    eng2.assign(restored)
    result = eng2.process(log.messages)  # replays everything; offsets 0-1 are skipped
    assert result.applied[("invoices", "invoice.received")] == 1
    assert result.dead_letters == []


def test_uptime_status_events_at_the_same_instant_keep_arrival_order() -> None:
    # down and up at the same instant, in that order: no downtime at all.
    log = Log()
    log.ev("incidents", 0, "service.down", T0 + 600, service="web")
    log.ev("incidents", 0, "service.up", T0 + 600, service="web")
    log.ev("incidents", 0, "service.up", T0 + 3 * H, service="web")
    closed = closed_map(engine().process(log.messages).closed)
    assert closed[("system_uptime", "1h", "web", T0)] == (1.0, 2)


def test_a_crashed_first_commit_is_not_taken_for_a_committed_one() -> None:
    log = Log()
    received(log, 0, "a", T0)
    eng = engine()
    eng.process(log.messages)
    st = eng.states[("invoices", 0)]
    lost = [(r.key, r.value) for r in st.commit() if r.key != b"m"]  # no meta: crashed
    restored = PartitionState.restore("invoices", 0, lost)
    assert restored.data == {} and restored.applied_offset == -1
    # The restored state rewrites those keys at its next commit, numbered past them.
    restored.applied_offset = 0
    again = restored.commit()
    assert restored.seq == 2 and {r.key for r in again} >= {b"e|inv|a", b"m"}
    final = PartitionState.restore("invoices", 0, lost + [(r.key, r.value) for r in again])
    assert "e|inv|a" not in final.data and final.applied_offset == 0


def test_cardinality_guard_dead_letters_values_beyond_the_limit() -> None:
    log = Log()
    for i in range(4):
        log.ev(
            "hiring",
            0,
            "survey.submitted",
            T0 + i,
            response_id=f"r{i}",
            department=f"d{i}",
            score=8,
        )
    log.ev("hiring", 0, "survey.submitted", T0 + 10, response_id="again", department="d1", score=8)
    eng = Engine(
        partitions={"invoices": 1, "hiring": 1, "incidents": 1},
        grace_s=H,
        currency="USD",
        clock=lambda: NOW,
        max_dimension_values=3,
    )
    result = eng.process(log.messages)
    assert [(d.reason, d.offset) for d in result.dead_letters] == [("cardinality", 3)]
    assert result.applied[("hiring", "survey.submitted")] == 4  # d1 again is known
    # The admitted values are state: a restored partition keeps the same decisions.
    st = eng.states[("hiring", 0)]
    restored = PartitionState.restore("hiring", 0, [(r.key, r.value) for r in st.commit()])
    eng2 = Engine(
        partitions={"invoices": 1, "hiring": 1, "incidents": 1},
        grace_s=H,
        currency="USD",
        clock=lambda: NOW,
        max_dimension_values=3,
    )
    eng2.assign(restored)
    log2 = Log()
    log2.offsets[("hiring", 0)] = 5
    log2.ev(
        "hiring",
        0,
        "survey.submitted",
        T0 + 20,
        response_id="x",
        department="d9",
        score=1,
        event_id="fresh",
    )
    assert [d.reason for d in eng2.process(log2.messages).dead_letters] == ["cardinality"]


def test_idle_partitions_are_left_out_of_the_frontier_only_when_enabled() -> None:
    clock = [NOW]
    log = Log()
    received(log, 0, "a", T0)
    log.ev("invoices", 0, "invoice.approved", T0 + 60, invoice_id="a")
    received(log, 0, "b", T0 + 5 * H)
    exact = Engine(
        partitions={"invoices": 2, "hiring": 1, "incidents": 1},
        grace_s=H,
        currency="USD",
        clock=lambda: clock[0],
    )
    idle = Engine(
        partitions={"invoices": 2, "hiring": 1, "incidents": 1},
        grace_s=H,
        currency="USD",
        clock=lambda: clock[0],
        idle_partition_s=30,
    )
    assert exact.process(log.messages).closed == []
    assert idle.process(log.messages).closed == []  # partition 1 is not idle yet
    clock[0] += 31
    assert exact.process([]).closed == []
    closed = closed_map(idle.process([]).closed)
    assert closed[("invoice_processing_time", "1h", "all", T0)] == (60.0, 1)
    # An event of partition 1 for a window closed without it is late, not silently lost.
    log2 = Log()
    received(log2, 1, "c", T0 + 600)
    assert [d.reason for d in idle.process(log2.messages).dead_letters] == ["late"]


def test_restricted_catalog_computes_only_its_kpis() -> None:
    from streams.catalog import KPIS

    log = Log()
    received(log, 0, "a", T0)
    log.ev("invoices", 0, "invoice.approved", T0 + 60, invoice_id="a")
    received(log, 0, "z", T0 + 5 * H)
    eng = Engine(
        partitions={"invoices": 1, "hiring": 1, "incidents": 1},
        grace_s=H,
        currency="USD",
        clock=lambda: NOW,
        catalog=[KPIS["invoice_processing_time"]],
    )
    result = eng.process(log.messages)
    assert {wv.kpi for wv in result.closed} == {"invoice_processing_time"}


def two_engines(idle_s: float = 0.0) -> tuple[Engine, Engine, list[float]]:
    """An owner of invoices-1 and the leader of invoices (owner of invoices-0)."""
    clock = [float(NOW)]
    partitions = {"invoices": 2, "hiring": 1, "incidents": 1}

    def make() -> Engine:
        return Engine(
            partitions=partitions,
            grace_s=H,
            currency="USD",
            clock=lambda: clock[0],
            idle_partition_s=idle_s,
        )

    owner, leader = make(), make()
    owner.lead(set())
    leader.lead({"invoices", "hiring", "incidents"})
    return owner, leader, clock


def commit(eng: Engine, topic: str, partition: int) -> list[tuple[bytes, bytes | None]]:
    return [(r.key, r.value) for r in eng.states[(topic, partition)].commit()]


def test_a_topic_is_neither_closed_nor_read_until_its_followed_replicas_caught_up() -> None:
    owner, leader, _clock = two_engines()
    log = Log()
    received(log, 1, "a", T0)
    log.ev("invoices", 1, "invoice.approved", T0 + 60, invoice_id="a")
    received(log, 1, "b", T0 + 5 * H)
    owner.process(log.messages)
    mine = Log()
    received(mine, 0, "x", T0 + 5 * H)
    leader.follow("invoices", 1)
    leader.replica_apply("invoices", 1, commit(owner, "invoices", 1))
    result = leader.process(mine.messages)
    # The replica may be partial (a compacted changelog read halfway): nothing is written.
    assert [wv for wv in result.closed + result.current if wv.kpi.startswith("invoice")] == []
    leader.caught_up("invoices", 1)
    result = leader.process([])
    closed = closed_map(result.closed)
    assert closed[("invoice_processing_time", "1h", "all", T0)] == (60.0, 1)
    # Every newest window is read once the view is whole, not only the touched ones.
    assert {wv.scope for wv in result.current if wv.kpi == "invoice_processing_time"} == {
        "all",
        "finance",
    }


def test_the_leader_reads_again_the_newest_windows_a_replica_changed() -> None:
    owner, leader, _clock = two_engines()
    first, mine = Log(), Log()
    received(first, 1, "a", T0 + 600)
    received(mine, 0, "x", T0 + 1200, dept="hr", event_id="mine")
    owner.process(first.messages)
    leader.follow("invoices", 1)
    leader.replica_apply("invoices", 1, commit(owner, "invoices", 1))
    leader.caught_up("invoices", 1)
    leader.process(mine.messages)
    # Only the owner's partition gets the approval; the newest window does not move.
    later = Log()
    later.offsets[("invoices", 1)] = 1
    later.ev("invoices", 1, "invoice.approved", T0 + 900, invoice_id="a", event_id="later")
    owner.process(later.messages)
    leader.replica_apply("invoices", 1, commit(owner, "invoices", 1))
    current = {
        (wv.window, wv.scope): (wv.value, wv.count)
        for wv in leader.process([]).current
        if wv.kpi == "invoice_processing_time"
    }
    assert current[("1h", "finance")] == (300.0, 1)
    assert current[("1h", "all")] == (300.0, 1)


def test_a_replica_whose_owner_takes_input_is_not_idle() -> None:
    owner, leader, clock = two_engines(idle_s=30)
    first, second, mine = Log(), Log(), Log()
    received(first, 1, "a", T0)
    received(mine, 0, "x", T0 + 5 * H, event_id="mine")
    owner.process(first.messages)
    leader.follow("invoices", 1)
    leader.replica_apply("invoices", 1, commit(owner, "invoices", 1))
    leader.caught_up("invoices", 1)
    clock[0] += 20
    second.offsets[("invoices", 1)] = 1
    received(second, 1, "b", T0 + 60, event_id="second")
    owner.process(second.messages)
    leader.replica_apply("invoices", 1, commit(owner, "invoices", 1))
    clock[0] += 20  # 40 s since start, 20 s since partition 1 took input: not idle
    leader.process(mine.messages)
    assert leader.frontier("invoices") == T0 + 60
    clock[0] += 11  # now quiet for longer than the idleness period
    assert leader.frontier("invoices") == T0 + 5 * H


def test_a_finished_entity_is_forgotten_seven_days_after_it_finished() -> None:
    log = Log()
    received(log, 0, "a", T0, amount=100.0)
    log.ev("invoices", 0, "invoice.approved", T0 + H, invoice_id="a")
    log.ev("invoices", 0, "invoice.paid", T0 + 2 * H, invoice_id="a", amount=100.0)
    received(log, 0, "b", T0 + 7 * DAY + 2 * H - 1)  # a finished 7 days ago, minus 1 s
    log.ev("invoices", 0, "invoice.paid", T0 + 7 * DAY + 2 * H, invoice_id="a", amount=1.0)
    received(log, 0, "c", T0 + 7 * DAY + 2 * H + 1)  # now more than 7 days
    log.ev("invoices", 0, "invoice.paid", T0 + 7 * DAY + 3 * H, invoice_id="a", amount=1.0)
    received(log, 0, "a", T0 + 7 * DAY + 3 * H, amount=5.0)  # the id starts anew
    eng = engine()
    result = eng.process(log.messages)
    assert [(d.offset, d.reason) for d in result.dead_letters] == [
        (4, "invalid_transition"),  # within retention: paid in full already
        (6, "unknown_entity"),  # forgotten
    ]
    st = eng.states[("invoices", 0)]
    assert st.data["e|inv|a"]["a"] == 5.0 and "z" not in st.data["e|inv|a"]
    # Swept from the state (and from the changelog: a tombstone) once past retention.
    log2 = Log()
    log2.offsets[("invoices", 0)] = 8
    log2.ev("invoices", 0, "invoice.rejected", T0 + 7 * DAY + 4 * H, invoice_id="b", reason="x")
    received(log2, 0, "d", T0 + 15 * DAY)
    eng.process(log2.messages)
    assert "e|inv|b" not in st.data and "e|inv|c" in st.data
    deleted = [r for r in st.commit() if r.key == b"e|inv|b"]
    assert len(deleted) == 1 and deleted[0].value is not None
    assert orjson.loads(deleted[0].value)["v"] is None


def test_retirement_survives_a_restore_and_does_not_depend_on_batches() -> None:
    log = Log()
    received(log, 0, "a", T0)
    log.ev("invoices", 0, "invoice.rejected", T0 + 60, invoice_id="a", reason="x")
    received(log, 0, "b", T0 + 8 * DAY)
    log.ev("invoices", 0, "invoice.approved", T0 + 8 * DAY + 1, invoice_id="a")
    outcomes = []
    for cut in range(len(log.messages) + 1):
        eng = engine()
        changelog: list[tuple[bytes, bytes | None]] = []
        eng.process(log.messages[:cut])
        if ("invoices", 0) in eng.states:
            changelog = [(r.key, r.value) for r in eng.states[("invoices", 0)].commit()]
        again = engine()
        again.assign(PartitionState.restore("invoices", 0, changelog))
        dead = again.process(log.messages[cut:]).dead_letters
        outcomes.append([(d.offset, d.reason) for d in dead if d.offset == 3])
    assert outcomes[-1] == [] and all(o == [(3, "unknown_entity")] for o in outcomes[:-1])


def test_a_changelog_record_without_a_key_is_skipped_by_a_replica() -> None:
    # A ``pairs`` reader hands every record over; only the worker's own (keyed) records count.
    owner, leader, _clock = two_engines()
    log = Log()
    received(log, 1, "a", T0)
    log.ev("invoices", 1, "invoice.approved", T0 + 60, invoice_id="a")
    owner.process(log.messages)
    records = commit(owner, "invoices", 1)
    leader.follow("invoices", 1)
    leader.replica_apply("invoices", 1, [(None, b"not ours"), *records, (None, None)])
    leader.caught_up("invoices", 1)
    result = leader.process([])
    current = {
        (wv.window, wv.scope): (wv.value, wv.count)
        for wv in result.current
        if wv.kpi == "invoice_processing_time"
    }
    assert current[("1h", "all")] == (60.0, 1)
