"""The Prometheus sink: KPI gauges from each batch's newest values, forgotten when not led."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streams.catalog import CATALOG
from streams.core.records import WindowValue
from streams.kpis.base import WINDOWS
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


def _kpi_samples(registry: CollectorRegistry, metric: str) -> list[dict[str, str]]:
    return [s.labels for f in registry.collect() if f.name == metric for s in f.samples]


async def test_every_calendar_window_is_a_series_and_new_windows_replace_old_ones() -> None:
    """Seven series per KPI and scope, whatever the number of windows closed: the window's
    calendar label is in Redis, never a Prometheus label (it would grow without end)."""
    registry = CollectorRegistry()
    sink = PrometheusSink(Metrics(registry))
    days = 400  # more than a year of newest windows, one batch a day
    for day in range(days):
        start = day * 86400
        await sink.write(
            SinkBatch(
                current=[
                    WindowValue(
                        "dso", w, scope, start, start + 86400, f"L{day}", 1.0 + day, 1, False
                    )
                    for w in WINDOWS
                    for scope in ("all", "sales")
                ]
            )
        )
    series = _kpi_samples(registry, DSO.metric)
    assert len(series) == len(WINDOWS) * 2
    assert {s["window"] for s in series} == set(WINDOWS)
    assert all(set(s) == {"window", "department"} for s in series)
    assert sample(registry, DSO.metric, "sales", DSO.dimension) == float(days)
    targets = _kpi_samples(registry, "backoffice_kpi_target")
    assert len(targets) == len(CATALOG) * len(WINDOWS)
    assert {t["window"] for t in targets if t["kpi"] == "dso"} == set(WINDOWS)
