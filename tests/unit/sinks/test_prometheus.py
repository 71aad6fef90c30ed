"""The Prometheus sink: KPI gauges from each batch's newest values, forgotten when not led."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streams.catalog import CATALOG
from streams.core.records import WindowValue
from streams.sinks.base import SinkBatch
from streams.sinks.metrics import Metrics
from streams.sinks.prometheus import PrometheusSink

DSO = next(k for k in CATALOG if k.name == "dso")
UPTIME = next(k for k in CATALOG if k.name == "system_uptime")


def wv(kpi: str, scope: str, value: float | None) -> WindowValue:
    return WindowValue(kpi, "1d", scope, 0, 86400, "1970-01-01", value, 1, False)


def sample(registry: CollectorRegistry, metric: str, scope: str, dimension: str) -> float | None:
    return registry.get_sample_value(metric, {"window": "1d", dimension: scope})


async def test_gauges_follow_the_newest_values_and_go_when_the_kpi_is_not_led() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(Metrics(registry))
    await sink.write(SinkBatch(current=[wv("dso", "all", 30.5), wv("system_uptime", "api", 0.99)]))
    assert sample(registry, DSO.metric, "all", DSO.dimension) == 30.5
    # An undefined value has no sample.
    await sink.write(SinkBatch(current=[wv("dso", "all", None)]))
    assert sample(registry, DSO.metric, "all", DSO.dimension) is None
    await sink.write(SinkBatch(current=[wv("dso", "all", 31.0), wv("dso", "sales", 1.0)]))
    # The batch after dso is led elsewhere: its series go, before the batch's own values.
    await sink.write(
        SinkBatch(current=[wv("system_uptime", "api", 0.98)], retired=frozenset({"dso"}))
    )
    assert sample(registry, DSO.metric, "all", DSO.dimension) is None
    assert sample(registry, DSO.metric, "sales", DSO.dimension) is None
    assert sample(registry, UPTIME.metric, "api", UPTIME.dimension) == 0.98
