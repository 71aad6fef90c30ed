"""What a sink is: something that takes each batch's window values, in order.

The checkpoint (``streams/checkpoint.py``) hands every sink each batch after its dead
letters are sent and before its state is committed, one batch at a time and in processing
order. A sink's write is retried inside it until it succeeds (the batch's input offsets are
committed only afterwards) or raises, which stops the worker. A new sink is one module
implementing ``Sink`` plus its line in ``streams/sinks/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streams.core.records import WindowValue


@dataclass(frozen=True, slots=True)
class SinkBatch:
    """What one batch gives the sinks."""

    #: Windows the batch closed (final values, written to history once each).
    closed: Sequence[WindowValue] = ()
    #: The newest window of every (KPI, window, scope) the batch changed.
    current: Sequence[WindowValue] = ()
    #: KPIs this worker stopped leading before the batch: their newest values are another
    #: worker's to publish from now on (a sink forgets them before taking ``current``).
    retired: frozenset[str] = field(default_factory=frozenset)


class Sink(Protocol):
    """A destination of the KPI values (Redis, Prometheus)."""

    #: What the stall report says is being written ("writing Redis").
    name: str

    async def start(self) -> None:
        """Set up (once, before the first write)."""

    async def write(self, batch: SinkBatch) -> None:
        """Take one batch; returns once it is written."""

    async def close(self) -> None:
        """Release what ``start`` acquired (once, after the last write)."""
