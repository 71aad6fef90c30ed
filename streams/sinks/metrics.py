"""Prometheus metrics, declared in one place, on a registry passed in (SPEC section 4).

The KPI gauges are declared here and set by the Prometheus sink
(``streams/sinks/prometheus.py``); the counters, histograms and the other gauges are
observed by the plumbing that knows their values.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from streams.catalog import CATALOG
from streams.core.records import BatchResult
from streams.kpis.base import Kpi

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BatchHistogram(Collector):
    """A histogram observed a batch at a time (one lock and one bisect per value).

    ``prometheus_client.Histogram.observe`` takes a lock and walks the buckets per value,
    which at tens of thousands of events per second is a few percent of the worker. The
    exposition is the same as the library's: ``_bucket`` (cumulative, ``le``), ``_sum``,
    ``_count``.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [float(b) for b in buckets]
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Observe every value (``le`` is inclusive: a value equal to a bound counts in it)."""
        bounds = self.bounds
        counts = [0] * len(self._counts)
        total = 0.0
        find = bisect.bisect_left
        for v in values:
            counts[find(bounds, v)] += 1
            total += v
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histogram family (called by the registry on every scrape)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip([*self.bounds, float("inf")], counts, strict=True):
            running += n
            cumulative.append((_le(bound), running))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], cumulative, total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        """The family without samples, so registering checks names without collecting."""
        yield HistogramMetricFamily(self.name, self.documentation)


#: The ``quantile`` label values of the duration KPIs' percentile gauges, in the order of
#: ``WindowValue.p50``, ``p90``, ``p99``.
QUANTILES: tuple[str, ...] = ("0.5", "0.9", "0.99")


def quantile_metric(kpi: Kpi) -> str:
    """The percentile gauge family of a duration KPI (SPEC section 4)."""
    return f"backoffice_{kpi.name}_quantile_seconds"


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class Metrics:
    """Every metric the worker exposes."""

    def __init__(self, registry: CollectorRegistry, catalog: Sequence[Kpi] = CATALOG) -> None:
        self.registry = registry
        self.kpi: dict[str, Gauge] = {
            k.name: Gauge(
                k.metric,
                f"{k.title} ({k.unit}), newest window. {k.description}",
                ["window", k.dimension],
                registry=registry,
            )
            for k in catalog
        }
        #: The duration KPIs' percentiles (``Kpi.distribution``), newest window only.
        self.quantiles: dict[str, Gauge] = {
            k.name: Gauge(
                quantile_metric(k),
                f"{k.title}: percentiles (quantile 0.5, 0.9, 0.99) of the durations of the "
                "newest window, within 1% relative error.",
                ["quantile", "window", k.dimension],
                registry=registry,
            )
            for k in catalog
            if k.distribution
        }
        self.target = Gauge(
            "backoffice_kpi_target",
            "Target (SMART goal) of each KPI, per window.",
            ["kpi", "window"],
            registry=registry,
        )
        self.target_direction = Gauge(
            "backoffice_kpi_target_direction",
            "1 when the KPI should stay at or above its target, -1 when at or below.",
            ["kpi"],
            registry=registry,
        )
        for k in catalog:
            for w in k.windows:
                self.target.labels(k.name, w).set(k.target.value)
            self.target_direction.labels(k.name).set(1 if k.target.direction == "at_least" else -1)
        #: Scopes with a target of their own (``KPI_TARGETS_FILE``): a family apart, so that
        #: ``backoffice_kpi_target`` keeps one series per KPI and window (the alert rules join
        #: on it one-to-one), and registered only when some scope has one (without a targets
        #: file /metrics stays as it was).
        self.scope_target: Gauge | None = None
        if any(k.target.scopes for k in catalog):
            self.scope_target = Gauge(
                "backoffice_kpi_scope_target",
                "Target of a KPI for one scope (dimension value) with a target of its own "
                "(KPI_TARGETS_FILE), per window; other scopes have backoffice_kpi_target.",
                ["kpi", "window", "scope"],
                registry=registry,
            )
            for k in catalog:
                for scope, value in k.target.scopes:
                    for w in k.windows:
                        self.scope_target.labels(k.name, w, scope).set(value)
        self.events_in = Counter(
            "backoffice_events_in_total",
            "Input messages received, by topic and event type (invalid ones as 'invalid').",
            ["topic", "type"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "backoffice_dead_letters_total",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "backoffice_duplicates_total",
            "Redelivered events dropped because their event_id was already applied.",
            ["topic"],
            registry=registry,
        )
        self.watermark = Gauge(
            "backoffice_watermark_seconds",
            "Largest occurred_at applied so far, per input partition (Unix seconds).",
            ["topic", "partition"],
            registry=registry,
        )
        self.closed_windows = Counter(
            "backoffice_windows_closed_total",
            "Windows closed and written to history.",
            ["kpi", "window"],
            registry=registry,
        )
        self.latency = BatchHistogram(
            "backoffice_event_to_kpi_latency_seconds",
            "From the input message's Kafka timestamp to its effect being written to Redis.",
            LATENCY_BUCKETS,
            registry,
        )
        self.redis_errors = Counter(
            "backoffice_redis_write_errors_total",
            "Failed Redis write attempts (the batch is retried until it succeeds).",
            registry=registry,
        )
        self.redis_data_lost = Counter(
            "backoffice_redis_data_lost_total",
            "Times the worker found Redis empty of its keys (restarted without persistence, "
            "or flushed) and wrote the catalog, the newest windows and the progress again.",
            registry=registry,
        )
        self.redis_up = Gauge(
            "backoffice_redis_up",
            "1 when the last Redis write succeeded, 0 while Redis is unreachable.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "backoffice_consumer_lag_messages",
            "Input messages waiting (high-water mark minus the next offset to process), per "
            "input partition this worker owns.",
            ["topic", "partition"],
            registry=registry,
        )
        self.stalled = Gauge(
            "backoffice_stalled",
            "1 while the worker is stalled (work waiting, no input batch completed for "
            "KPI_STALL_SECONDS: the stall watchdog's verdict, as /health and /livez say it), "
            "else 0.",
            registry=registry,
        )
        self.batch_size = Histogram(
            "backoffice_batch_messages",
            "Messages per processed batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=registry,
        )

    def observe_batch(
        self, result: BatchResult, n_messages: int, topic_names: dict[str, str]
    ) -> None:
        """Count one processed batch (``topic_names`` maps logical to real topic names)."""
        self.batch_size.observe(n_messages)
        for (topic, event_type), n in result.applied.items():
            self.events_in.labels(topic_names[topic], event_type).inc(n)
        for dl in result.dead_letters:
            self.dead_letters.labels(dl.reason).inc()
            self.events_in.labels(topic_names[dl.topic], "invalid").inc()
        for topic, n in result.duplicates.items():
            self.duplicates.labels(topic_names[topic]).inc(n)
        for wv in result.closed:
            self.closed_windows.labels(wv.kpi, wv.window).inc()

    def observe_latencies(self, seconds: Iterable[float]) -> None:
        """Event-to-KPI latencies of one batch (negative ones, from clock skew, count as 0)."""
        self.latency.observe_many(s if s > 0.0 else 0.0 for s in seconds)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Remove the per-partition series of an input partition this worker lost."""
        for gauge in (self.consumer_lag, self.watermark):
            try:
                gauge.remove(topic, str(partition))
            except KeyError:
                pass


def register_process_metrics(
    registry: CollectorRegistry, *, version: str, python: str, engine: str
) -> Gauge:
    """The process's own families on ``registry``, and ``backoffice_build_info``.

    prometheus_client puts its process (``process_*``: RSS, CPU, open files), platform
    (``python_info``) and GC (``python_gc_*``) collectors on its global registry only; the
    worker exposes a registry of its own, so they are registered here again. Returns the
    build info gauge (1, labelled with the package version, the Python version and the
    engine: ``compiled`` or ``python``).
    """
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    build = Gauge(
        "backoffice_build_info",
        "Always 1: the worker's package version, Python version and engine build "
        "(compiled with mypyc, or python) as labels.",
        ["version", "python", "engine"],
        registry=registry,
    )
    build.labels(version, python, engine).set(1)
    return build
