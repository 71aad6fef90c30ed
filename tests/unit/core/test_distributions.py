"""The duration sketch and worst lists: the SPEC's 1% bound and exact top 10, across merges."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import distributions as d
from streams.core.distributions import WORST_N
from streams.core.engine import Engine
from streams.core.records import Message
from streams.core.windows import calendar_windows
from tests.eventgen import log_now, random_log


def exact(durations: list[float], percent: int) -> float:
    """SPEC section 2: x_k of the ascending durations, k = floor(q (n - 1))."""
    ordered = sorted(durations)
    return ordered[percent * (len(ordered) - 1) // 100]


def within_bound(got: float | None, want: float) -> bool:
    assert got is not None
    if want == 0.0:
        return got == 0.0
    return abs(got - want) <= 0.01 * want


def fill(items: list[tuple[float, str]]) -> d.Dist:
    dist = d.new()
    for seconds, entity in items:
        d.add(dist, seconds, d.bucket(seconds) if seconds > 0 else 0, entity)
    return dist


durations = st.one_of(
    st.just(0.0),
    st.integers(min_value=1, max_value=40 * 86400).map(float),
    st.floats(min_value=1e-3, max_value=1e8, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(durations, st.integers(0, 30).map(lambda i: f"id-{i:02d}")), min_size=1),
    st.integers(min_value=1, max_value=6),
)
def test_panes_merge_to_the_exact_percentiles_and_worst(
    items: list[tuple[float, str]], n_panes: int
) -> None:
    panes = [fill(items[i::n_panes]) for i in range(n_panes)]
    # As kept in the changelog and restored.
    panes = [orjson.loads(orjson.dumps(p)) for p in panes]
    p50, p90, p99, worst = d.summarize(panes)
    values = [s for s, _ in items]
    for got, percent in ((p50, 50), (p90, 90), (p99, 99)):
        assert within_bound(got, exact(values, percent)), (got, percent, sorted(values))
    expected = sorted(items, key=lambda x: (-x[0], x[1]))[: d.WORST_N]
    assert worst == tuple((entity, seconds) for seconds, entity in expected)


def test_bucket_edges_stay_within_the_bound() -> None:
    # Durations at (and a hair around) the bucket boundaries gamma^i, where the float
    # rounding of log can move a duration into the neighbouring bucket.
    for i in range(-300, 1200, 7):
        edge = d.GAMMA**i
        for x in (edge, math.nextafter(edge, 0.0), math.nextafter(edge, math.inf)):
            got = d.bucket_value(d.bucket(x))
            assert abs(got - x) <= 0.01 * x, (i, x, got)


def test_buckets_grow_at_both_ends_of_a_pane() -> None:
    dist = fill([(3600.0, "a"), (60.0, "b"), (86400.0 * 30, "c"), (1.0, "d"), (0.0, "e")])
    p50, _p90, p99, worst = d.summarize([dist])
    assert dist[0] == 1 and sum(dist[2]) == 4
    assert p50 is not None and within_bound(p50, 60.0)
    assert p99 is not None and within_bound(p99, 3600.0)  # k = floor(0.99 * 4) = 3
    assert [e for e, _ in worst] == ["c", "a", "b", "d", "e"]


def test_only_zero_durations_report_zero_and_an_empty_window_nothing() -> None:
    assert d.summarize([fill([(0.0, "a"), (0.0, "b")])])[:3] == (0.0, 0.0, 0.0)
    assert d.summarize([]) == d.EMPTY_SUMMARY
    assert d.summarize([d.new()]) == d.EMPTY_SUMMARY


def test_ties_in_seconds_list_ids_ascending_and_keep_ten() -> None:
    items = [(100.0, f"t{i:02d}") for i in range(15, -1, -1)]
    _, _, _, worst = d.summarize([fill(items[:8]), fill(items[8:])])
    assert [e for e, _ in worst] == [f"t{i:02d}" for i in range(10)]


def _engine(partitions: dict[str, int], now: float) -> Engine:
    return Engine(partitions=partitions, grace_s=3600, currency="USD", clock=lambda: now)


@pytest.mark.parametrize("batch", [1, 97, 2000])
def test_the_aggregates_read_as_the_panes_merged_again(batch: int) -> None:
    # What each batch reports (the newest windows, the closed ones) from the running
    # aggregates equals the distributions merged from the panes, in every batch.
    partitions = {"invoices": 3, "hiring": 2, "incidents": 2}
    start = 1_700_000_000.0
    log = random_log(seed=7, n_events=3000, days=5, partitions=partitions, start=start)
    messages = [Message(m.topic, m.partition, m.offset, m.value) for m in log]
    engine = _engine(partitions, log_now(start, 5))
    panes = engine._panes
    specs = calendar_windows(engine.calendar)
    seen = 0
    for i in range(0, len(messages), batch):
        result = engine.process(messages[i : i + batch])
        for value in [*result.current, *result.closed]:
            kpi = engine.catalog[value.kpi]
            if not kpi.distribution:
                assert value.worst is None and value.p50 is None
                continue
            again = panes.distribution_from_panes(kpi, specs[value.window], value.scope, value.end)
            assert (value.p50, value.p90, value.p99, value.worst) == again, value
            seen += value.worst is not None and len(value.worst) == WORST_N
    assert seen > 50  # windows with ten worst and more were compared


def test_a_replica_update_rebuilds_the_aggregates_it_touches() -> None:
    # Two engines own one partition each; the leader keeps a replica of the other's from
    # its changelog (whole commits, meta records included). The leader's window reads must
    # match a merge of its panes after each replica update, which replaces panes wholesale
    # instead of adding durations.
    partitions = {"invoices": 2, "hiring": 2, "incidents": 2}
    start = 1_700_000_000.0
    log = random_log(seed=3, n_events=2000, days=3, partitions=partitions, start=start)
    messages = [Message(m.topic, m.partition, m.offset, m.value) for m in log]
    now = log_now(start, 3)
    leader, other = _engine(partitions, now), _engine(partitions, now)
    other.lead([])
    specs = calendar_windows(leader.calendar)
    compared = 0
    for i in range(0, len(messages), 150):
        chunk = messages[i : i + 150]
        other.process([m for m in chunk if m.partition == 1])
        for topic, partition, records in other.commit():
            leader.replica_apply(topic, partition, [(r.key, r.value) for r in records])
        result = leader.process([m for m in chunk if m.partition == 0])
        leader.commit()
        for value in [*result.current, *result.closed]:
            kpi = leader.catalog[value.kpi]
            if kpi.distribution:
                again = leader._panes.distribution_from_panes(
                    kpi, specs[value.window], value.scope, value.end
                )
                assert (value.p50, value.p90, value.p99, value.worst) == again, value
                compared += 1
    assert compared > 100
    # The replica was applied (its meta records arrived), so its panes were read too.
    assert leader._partitions.replicas[("incidents", 1)].data
