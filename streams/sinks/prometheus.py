"""The Prometheus sink: the KPI gauges hold the newest window of every KPI this worker leads.

The gauges are declared with the other metrics (``streams/sinks/metrics.py``), so they are
exposed on every scrape, not only on change; this sink sets them from each batch's newest
values, and the duration KPIs' percentile gauges (``quantile`` 0.5, 0.9, 0.99) likewise. An
undefined value has no sample, and the series of KPIs the worker stopped leading are
removed (their new leader exports them).
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import Gauge

from streams.sinks.base import SinkBatch
from streams.sinks.metrics import QUANTILES, Metrics


class PrometheusSink:
    """Sets the KPI gauges from each batch's newest values (a ``Sink``)."""

    name = "Prometheus"

    def __init__(self, metrics: Metrics) -> None:
        self._gauges = metrics.kpi
        self._quantiles = metrics.quantiles
        # KPI -> the (window, scope) series set for it (or set and since removed: removing
        # a missing series again is harmless). A duration KPI's percentile series are the
        # same (window, scope) pairs, once per quantile.
        self._series: dict[str, set[tuple[str, str]]] = defaultdict(set)
        # (kpi, quantile, window, scope) -> the percentile series, as ``labels()`` gave it:
        # a duration KPI's value sets three of them, and ``labels()`` validates and looks
        # up its labels each time (a few µs).
        self._children: dict[tuple[str, str, str, str], Gauge] = {}

    async def start(self) -> None:
        """Nothing to set up: the gauges exist from the start."""

    async def write(self, batch: SinkBatch) -> None:
        """Forget the KPIs no longer led, then set the gauges of the batch's newest windows."""
        for kpi in batch.retired:
            gauge = self._gauges[kpi]
            quantiles = self._quantiles.get(kpi)
            for labels in self._series.pop(kpi, ()):
                _remove(gauge, *labels)
                if quantiles is not None:
                    for q in QUANTILES:
                        _remove(quantiles, q, *labels)
                        self._children.pop((kpi, q, *labels), None)
        for wv in batch.current:
            gauge = self._gauges[wv.kpi]
            if wv.value is None:
                _remove(gauge, wv.window, wv.scope)
            else:
                gauge.labels(wv.window, wv.scope).set(wv.value)
                self._series[wv.kpi].add((wv.window, wv.scope))
            quantiles = self._quantiles.get(wv.kpi)
            if quantiles is not None:
                children = self._children
                for q, seconds in zip(QUANTILES, (wv.p50, wv.p90, wv.p99), strict=True):
                    key = (wv.kpi, q, wv.window, wv.scope)
                    if seconds is None:
                        if children.pop(key, None) is not None:
                            _remove(quantiles, q, wv.window, wv.scope)
                        continue
                    child = children.get(key)
                    if child is None:
                        child = children[key] = quantiles.labels(q, wv.window, wv.scope)
                        self._series[wv.kpi].add((wv.window, wv.scope))
                    child.set(seconds)

    async def close(self) -> None:
        """Nothing to release: the registry is served until the process ends."""


def _remove(gauge: Gauge, *labels: str) -> None:
    """Remove a series; one that is not there (never set, or removed before) is fine."""
    try:
        gauge.remove(*labels)
    except KeyError:
        pass
