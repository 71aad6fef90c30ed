"""The batch loop around the pure engine: restore what the group gives, lead, process, checkpoint.

One batch goes: restore any newly assigned partition (``streams/restore.py``) -> lead the
topics whose partition 0 is ours -> ``Engine.process`` -> hand what the batch must make
durable to the checkpoint (``streams/checkpoint.py``), which writes it in the background in
the order exactness needs and commits the input offsets last. A crash anywhere replays from
the committed offsets; the restored state knows the last input offset it reflects, skips
what it already holds and recomputes the rest bit-identically. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from aiokafka import TopicPartition

from streams.checkpoint import Checkpoint, Commit
from streams.config import INPUT_TOPICS, Settings
from streams.consumer import Fetched
from streams.core.engine import Engine
from streams.core.records import BatchResult, Message, WindowValue
from streams.follower import ReplicaFollower
from streams.progress import ProgressStore
from streams.restore import Restorer
from streams.sinks.base import SinkBatch
from streams.sinks.metrics import Metrics
from streams.watchdog import Steps

log = logging.getLogger(__name__)


class Assignment(Protocol):
    """The consumer side, as the runtime sees it (``streams.consumer.GroupMember``)."""

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        """The input partitions the group gave this worker."""

    def restored(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets that restored states reflect (durable already)."""

    async def commit(self, processed: dict[TopicPartition, int]) -> None:
        """Commit the durable offsets that are due."""

    def revoke(self, revoked: frozenset[TopicPartition]) -> None:
        """The group takes these partitions away."""


class Runtime:
    """Everything between the input consumer and the engine (a ``BatchHandler``)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        lock: asyncio.Lock,
        assignment: Assignment,
        restorer: Restorer,
        checkpoint: Checkpoint,
        progress: ProgressStore,
        replicas: ReplicaFollower,
        metrics: Metrics,
        steps: Steps,
    ) -> None:
        self.settings = settings
        self.engine = engine
        #: The batch lock: the engine changes under it only (batches, ticks, revocations,
        #: replicas).
        self.lock = lock
        self._assignment = assignment
        self._restorer = restorer
        self._checkpoint = checkpoint
        self._progress = progress
        self._replicas = replicas
        self._metrics = metrics
        self._steps = steps
        self.logical = {settings.topic(t): t for t in INPUT_TOPICS}
        self.real = {t: settings.topic(t) for t in INPUT_TOPICS}
        #: The newest window of every (KPI, window, scope) this worker publishes.
        self.current: dict[tuple[str, str, str], WindowValue] = {}
        # KPIs no longer led whose values the sinks still hold: forgotten with the next
        # batch's writes, in order after the batches written before.
        self._retired: set[str] = set()
        # When the last batch of input was processed (monotonic seconds): a tick right
        # after one would only repeat its closing and reading.
        self._processed_at = float("-inf")

    # -- the assignment ----------------------------------------------------------------

    def assigned_inputs(self) -> set[tuple[str, int]]:
        """The input partitions the consumer group gave this worker, by logical topic."""
        return {
            (self.logical[tp.topic], tp.partition)
            for tp in self._assignment.assigned
            if tp.topic in self.logical
        }

    def unrestored(self) -> set[tuple[str, int]]:
        """Assigned input partitions whose state is not restored yet."""
        return self.assigned_inputs() - self.engine.states.keys()

    def held(self) -> list[tuple[str, int]]:
        """The input partitions whose state this worker holds."""
        return self.engine.held()

    async def _restore(self, wanted: set[tuple[str, int]]) -> None:
        self._steps.at("input", "restoring " + ", ".join(f"{t}-{p}" for t, p in sorted(wanted)))
        states = await self._restorer.restore(sorted(wanted))
        for st in states:
            self.engine.assign(st)
        # What the restored state holds is durable: committed as processed, and the lag is
        # counted from it.
        self._assignment.restored(
            {TopicPartition(self.real[st.topic], st.partition): st.applied_offset for st in states}
        )

    async def revoke(self, revoked: frozenset[TopicPartition]) -> None:
        """Write and commit what was processed, then drop the partitions that move away.

        One hold of the batch lock, so no batch comes between the writes, the offset commit
        and the revocation: every batch processed before is committed, and one fetched
        before but handled after leaves the revoked partitions out.
        """
        steps = self._steps
        async with self.lock:
            steps.at("rebalance", "revoking: waiting for the writes")
            await self._checkpoint.drain()
            steps.at("rebalance", "revoking: committing offsets")
            await self._assignment.commit({})
            steps.at("rebalance", "revoking: dropping state")
            self._assignment.revoke(revoked)
            dropped = []
            for tp in revoked:
                topic = self.logical.get(tp.topic)
                if topic is not None and (topic, tp.partition) in self.engine.states:
                    self.engine.revoke(topic, tp.partition)
                    dropped.append((topic, tp.partition))
            # Their changelogs are someone else's now: read them again from the start.
            self._replicas.rewind(dropped)
            self._lead()
            if self._retired:
                # The sinks forget the KPIs of the topics no longer led now, not with the
                # next batch: their new leader exports them meanwhile.
                await self._checkpoint.submit(Commit(sinks=self._sink_batch()))
                await self._checkpoint.drain()

    def _lead(self) -> None:
        """Lead a topic (close and publish its windows) iff we own its partition 0.

        A topic we stop leading loses its KPI values here and in the sinks (its new leader
        publishes them); a topic we start leading resumes from the progress its last leader
        wrote to Redis.
        """
        assigned = self.assigned_inputs()
        now_leading = {t for t in INPUT_TOPICS if (t, 0) in assigned}
        started, stopped = self.engine.lead(now_leading)
        for topic in stopped:
            for kpi in self.engine.kpis_of(topic):
                self._retired.add(kpi.name)
                for key in [k for k in self.current if k[0] == kpi.name]:
                    del self.current[key]
        if started or stopped:
            log.info(
                "leading %s (was %s)",
                sorted(now_leading) or "no topic",
                sorted((now_leading - started) | stopped) or "none",
            )

    async def _refresh_progress(self) -> None:
        engine = self.engine
        if engine.needs_progress():
            engine.set_progress(await self._progress.read())
            fresh = engine.resuming()
            if fresh:
                log.info("resuming %s from written progress %s", fresh, engine.progress())

    # -- the batch ---------------------------------------------------------------------

    async def handle(self, fetched: Fetched) -> None:
        """Process one fetch (records per input partition); its writes follow in the background.

        Returns once the batch is processed and the previous batch's writes are complete:
        one batch's writes overlap the next batch's fetch and processing.
        """
        steps = self._steps
        steps.at("input", "waiting for the batch lock")
        async with self.lock:
            # Records of partitions revoked since the fetch are not ours to process: their
            # next owner reads them from the offsets committed on revocation.
            assigned = self._assignment.assigned
            if any(tp not in assigned for tp in fetched):
                fetched = {tp: recs for tp, recs in fetched.items() if tp in assigned}
            logical = self.logical
            messages = [
                Message(
                    logical[r.topic],
                    r.partition,
                    r.offset,
                    r.value if r.value is not None else b"",
                    r.key,
                )
                for records in fetched.values()
                for r in records
            ]
            missing = self.unrestored()
            if missing:
                await self._checkpoint.drain()
                await self._restore(missing)
            self._lead()
            steps.at("input", "reading the closing progress from Redis")
            await self._refresh_progress()
            steps.at("input", f"processing {len(messages)} messages")
            result = self.engine.process(messages)
            if messages:
                self._processed_at = time.monotonic()
            steps.at("input", "waiting for the previous batch's writes")
            await self._pass_on(result, fetched)
        steps.at("input", "fetching")

    async def tick(self, quiet_s: float = 0.0) -> None:
        """Close, read and prune without new input of our own.

        Other workers' progress arrives through the replicas, and idle partitions are left
        out by the wall clock, so windows can close while our partitions are quiet. Not
        when a batch of input was processed within ``quiet_s``: every batch closes, reads
        and prunes all the same (with the replicas' news and the clock), so a tick between
        two batches of a backlog would only repeat that work and hold up the writes.
        """
        steps = self._steps
        steps.at("tick", "waiting for the batch lock")
        async with self.lock:
            if time.monotonic() - self._processed_at < quiet_s:
                steps.at("tick", "idle")
                return
            await self._checkpoint.drain()
            if not self.engine.held():
                steps.at("tick", "idle")
                return
            self._lead()
            await self._refresh_progress()
            steps.at("tick", "closing windows")
            await self._pass_on(self.engine.process([]), {})
            await self._checkpoint.drain()
        steps.at("tick", "idle")

    async def drain(self) -> None:
        """Wait until every processed batch is written (dead letters, sinks, changelog)."""
        async with self.lock:
            await self._checkpoint.drain()

    def _sink_batch(self, result: BatchResult | None = None) -> SinkBatch:
        retired, self._retired = frozenset(self._retired), set()
        if result is None:
            return SinkBatch(retired=retired)
        return SinkBatch(result.closed, result.current, retired)

    async def _pass_on(self, result: BatchResult, fetched: Fetched) -> None:
        """Take what the writes need from the engine now, then start them after the last."""
        engine = self.engine
        n_messages = sum(len(records) for records in fetched.values())
        self._metrics.observe_batch(result, n_messages, self.real)
        for wv in result.current:
            self.current[(wv.kpi, wv.window, wv.scope)] = wv
        for (t, p), watermark in engine.watermarks().items():
            self._metrics.watermark.labels(self.real[t], str(p)).set(
                watermark if watermark != float("-inf") else 0
            )
        # The records are built now, before the next batch changes the state. Their meta
        # records carry the dead-letter position known before this batch's dead letters
        # are sent: a restore reads the dead-letter topic from there, a little earlier than
        # needed, and skips what is at or below the restored offset.
        commit = Commit(
            dead_letters=result.dead_letters,
            sinks=self._sink_batch(result),
            changelog=engine.commit(),
            progress=engine.closing_progress(),
            offsets={tp: records[-1].offset for tp, records in fetched.items() if records},
            timestamps=[r.timestamp for records in fetched.values() for r in records],
        )
        await self._checkpoint.submit(commit)
