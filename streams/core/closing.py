"""Closing windows in event time, over all partitions of a topic, and reading the newest.

A topic's windows close when the frontier (the minimum watermark over its partitions, own
and replicas) minus the grace period passes their end. Only the topic's leader closes and
reads them; every worker prunes up to the closing progress the leaders wrote (and it was
told with ``set_progress``), so no pane is folded before its windows were written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from streams.core.distributions import Summary
from streams.core.panes import Panes
from streams.core.records import BatchResult, WindowValue
from streams.core.replicas import Replicas
from streams.core.state import NEG_INF, Partitions
from streams.core.timelines import Timelines
from streams.core.windows import Window
from streams.kpis.base import ROLLUP, Kpi


class TopicView:
    """Per topic: its KPIs and how far its windows are closed."""

    __slots__ = ("closed_upto", "kpis", "newest_anchor", "pruned_upto", "topic")

    def __init__(self, topic: str, kpis: tuple[Kpi, ...]) -> None:
        self.topic = topic
        self.kpis = kpis
        #: Windows ending at or before this were closed (and written) by an earlier batch;
        #: None until the next batch resumes it (see ``Closing.resume``).
        self.closed_upto: float | None = None
        #: The watermark the newest windows were last read at.
        self.newest_anchor = NEG_INF
        #: How far the topic's panes were pruned.
        self.pruned_upto = NEG_INF


class Closing:
    """Frontier, leadership, closing progress, and closing and reading a topic's windows."""

    def __init__(
        self,
        *,
        catalog: Iterable[Kpi],
        specs: dict[str, tuple[Window, ...]],
        partitions: Partitions,
        panes: Panes,
        timelines: Timelines,
        replicas: Replicas,
        grace_s: float,
        idle_partition_s: float,
        clock: Callable[[], float],
        last_input: dict[tuple[str, int], float],
    ) -> None:
        kpis = tuple(catalog)
        self.views = {
            topic: TopicView(topic, tuple(k for k in kpis if k.topic == topic))
            for topic in partitions.n_partitions
        }
        self.specs = specs
        self.partitions = partitions
        self.panes = panes
        self.timelines = timelines
        self.replicas = replicas
        self.grace_s = grace_s
        self.idle_partition_s = idle_partition_s
        self.clock = clock
        self._started_at = clock()
        self._last_input = last_input
        # Topics whose windows this engine closes and reads (None: every topic, until
        # ``lead`` is first called).
        self._leading: set[str] | None = None
        # Topics this engine started to lead after another worker had led them.
        self._taken_over: set[str] = set()
        # Per topic, how far windows have been closed *and written* (by whichever worker
        # leads the topic): the safe bound for pruning panes and a leader's starting point.
        self._progress: dict[str, float] = {}

    # -- leadership and progress -------------------------------------------------------

    def leads(self, topic: str) -> bool:
        """Whether this engine closes and reads the windows of ``topic``."""
        return self._leading is None or topic in self._leading

    def leading(self) -> frozenset[str]:
        """The topics this engine closes and reads."""
        return frozenset(self.views if self._leading is None else self._leading)

    def lead(self, topics: Iterable[str]) -> tuple[set[str], set[str]]:
        """Close and read the windows of exactly ``topics``; returns (started, stopped)."""
        now_leading = set(topics)
        before = self._leading if self._leading is not None else set()
        started = now_leading - before
        for topic in started:
            self.views[topic].closed_upto = None
            if self._leading is not None:
                self._taken_over.add(topic)
        self._leading = now_leading
        return started, before - now_leading

    def needs_progress(self) -> bool:
        """Whether the written closing progress is needed before the next batch."""
        return self._leading != set(self.views) or any(
            v.closed_upto is None for v in self.views.values()
        )

    def resuming(self) -> list[str]:
        """Topics whose closing point the next batch takes from the progress."""
        return [t for t, v in self.views.items() if v.closed_upto is None]

    def set_progress(self, progress: Mapping[str, float]) -> None:
        """The closing progress per topic, as its leaders last wrote it."""
        self._progress = dict(progress)
        # A topic taken over from a leader that never wrote its progress: nothing of it was
        # pruned (a leader prunes only windows whose progress it wrote before, others only
        # up to written progress), so every window still held can be closed, and must be:
        # its old leader may have died before closing any.
        for topic in self._taken_over:
            self._progress.setdefault(topic, NEG_INF)
        self._taken_over.clear()

    def progress(self) -> dict[str, float]:
        """The closing progress known to this engine (as last set)."""
        return dict(self._progress)

    def closing_progress(self) -> dict[str, float]:
        """Per topic led, how far windows are closed (written after the batch's commit).

        Also ``-inf`` (nothing closed yet): without a record, a leader resumes from the
        frontier its restored view shows, and after a failover that view can be ahead of
        what was closed (a replica that lagged), skipping windows never closed.
        """
        return {
            t: v.closed_upto
            for t, v in self.views.items()
            if self.leads(t) and v.closed_upto is not None
        }

    def reset(self, topic: str) -> None:
        """The topic's partitions changed: resume its closing point at the next batch."""
        self.views[topic].closed_upto = None

    def resume(self) -> dict[str, float | None]:
        """Set every unknown closing point; return how far each topic may be pruned.

        A leader resumes where windows were last written; without that record, from what
        the restored watermarks had closed (see docs/ARCHITECTURE.md). Panes may go once
        every window holding them was closed and written: by an earlier batch of ours when
        we lead the topic, else by its leader.
        """
        for view in self.views.values():
            if view.closed_upto is None:
                written = self._progress.get(view.topic)
                derived = self.frontier(view.topic) - self.grace_s
                view.closed_upto = written if written is not None else derived
        return {
            t: v.closed_upto if self.leads(t) else self._progress.get(t)
            for t, v in self.views.items()
        }

    # -- watermarks --------------------------------------------------------------------

    def frontier(self, topic: str) -> float:
        """Minimum watermark over all partitions of a topic (-inf if one has none).

        With ``idle_partition_s`` set, partitions that received nothing for that long (wall
        clock) are left out; when every partition is idle the topic's largest watermark
        counts, so a quiet topic still closes its windows.
        """
        now = self.clock() if self.idle_partition_s else 0.0
        lowest = math.inf
        for p in range(self.partitions.n_partitions[topic]):
            st = self.partitions.view(topic, p)
            if self.idle_partition_s:
                seen = self._last_input.get((topic, p), self._started_at)
                if now - seen > self.idle_partition_s:
                    continue
            wm = st.watermark if st is not None else NEG_INF
            lowest = min(lowest, wm)
        if lowest == math.inf:
            return self.max_watermark(topic)
        return lowest

    def max_watermark(self, topic: str) -> float:
        """Largest watermark among a topic's partitions (defines the newest window)."""
        return max((st.watermark for st in self.partitions.of_topic(topic)), default=NEG_INF)

    # -- closing and reading -----------------------------------------------------------

    def close_and_read(
        self,
        topic: str,
        result: BatchResult,
        touched: set[tuple[str, str]],
        timelines_touched: bool,
    ) -> None:
        """Close the windows the frontier passed; read the newest windows that changed."""
        view = self.views[topic]
        if not view.kpis or not self.replicas.complete(topic):
            return
        assert view.closed_upto is not None
        close_to = self.frontier(topic) - self.grace_s
        newest_wm = self.max_watermark(topic)
        if newest_wm == NEG_INF:
            return
        closed_from = view.closed_upto
        moved = close_to > closed_from
        for kpi in view.kpis:
            for spec in self.specs[kpi.name]:
                anchor_moved = spec.first_window_end_after(
                    newest_wm
                ) != spec.first_window_end_after(view.newest_anchor)
                if kpi.kind == "timeline":
                    self._close_timeline(kpi, spec, closed_from, close_to, result)
                    if timelines_touched or newest_wm != view.newest_anchor:
                        self._read_newest_timeline(kpi, spec, newest_wm, close_to, result)
                    continue
                if spec.first_window_end_after(closed_from) <= close_to:
                    self._close(kpi, spec, closed_from, close_to, result)
                _start, end = spec.newest_window(newest_wm)
                became_final = closed_from < end <= close_to
                for scope in sorted(self.panes.scopes[kpi.name]):
                    if anchor_moved or became_final or (kpi.name, scope) in touched:
                        result.current.append(self._read(kpi, spec, scope, end, end <= close_to))
        if moved:
            view.closed_upto = close_to
        view.newest_anchor = newest_wm

    def _close(
        self, kpi: Kpi, spec: Window, after: float, upto: float, result: BatchResult
    ) -> None:
        for scope in sorted(self.panes.scopes[kpi.name]):
            for end in self.panes.window_ends(kpi, spec, scope, after, upto):
                closed = self._read(kpi, spec, scope, end, True, closing=True)
                if closed.count > 0:
                    result.closed.append(closed)

    def _read(
        self, kpi: Kpi, spec: Window, scope: str, end: int, final: bool, *, closing: bool = False
    ) -> WindowValue:
        """The window ending at ``end`` of a KPI kept in panes, read from them.

        ``closing``: read for the last time, to be written to history.
        """
        value, count = self.panes.value(kpi, spec, scope, end)
        if not kpi.distribution:
            return _window_value(kpi, spec, scope, end, value, count, final)
        distribution = self.panes.distribution(kpi, spec, scope, end, closing=closing)
        return _window_value(kpi, spec, scope, end, value, count, final, distribution)

    def _close_timeline(
        self, kpi: Kpi, spec: Window, after: float, upto: float, result: BatchResult
    ) -> None:
        scopes = self.timelines.sorted_scopes(kpi.topic)
        if upto <= after or not scopes:
            return
        first_all = min(self.timelines.first(kpi.topic, s) for s in scopes)
        for end in spec.window_ends_between(max(after, first_all), upto):
            for scope in (ROLLUP, *scopes):
                if scope != ROLLUP and self.timelines.first(kpi.topic, scope) >= end:
                    continue
                value, count = self.timelines.value(kpi, spec, scope, end, end)
                if value is None:
                    continue
                result.closed.append(_window_value(kpi, spec, scope, end, value, count, True))

    def _read_newest_timeline(
        self, kpi: Kpi, spec: Window, newest_wm: float, close_to: float, result: BatchResult
    ) -> None:
        _start, end = spec.newest_window(newest_wm)
        for scope in (ROLLUP, *self.timelines.sorted_scopes(kpi.topic)):
            value, count = self.timelines.value(kpi, spec, scope, end, newest_wm)
            if value is None:
                continue
            result.current.append(
                _window_value(kpi, spec, scope, end, value, count, end <= close_to)
            )


def _window_value(
    kpi: Kpi,
    spec: Window,
    scope: str,
    end: int,
    value: float | None,
    count: int,
    final: bool,
    distribution: Summary | None = None,
) -> WindowValue:
    """The value of the window ending at ``end`` of a KPI and scope.

    ``distribution``: a duration KPI's percentiles and worst entities.
    """
    if distribution is None:
        return WindowValue(
            kpi.name,
            spec.name,
            scope,
            spec.start_of(end),
            end,
            spec.label(end),
            value,
            count,
            final,
        )
    p50, p90, p99, worst = distribution
    return WindowValue(
        kpi.name,
        spec.name,
        scope,
        spec.start_of(end),
        end,
        spec.label(end),
        value,
        count,
        final,
        p50,
        p90,
        p99,
        worst,
    )
