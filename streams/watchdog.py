"""Stall watchdog: what the worker is waiting for, said once when a stall outlasts the limit.

A worker whose work waits (a rebalance not finished, assigned partitions not restored, input
not processed) with no batch of input completed for ``KPI_STALL_SECONDS`` is stalled
(``Runtime.stall``). The health endpoint reports it (an orchestrator restarts the pod); the
log says it once per stall, with each loop's current step and since when, aiokafka's fetch
state per partition and where every pending asyncio task is suspended, so a stall a future
bug brings back is diagnosed from one log line instead of a debugger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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
