"""``/livez`` and ``/readyz``: what a Kubernetes probe asks of the worker, judged from plain values.

Liveness restarts a pod; readiness only takes it out of a Service. So ``/livez`` fails only
on what a restart cures: the event loop no longer running the worker's timers, or the input
stalled (``streams/watchdog.py``) for no reason outside the process. A stall while Redis or
Kafka is unreachable is the worker waiting the outage out (it retries, commits nothing, and
loses nothing): a restart would only add a restore to the outage. ``/readyz`` says whether
the worker's numbers are current: its partitions restored, its backlog within
``KPI_READY_MAX_LAG``, Redis and Kafka answering now.

The judging functions take values, not the worker, so every rule is testable without one;
``streams/app.py`` gathers the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Check:
    """One named check of a probe: passed or not, and a line saying why."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """A probe's checks; it passes when every check does."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(c.ok for c in self.checks)

    @property
    def status(self) -> int:
        """The HTTP status of the probe's answer: 200 or 503."""
        return 200 if self.ok else 503

    def body(self) -> dict[str, Any]:
        """The JSON answer: ``status``, the ``failed`` checks' names, and every check."""
        return {
            "status": "ok" if self.ok else "failed",
            "failed": [c.name for c in self.checks if not c.ok],
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
        }


def liveness(
    *,
    heartbeat_age_s: float,
    heartbeat_max_s: float,
    stall: str | None,
    redis_healthy: bool,
    kafka_error: str | None,
) -> Verdict:
    """``/livez``: the event loop runs the worker's timers, and the input is not stalled.

    ``heartbeat_age_s``: seconds since the worker's 1 s heartbeat timer last ran (a loop
    blocked, or the timer gone, makes it grow). ``stall``: the watchdog's verdict (None when
    the input makes progress or has nothing to do). ``redis_healthy``: whether the last
    Redis call succeeded; ``kafka_error``: why the broker did not answer the last request,
    None if it did. A stall during either outage passes, saying so.
    """
    beat = Check(
        "event_loop",
        heartbeat_age_s <= heartbeat_max_s,
        f"the heartbeat timer last ran {heartbeat_age_s:.1f} s ago (limit {heartbeat_max_s:g} s)",
    )
    if stall is None:
        progress = Check("progress", True, "input processed, or nothing waiting")
    else:
        outages = [
            what
            for what, down in (("Redis", not redis_healthy), ("Kafka", kafka_error is not None))
            if down
        ]
        if outages:
            detail = f"{stall}; waiting out the {' and '.join(outages)} outage"
            progress = Check("progress", True, detail)
        else:
            progress = Check("progress", False, stall)
    return Verdict((beat, progress))


def readiness(
    *,
    rejoining: bool,
    unrestored: int,
    lag: int,
    max_lag: int,
    redis_error: str | None,
    kafka_error: str | None,
) -> Verdict:
    """``/readyz``: partitions assigned and restored, caught up, Redis and Kafka answering.

    ``rejoining``: a rebalance is under way (or the first assignment has not come);
    ``unrestored``: assigned partitions whose state is not restored yet; ``lag``: input
    messages waiting in the restored ones; ``redis_error`` / ``kafka_error``: why a PING /
    a metadata request just failed, None when it was answered.
    """
    if rejoining:
        restored = Check("restored", False, "waiting for the consumer group to assign partitions")
    elif unrestored:
        restored = Check("restored", False, f"{unrestored} assigned partitions not restored yet")
    else:
        restored = Check("restored", True, "every assigned partition restored")
    caught_up = Check(
        "caught_up",
        lag <= max_lag,
        f"{lag} input messages waiting (limit {max_lag}, KPI_READY_MAX_LAG)",
    )
    redis = Check("redis", redis_error is None, redis_error or "answers PING")
    kafka = Check("kafka", kafka_error is None, kafka_error or "answers a metadata request")
    return Verdict((restored, caught_up, redis, kafka))
