"""The checkpoint: the one owner of the order in which a batch's effects become durable.

Per batch, in order (docs/ARCHITECTURE.md, "Exactness after a crash"):

1. dead letters, sent and awaited;
2. the sinks (Redis, then Prometheus), each retried inside until it succeeds;
3. the state changelog records, awaited;
4. the closing progress: only now, so a worker resuming from it finds every window up to
   it closed in the state it restores;
5. the input offsets, committed through the consumer side.

A step that raises leaves every later step undone, and above all the offsets uncommitted:
the batch is replayed, exactly, by whoever restores the partitions next. Batches are
written one at a time, in processing order, in the background while the next batch is
fetched and processed (``submit``); a failed write stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition
from mode import Service

from streams.core.records import DeadLetter
from streams.core.state import ChangelogRecord
from streams.sinks.base import Sink, SinkBatch
from streams.sinks.metrics import Metrics
from streams.watchdog import Steps

log = logging.getLogger(__name__)

#: Changelog records per (input topic, partition), as ``Engine.commit`` returns them.
Changelog = Sequence[tuple[str, int, list[ChangelogRecord]]]


class DeadLetterSender(Protocol):
    """Step 1 (``streams/dead_letters.py``)."""

    async def send(self, dead_letters: Sequence[DeadLetter]) -> None:
        """Send the batch's dead letters; return once every one is acknowledged."""


class ChangelogSender(Protocol):
    """Step 3 (``streams/changelog.py``)."""

    async def send(self, changelog: Changelog) -> None:
        """Send the batch's changelog records; return once every one is acknowledged."""


class ProgressWriter(Protocol):
    """Step 4 (``streams/progress.py``)."""

    async def write(self, progress: Mapping[str, float]) -> None:
        """Record the closing progress of the topics led (skipping an unchanged one)."""


class OffsetCommitter(Protocol):
    """Step 5: provided by the consumer side (``streams/consumer.py``)."""

    async def commit(self, processed: Mapping[TopicPartition, int]) -> None:
        """The batch that processed up to these offsets is durable: commit them (and any due)."""


@dataclass(frozen=True, slots=True)
class Commit:
    """What one processed batch makes durable, taken from the engine right after processing."""

    dead_letters: Sequence[DeadLetter] = ()
    sinks: SinkBatch = field(default_factory=SinkBatch)
    changelog: Changelog = ()
    progress: Mapping[str, float] = field(default_factory=dict)
    #: Input partition -> the last offset the batch processed.
    offsets: Mapping[TopicPartition, int] = field(default_factory=dict)
    #: Kafka timestamps (ms) of the batch's input messages, for the event-to-KPI latency.
    timestamps: Sequence[int] = ()


@dataclass(slots=True)
class WriteStats:
    """What the checkpoint has made durable so far (health and stall reports read it)."""

    #: Input messages of the batches written.
    events: int = 0
    #: When the last batch was written (Unix seconds; 0 before the first).
    last_batch_at: float = 0.0
    #: When the last batch with input was written, or the checkpoint was made: a restore or
    #: a tick is no input progress (a group that rebalances for good restores again and
    #: again).
    last_input_at: float = field(default_factory=time.time)


class Checkpoint(Service):
    """Writes each batch's effects in the order exactness needs, one batch at a time."""

    def __init__(
        self,
        *,
        dead_letters: DeadLetterSender,
        sinks: Sequence[Sink],
        changelog: ChangelogSender,
        progress: ProgressWriter,
        offsets: OffsetCommitter,
        metrics: Metrics,
        steps: Steps,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._dead_letters = dead_letters
        self._sinks = tuple(sinks)
        self._changelog = changelog
        self._progress = progress
        self._offsets = offsets
        self._metrics = metrics
        self._steps = steps
        self._clock = clock
        self.stats = WriteStats(last_input_at=clock())
        # The writes of the last submitted batch, while they run.
        self._writing: asyncio.Future[None] | None = None

    async def on_start(self) -> None:
        """Start the sinks."""
        for sink in self._sinks:
            await sink.start()

    async def on_stop(self) -> None:
        """Close the sinks (the input consumer drained the writes before)."""
        for sink in self._sinks:
            await sink.close()

    async def submit(self, commit: Commit) -> None:
        """Wait for the previous batch's writes, then start this one's in the background."""
        await self.drain()
        self._writing = asyncio.ensure_future(self.write(commit))
        self._writing.add_done_callback(self._written)

    async def drain(self) -> None:
        """Wait until every submitted batch is written; raise if its writes failed."""
        task, self._writing = self._writing, None
        if task is not None:
            await task

    def _written(self, task: asyncio.Future[None]) -> None:
        # Raised again by the next drain; reported now, so a worker that failed to write
        # stops even when no further batch comes.
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("writing a batch failed: %r; stopping the worker", exc)
        asyncio.ensure_future(self.crash(exc or RuntimeError("write failed")))

    async def write(self, commit: Commit) -> None:
        """One batch's writes, in order (see the module docstring)."""
        steps = self._steps
        steps.at("writes", f"sending {len(commit.dead_letters)} dead letters")
        await self._dead_letters.send(commit.dead_letters)
        for sink in self._sinks:
            steps.at("writes", f"writing {sink.name}")
            await sink.write(commit.sinks)
        # The next batch may prune panes on the strength of this batch's closing, so this
        # batch must be durable first (see docs/ARCHITECTURE.md).
        steps.at("writes", f"sending the changelog of {len(commit.changelog)} partitions")
        await self._changelog.send(commit.changelog)
        # Lagging behind the history is harmless: windows after it are closed again,
        # byte-identically.
        if commit.progress:
            steps.at("writes", "writing the closing progress")
            await self._progress.write(commit.progress)
        now = self._clock()
        self._metrics.observe_latencies(
            [(now * 1000.0 - ts) / 1000.0 for ts in commit.timestamps if ts > 0]
        )
        stats = self.stats
        stats.events += len(commit.timestamps)
        stats.last_batch_at = now
        if commit.offsets:
            stats.last_input_at = now
        steps.at("writes", "committing input offsets")
        await self._offsets.commit(commit.offsets)
        steps.at("writes", "idle")
