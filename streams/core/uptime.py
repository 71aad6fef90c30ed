"""Service status timelines: downtime of a service within a window, in event time.

A timeline keeps the service's status events in event-time order (ties by arrival) and
the state at its horizon, before which older events were folded away. The machine is
up -> ``down`` -> down -> ``up`` -> up; a repeated status changes nothing. Before its first
status event a service is up.
"""

from __future__ import annotations

import bisect
from typing import Any

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
