"""``Engine.state_sizes`` (``/state``): what the state holds, counted by kind."""

from __future__ import annotations

from streams.core import keys
from streams.core.state import SIZE_KINDS, PartitionState, sizes
from tests.unit.core.test_engine import T0, Log, engine, received


def test_counts_entities_dedup_ids_and_dimension_values() -> None:
    log = Log()
    received(log, 0, "a", T0, dept="finance")
    received(log, 0, "b", T0 + 60, dept="hr")
    received(log, 0, "b", T0 + 60, dept="hr", event_id="ev2")  # a duplicate: not kept twice
    log.ev("invoices", 0, "invoice.rejected", T0 + 600, invoice_id="a", reason="no po")
    eng = engine()
    eng.process(log.messages)
    own = eng.state_sizes()["own"]
    assert own["partitions"] == 1
    assert own["entities"] == 2  # invoices a and b
    assert own["retiring"] == 1  # a is rejected, final: forgotten once retired
    assert own["dedup_ids"] == 3
    assert own["dimension_values"] >= 2  # finance and hr (and the vendor, the currency ...)
    assert own["panes"] > 0
    assert eng.state_sizes()["replicas"]["partitions"] == 0
    # Every key is counted once: the kinds add up to the keys (less the calendar mark).
    kinds = sum(own[name] for name in SIZE_KINDS)
    state = eng.state("invoices", 0)
    assert kinds == own["keys"] - sum(1 for k in state.data if k == keys.CALENDAR)


def test_sizes_of_no_state_and_of_several() -> None:
    assert set(sizes([]).values()) == {0}
    a, b = PartitionState("t", 0), PartitionState("t", 1)
    a.put("d|1|5", [["x", 1.0], ["y", 2.0]])
    b.put("d|1|9", [["z", 3.0]])
    b.put("c|department", ["finance", "hr"])
    out = sizes([a, b])
    assert (out["partitions"], out["keys"], out["dedup_groups"], out["dedup_ids"]) == (2, 3, 2, 3)
    assert (out["dimensions"], out["dimension_values"]) == (1, 2)
