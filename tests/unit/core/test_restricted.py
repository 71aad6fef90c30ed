"""A worker restricted to some KPIs and windows (KPI_ONLY_KPIS / KPI_ONLY_WINDOWS) computes
exactly what an unrestricted one computes for them.

Both engines see the same random logs (tests/eventgen.py: out-of-order, late, duplicate and
invalid events of every reason) cut into the same random batches. Per batch, the restricted
engine's closed and newest windows must be bit-identical to the unrestricted engine's for
the selected KPIs and windows, in the same order, and the dead letters, duplicates, applied
counts and watermarks must be the same: the restriction skips the contributions to other
KPIs, never the judging of an event.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.errors import ConfigurationError
from streams.catalog import CATALOG
from streams.config import Settings
from streams.core.engine import Engine
from streams.core.records import BatchResult, Message, WindowValue
from streams.kpis.base import Kpi
from streams.selection import selected_catalog
from tests import reference
from tests.eventgen import event_logs

KPI_NAMES = [k.name for k in CATALOG]
WINDOWS = ["1h", "1d", "30d"]


def _engine(partitions: dict[str, int], now: float, catalog: tuple[Kpi, ...]) -> Engine:
    return Engine(
        partitions=partitions, grace_s=3600, currency="USD", clock=lambda: now, catalog=catalog
    )


def _windows(values: list[WindowValue], selected: set[tuple[str, str]]) -> list[WindowValue]:
    return [wv for wv in values if (wv.kpi, wv.window) in selected]


def _judged(result: BatchResult) -> tuple[object, ...]:
    dead = [(d.reason, d.detail, d.topic, d.partition, d.offset) for d in result.dead_letters]
    return dead, dict(result.duplicates), dict(result.applied)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    log=event_logs(max_events=80),
    kpis=st.lists(st.sampled_from(KPI_NAMES), min_size=1, max_size=3, unique=True),
    windows=st.lists(st.sampled_from(WINDOWS), max_size=2, unique=True),
    seed=st.integers(0, 2**16),
)
def test_restricted_engine_equals_unrestricted_for_its_kpis(
    log: tuple[list[reference.Message], dict[str, int], float],
    kpis: list[str],
    windows: list[str],
    seed: int,
) -> None:
    messages, partitions, now = log
    only = Settings(only_kpis=",".join(kpis), only_windows=",".join(windows))
    try:
        catalog = selected_catalog(only)
    except ConfigurationError:  # no KPI left with those windows: the worker refuses to start
        return
    selected = {(k.name, w) for k in catalog for w in k.windows}
    full = _engine(partitions, now, CATALOG)
    restricted = _engine(partitions, now, catalog)
    rng = random.Random(seed)
    i = 0
    while i < len(messages):
        n = rng.choice((1, 3, 17, 64, 400))
        batch = [Message(m.topic, m.partition, m.offset, m.value) for m in messages[i : i + n]]
        i += n
        expected = full.process(batch)
        got = restricted.process(batch)
        assert _judged(got) == _judged(expected)
        assert got.closed == _windows(expected.closed, selected)
        assert got.current == _windows(expected.current, selected)
        for tp, state in restricted.states.items():
            assert state.watermark == full.states[tp].watermark
        for engine in (full, restricted):
            for state in engine.states.values():
                state.commit()


def test_single_kpi_mode_skips_other_kpis_panes() -> None:
    # The benchmark's mode: only invoice_processing_time, 1h; no pane of another KPI.
    catalog = selected_catalog(Settings(only_kpis="invoice_processing_time", only_windows="1h"))
    engine = _engine({"invoices": 1}, 1_700_100_000.0, catalog)
    events = [
        b'{"event_id":"a","type":"invoice.received","occurred_at":"2023-11-14T22:13:20Z",'
        b'"invoice_id":"i","amount":10,"currency":"USD","department":"it","vendor_id":"v"}',
        b'{"event_id":"b","type":"invoice.rejected","occurred_at":"2023-11-14T23:13:20Z",'
        b'"invoice_id":"i","reason":"x"}',
    ]
    result = engine.process([Message("invoices", 0, o, v) for o, v in enumerate(events)])
    assert not result.dead_letters
    assert {wv.kpi for wv in result.current} == {"invoice_processing_time"}
    panes = [k for k in engine.states[("invoices", 0)].data if k.startswith("p|")]
    assert panes
    assert all(k.startswith("p|invoice_processing_time|1h|") for k in panes)
