"""Stall watchdog: what the worker is waiting for, said once when a stall outlasts the limit.

A worker whose work waits (a rebalance not finished, assigned partitions not restored, input
not processed) with no batch of input completed for ``KPI_STALL_SECONDS`` is stalled
(``Watchdog.stall``). The health endpoint reports it (an orchestrator restarts the pod); the
log says it once per stall, with each loop's current step and since when, aiokafka's fetch
state per partition and where every pending asyncio task is suspended, so a stall a future
bug brings back is diagnosed from one log line instead of a debugger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)
_PACKAGE = __name__.split(".")[0]


@dataclass
class Steps:
    """The step each of the worker's loops is in, and since when (monotonic seconds)."""

    current: dict[str, tuple[str, float]] = field(default_factory=dict)

    def at(self, loop: str, step: str) -> None:
        """``loop`` (input, writes, replicas, tick, rebalance) is now doing ``step``."""
        self.current[loop] = (step, time.monotonic())

    def describe(self) -> str:
        """``input: restoring hiring-0 for 12 s; writes: idle for 30 s``."""
        now = time.monotonic()
        return "; ".join(
            f"{loop}: {step} for {now - since:.0f} s"
            for loop, (step, since) in sorted(self.current.items())
        )


def awaiting(coro: object) -> str:
    """Where a suspended coroutine waits: its frames in this package, then the innermost."""
    frames: list[tuple[str, str]] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        name = f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_name}"
        frames.append((code.co_filename, name))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    ours = [name for path, name in frames[:-1] if f"{_PACKAGE}/" in path]
    return " > ".join(ours + [name for _path, name in frames[-1:]])


def pending_tasks(limit: int = 12) -> str:
    """Where each pending task of the running loop waits (innermost frames), by name."""
    out = []
    for task in asyncio.all_tasks():
        if task.done() or task is asyncio.current_task():
            continue
        where = awaiting(task.get_coro())
        if where:
            out.append(f"{task.get_name()}: {where}")
    out.sort()
    more = f" (+{len(out) - limit} more)" if len(out) > limit else ""
    return "; ".join(out[:limit]) + more


def fetch_states(consumer: Any, tps: Iterable[Any]) -> str:
    """The aiokafka fetch state of each partition (position, reset, pause), for stall reports.

    Reads the consumer's private subscription state: diagnostics only, and every lookup
    is guarded, so an aiokafka that keeps it elsewhere gives ``?`` instead of an error.
    """
    try:
        assignment = consumer._subscription.subscription.assignment
    except AttributeError:
        return "?"
    out = []
    for tp in sorted(tps):
        try:
            st = assignment.state_value(tp)
            out.append(
                f"{tp.topic}-{tp.partition}: position {st._position}, "
                f"reset {st._reset_strategy}, paused {st.paused}, "
                f"highwater {consumer.highwater(tp)}"
            )
        except (AttributeError, KeyError, TypeError):
            out.append(f"{tp.topic}-{tp.partition}: ?")
    return "; ".join(out)


class Member(Protocol):
    """The consumer side, as the watchdog sees it (``streams.consumer.GroupMember``)."""

    @property
    def rejoining(self) -> bool:
        """Whether a rebalance is under way."""

    def lag_by_partition(self) -> dict[Any, int]:
        """Input messages waiting per assigned partition (restored ones)."""

    async def ask_end_offsets(self) -> None:
        """Refresh the partitions' end offsets from the broker (now and then)."""

    def fetch_states(self) -> str:
        """Aiokafka's fetch state of each assigned partition."""


class Work(Protocol):
    """The runtime, as the watchdog sees it (``streams.runtime.Runtime``)."""

    def unrestored(self) -> set[tuple[str, int]]:
        """Assigned partitions whose state is not restored yet."""

    def held(self) -> list[tuple[str, int]]:
        """The partitions whose state is held."""


class Watchdog:
    """Judges whether the worker is stalled, and logs a stall once with what every loop does."""

    def __init__(
        self,
        member: Member,
        work: Work,
        last_input_at: Callable[[], float],
        steps: Steps,
        stall_seconds: float,
        logical: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        on_verdict: Callable[[bool], None] | None = None,
    ) -> None:
        self._member = member
        # Told at every watch whether the worker is stalled (the backoffice_stalled gauge).
        self._on_verdict = on_verdict
        # When the heartbeat timer last ran (monotonic): /livez judges the event loop by it.
        self._beat_at = time.monotonic()
        # Real input topic name -> logical, for the report.
        self._logical = logical
        self._work = work
        self._last_input_at = last_input_at
        self._steps = steps
        self._stall_seconds = stall_seconds
        self._clock = clock
        # When the worker last had nothing to do: a stall is work waiting since both that
        # and its last input progress.
        self._settled_at = clock()
        # Whether the current stall was logged already (once per stall).
        self._logged = False

    def stall(self) -> str | None:
        """The stall, if any, as a health problem.

        Work waits (a rebalance not finished, assigned partitions not restored, input not
        processed) and the worker made no input progress for ``KPI_STALL_SECONDS``: none
        since the work began to wait, that is, since it last had nothing to do.
        """
        now = self._clock()
        rejoining = self._member.rejoining
        unrestored = self._work.unrestored()
        waiting = sum(self._member.lag_by_partition().values())
        if not (rejoining or unrestored or waiting):
            self._settled_at = now
            return None
        since = now - max(self._settled_at, self._last_input_at())
        if since <= self._stall_seconds:
            return None
        if rejoining:
            what = "waiting for the group to assign partitions"
        elif unrestored:
            what = f"{len(unrestored)} assigned partitions not restored"
        else:
            what = f"{waiting} messages waiting"
        return f"stalled: {what}, no batch completed for {since:.0f} s"

    def beat(self) -> None:
        """The worker's heartbeat timer ran (every second while the event loop runs it)."""
        self._beat_at = time.monotonic()

    def heartbeat_age(self) -> float:
        """Seconds since the heartbeat timer last ran."""
        return time.monotonic() - self._beat_at

    async def watch(self) -> None:
        """Log a stall once, with what every loop of the worker is waiting for.

        Diagnostics only: an error here is logged and never stops the worker.
        """
        try:
            await self._watch()
        except Exception:  # noqa: BLE001 - the watchdog must not take the worker down
            log.exception("stall watchdog failed")

    async def _watch(self) -> None:
        await self._member.ask_end_offsets()
        problem = self.stall()
        if self._on_verdict is not None:
            self._on_verdict(problem is not None)
        if problem is None:
            self._logged = False
            return
        if self._logged:
            return
        self._logged = True
        waiting = sorted(
            f"{self._logical.get(tp.topic, tp.topic)}-{tp.partition}"
            for tp, n in self._member.lag_by_partition().items()
            if n > 0
        )
        log.error(
            "%s; partitions waiting: %s; held: %s; %s; fetch states: %s; tasks: %s",
            problem,
            ", ".join(waiting) or "none",
            ", ".join(sorted(f"{t}-{p}" for t, p in self._work.held())),
            self._steps.describe(),
            self._member.fetch_states(),
            pending_tasks(),
        )
