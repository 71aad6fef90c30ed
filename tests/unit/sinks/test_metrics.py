"""The worker's metrics: the batch histogram exposes what prometheus_client's would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.sinks.metrics import LATENCY_BUCKETS, BatchHistogram, Metrics

# Bounds themselves (le is inclusive), values around them, zero and far beyond the last.
VALUES = st.one_of(
    st.sampled_from([0.0, *LATENCY_BUCKETS, 61.0, 1e9]),
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
)


def exposition(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    # _created differs by construction time; _sum by summation order in the last bits.
    return [x for x in lines if "_created" not in x and "_sum " not in x]


@given(st.lists(st.lists(VALUES, max_size=30), max_size=5))
def test_batch_histogram_exposes_the_library_histogram(batches: list[list[float]]) -> None:
    library, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("lat_seconds", "doc", buckets=LATENCY_BUCKETS, registry=library)
    batched = BatchHistogram("lat_seconds", "doc", LATENCY_BUCKETS, ours)
    for batch in batches:
        for value in batch:
            reference.observe(value)
        batched.observe_many(batch)
    assert exposition(ours) == exposition(library)
    total = sum(v for batch in batches for v in batch)
    assert abs(ours.get_sample_value("lat_seconds_sum") - total) <= 1e-9 * max(1.0, total)


def test_negative_latencies_count_as_zero() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.observe_latencies([-3.0, 0.002, 7.0])
    name = "backoffice_event_to_kpi_latency_seconds"
    assert registry.get_sample_value(f"{name}_bucket", {"le": "0.005"}) == 2
    assert registry.get_sample_value(f"{name}_count") == 3
    assert registry.get_sample_value(f"{name}_sum") == 7.002
