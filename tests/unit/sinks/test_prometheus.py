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


TICKETS = next(k for k in CATALOG if k.name == "ticket_resolution_time")
QUANTILE_METRIC = "backoffice_ticket_resolution_time_quantile_seconds"


def tickets(scope: str, p50: float | None, p90: float | None, p99: float | None) -> WindowValue:
    worst = () if p99 is None else (("T-1", p99),)
    return WindowValue(
        TICKETS.name, "1d", scope, 0, 86400, "1970-01-01", p50, 3, False, p50, p90, p99, worst
    )


def quantile(registry: CollectorRegistry, q: str, scope: str) -> float | None:
    return registry.get_sample_value(
        QUANTILE_METRIC, {"quantile": q, "window": "1d", "queue": scope}
    )


def test_every_duration_kpi_and_only_those_has_a_quantile_family() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    names = {f.name for f in registry.collect()}
    durations = {
        "invoice_processing_time",
        "time_to_hire",
        "incident_response_time",
        "incident_resolution_time",
        "ticket_resolution_time",
    }
    assert set(metrics.quantiles) == durations
    for kpi in CATALOG:
        assert (f"backoffice_{kpi.name}_quantile_seconds" in names) == (kpi.name in durations)
    # The SLA attainments are KPI gauges like the others.
    assert {
        "backoffice_ticket_sla_attainment_ratio",
        "backoffice_incident_sla_attainment_ratio",
    } <= names


async def test_quantile_gauges_follow_the_newest_window_and_go_with_the_kpi() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(Metrics(registry))
    await sink.write(SinkBatch(current=[tickets("desk", 60.0, 3600.0, 7200.5)]))
    assert [quantile(registry, q, "desk") for q in ("0.5", "0.9", "0.99")] == [60.0, 3600.0, 7200.5]
    series = _kpi_samples(registry, QUANTILE_METRIC)
    assert all(set(s) == {"quantile", "window", "queue"} for s in series) and len(series) == 3
    # A window without durations: no percentile samples (like an undefined value).
    await sink.write(SinkBatch(current=[tickets("desk", None, None, None)]))
    assert _kpi_samples(registry, QUANTILE_METRIC) == []
    assert sample(registry, TICKETS.metric, "desk", "queue") is None
    await sink.write(
        SinkBatch(current=[tickets("desk", 1.0, 2.0, 3.0), tickets("all", 1.0, 2.0, 3.0)])
    )
    assert len(_kpi_samples(registry, QUANTILE_METRIC)) == 6
    # No longer led: every percentile series goes with the KPI's own.
    await sink.write(SinkBatch(retired=frozenset({TICKETS.name})))
    assert _kpi_samples(registry, QUANTILE_METRIC) == []
    assert _kpi_samples(registry, TICKETS.metric) == []
