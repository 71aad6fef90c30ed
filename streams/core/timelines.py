"""Status timelines: the ``timeline`` KPIs (system uptime), kept per scope instead of panes.

A timeline keeps the service's status events in event-time order (ties by arrival) and
the state at its horizon, before which older events were folded away. The machine is
up -> ``down`` -> down -> ``up`` -> up; a repeated status changes nothing. Before its first
status event a service is up.
"""

from __future__ import annotations

import bisect
from typing import Any

from streams.core import keys
from streams.core.state import Partitions, PartitionState
from streams.core.windows import Window
from streams.kpis.base import ROLLUP, Kpi

#: Timeline events this much older than the windows closed and written are folded into the
#: timeline's horizon state: the longest window (a fiscal year, at most 366 days) plus a day.
TIMELINE_RETENTION_S = 367 * 86400

# A timeline is stored as JSON in the partition state:
#   {"first": t of the first status event,
#    "h": horizon t (events before it are folded), "hd": down-since at the horizon or None,
#    "ev": [[t, arrival, is_down (0/1)], ...] sorted: ties in event time keep arrival order}
Timeline = dict[str, Any]


def new_timeline(t: float) -> Timeline:
    """An empty timeline for a service whose first status event is at ``t``."""
    return {"first": t, "h": None, "hd": None, "ev": []}


def insert(timeline: Timeline, t: float, is_down: bool, arrival: int) -> None:
    """Add one status event in event-time order (ties keep arrival order)."""
    if t < timeline["first"]:
        timeline["first"] = t
    bisect.insort(timeline["ev"], [t, arrival, 1 if is_down else 0])


def _down_since_at(timeline: Timeline, t: float) -> float | None:
    """Replay up to (excluding) time ``t``: when the service went down, or None if up."""
    down_since: float | None = timeline["hd"]
    for et, _arrival, d in timeline["ev"]:
        if et >= t:
            break
        if d and down_since is None:
            down_since = et
        elif not d and down_since is not None:
            down_since = None
    return down_since


def downtime(timeline: Timeline, start: float, end: float, cut: float) -> float:
    """Seconds the service was down within ``[start, end)``, counting only up to ``cut``.

    ``cut`` is ``end`` for a closed window; for the newest window it is the watermark, so an
    outage still open counts up to the watermark.
    """
    cut = min(cut, end)
    if cut <= start:
        return 0.0
    down_since = _down_since_at(timeline, start)
    if down_since is not None:
        down_since = start
    total = 0.0
    events = timeline["ev"]
    i = bisect.bisect_left(events, [start])
    while i < len(events):
        et, _arrival, d = events[i]
        if et >= cut:
            break
        if d and down_since is None:
            down_since = et
        elif not d and down_since is not None:
            total += et - down_since
            down_since = None
        i += 1
    if down_since is not None:
        total += cut - down_since
    return total


def events_between(timeline: Timeline, start: float, end: float) -> int:
    """How many status events lie in ``[start, end)``."""
    events = timeline["ev"]
    return bisect.bisect_left(events, [end]) - bisect.bisect_left(events, [start])


def fold_before(timeline: Timeline, t: float) -> bool:
    """Fold events before ``t`` into the horizon state; True when anything changed."""
    events = timeline["ev"]
    cut = bisect.bisect_left(events, [t])
    if cut == 0:
        return False
    timeline["hd"] = _down_since_at(timeline, t)
    timeline["h"] = t
    del events[:cut]
    return True


class Timelines:
    """The timelines of every scope, per topic: where they are, recording and reading them."""

    def __init__(self, partitions: Partitions) -> None:
        self.partitions = partitions
        #: topic -> scope -> the partition whose state holds the scope's timeline.
        self.scopes: dict[str, dict[str, int]] = {}

    def index(self, topic: str, partition: int, key: str, value: Any) -> None:
        """Keep the index in step with one timeline key (``value`` None: gone)."""
        scope = keys.timeline_service(key)
        of_topic = self.scopes.setdefault(topic, {})
        if value is not None:
            of_topic[scope] = partition
        elif of_topic.get(scope) == partition:
            del of_topic[scope]

    def record(self, st: PartitionState, scope: str, t: float, is_down: bool, arrival: int) -> None:
        """Add one status event to the scope's timeline (created by its first event)."""
        key = keys.timeline(scope)
        tl = st.get(key)
        if tl is None:
            tl = new_timeline(t)
            st.put(key, tl)
            self.scopes.setdefault(st.topic, {})[scope] = st.partition
        else:
            tl = st.edit(key)
        insert(tl, t, is_down, arrival)

    def _timeline(self, topic: str, partition: int, scope: str) -> Timeline:
        st = self.partitions.view(topic, partition)
        assert st is not None, (topic, partition, scope)
        tl: Timeline = st.data[keys.timeline(scope)]
        return tl

    def first(self, topic: str, scope: str) -> float:
        """Time of the scope's first status event."""
        first: float = self._timeline(topic, self.scopes[topic][scope], scope)["first"]
        return first

    def sorted_scopes(self, topic: str) -> list[str]:
        """Every scope with a timeline, sorted."""
        return sorted(self.scopes.get(topic, {}))

    def value(
        self, kpi: Kpi, spec: Window, scope: str, end: int, cut: float
    ) -> tuple[float | None, int]:
        """The value and status-event count of the window ending at ``end``, up to ``cut``.

        Per scope the fraction of the window it was up; the roll-up is their mean over the
        scopes that sent a status event before the window end.
        """
        start = spec.start_of(end)
        length = end - start
        of_topic = self.scopes.get(kpi.topic, {})
        wanted = of_topic if scope == ROLLUP else {scope: of_topic.get(scope)}
        value_sum = 0.0
        services = 0
        count = 0
        for service, p in sorted(wanted.items()):
            if p is None:
                continue
            tl = self._timeline(kpi.topic, p, service)
            if tl["first"] >= end:
                continue
            down = downtime(tl, start, end, cut)
            value_sum += 1.0 - down / length
            services += 1
            count += events_between(tl, start, end)
        if not services:
            return None, count
        return kpi.read((value_sum, float(services), float(count)), 0.0, 0.0, spec.days(end)), count

    def prune(self, topic: str, upto: float) -> None:
        """Fold what our own timelines hold from before the retention horizon."""
        horizon = upto - TIMELINE_RETENTION_S
        for scope, p in self.scopes.get(topic, {}).items():
            st = self.partitions.own.get((topic, p))
            if st is None:
                continue
            key = keys.timeline(scope)
            tl = st.data[key]
            if tl["ev"] and tl["ev"][0][0] < horizon:
                fold_before(st.edit(key), horizon)
