"""The Prometheus sink: the KPI gauges hold the newest window of every KPI this worker leads.

The gauges are declared with the other metrics (``streams/sinks/metrics.py``), so they are
exposed on every scrape, not only on change; this sink sets them from each batch's newest
values. An undefined value has no sample, and the series of KPIs the worker stopped leading
are removed (their new leader exports them).
"""

from __future__ import annotations

from collections import defaultdict

from streams.sinks.base import SinkBatch
from streams.sinks.metrics import Metrics


class PrometheusSink:
    """Sets the KPI gauges from each batch's newest values (a ``Sink``)."""

    name = "Prometheus"

    def __init__(self, metrics: Metrics) -> None:
        self._gauges = metrics.kpi
        # KPI -> the (window, scope) series set for it (or set and since removed: removing
        # a missing series again is harmless).
        self._series: dict[str, set[tuple[str, str]]] = defaultdict(set)

    async def start(self) -> None:
        """Nothing to set up: the gauges exist from the start."""

    async def write(self, batch: SinkBatch) -> None:
        """Forget the KPIs no longer led, then set the gauges of the batch's newest windows."""
        for kpi in batch.retired:
            gauge = self._gauges[kpi]
            for labels in self._series.pop(kpi, ()):
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass
        for wv in batch.current:
            gauge = self._gauges[wv.kpi]
            if wv.value is None:
                try:
                    gauge.remove(wv.window, wv.scope)
                except KeyError:
                    pass
            else:
                gauge.labels(wv.window, wv.scope).set(wv.value)
                self._series[wv.kpi].add((wv.window, wv.scope))

    async def close(self) -> None:
        """Nothing to release: the registry is served until the process ends."""
