"""The replica follower: a leader's read-only copies of the partitions others own.

Only a topic's leader closes and reads its windows, so only it needs the other partitions'
panes: it follows their changelogs (a consumer outside any group) and applies them to
replicas in the engine (``Engine.replica_apply``). See docs/ARCHITECTURE.md, "Dataflow".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from streams.config import INPUT_TOPICS, Settings
from streams.core.engine import Engine
from streams.kafka import make_reader, seek_to_start
from streams.topics import changelog_topic
from streams.watchdog import Steps

log = logging.getLogger(__name__)


class ReplicaFollower(Service):
    """Follows the changelogs of the partitions others own of the topics this worker leads.

    A partition whose state we hold is not followed (our state is the authority, and
    reading our own writes back would cost as much as writing them); one that starts to be
    followed (revoked from us, never ours, or of a topic we start to lead) is read from its
    start, and until it has been read up to where its changelog ended then, the topic's
    windows are neither closed nor read (``Engine.follow``/``caught_up``): a compacted
    changelog may hold the first records of a commit behind a later one, so no earlier point
    is a whole view.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        lock: asyncio.Lock,
        steps: Steps,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._engine = engine
        # The batch lock: the engine changes under it only.
        self._lock = lock
        self._steps = steps
        self._names = {changelog_topic(settings, t): t for t in INPUT_TOPICS}
        # Changelog partitions to read again from their beginning.
        self._rewind: set[TopicPartition] = set()

    def rewind(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read these (topic, partition) again from their start when next followed.

        For partitions revoked from this worker: their changelog is someone else's now.
        """
        self._rewind.update(
            TopicPartition(changelog_topic(self._settings, t), p) for t, p in partitions
        )

    @Service.task
    async def _follow(self) -> None:
        """Follow for the life of the service."""
        engine, names, steps = self._engine, self._names, self._steps
        every = [
            TopicPartition(name, p)
            for name, t in names.items()
            for p in range(engine.n_partitions(t))
        ]
        consumer = make_reader(self._settings, pairs=True)
        await consumer.start()
        followed: set[TopicPartition] = set()
        # Partitions read from their start, and the end offset they must reach first.
        catching_up: dict[TopicPartition, int] = {}
        try:
            while not self.should_stop:
                try:
                    steps.at("replicas", "waiting for the batch lock")
                    async with self._lock:
                        wanted = {
                            tp
                            for tp in every
                            if engine.leads(names[tp.topic])
                            and (names[tp.topic], tp.partition) not in engine.states
                        }
                        rewind, self._rewind = self._rewind & wanted, set()
                        rewind |= wanted - followed
                        # Replicas no longer followed are dropped: stale, and memory.
                        for tp in rewind | (followed - wanted):
                            engine.drop_replica(names[tp.topic], tp.partition)
                            catching_up.pop(tp, None)
                        for tp in rewind:
                            engine.follow(names[tp.topic], tp.partition)
                    if wanted != followed:
                        steps.at("replicas", f"following {len(wanted)} changelog partitions")
                        # assign() forgets positions: keep those of the partitions that stay.
                        kept = {tp: await consumer.position(tp) for tp in followed & wanted}
                        consumer.assign(sorted(wanted))
                        for tp, position in kept.items():
                            consumer.seek(tp, position)
                        followed = wanted
                    if rewind:
                        steps.at("replicas", f"rewinding {len(rewind)} changelog partitions")
                        catching_up.update(await consumer.end_offsets(sorted(rewind)))
                        await seek_to_start(consumer, sorted(rewind))
                    if not followed:
                        steps.at("replicas", "idle")
                        await asyncio.sleep(0.5)
                        continue
                    steps.at("replicas", "fetching")
                    batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
                    if not batches and not catching_up:
                        continue
                    # Positions are asked before taking the lock (nothing that waits on Kafka
                    # runs under it); they include exactly the records applied below.
                    reached = [
                        tp for tp, end in catching_up.items() if await consumer.position(tp) >= end
                    ]
                    steps.at("replicas", "waiting for the batch lock to apply")
                    async with self._lock:
                        steps.at("replicas", "applying")
                        for tp, records in batches.items():
                            if tp not in followed:
                                continue
                            # (key, value) pairs: a ``pairs`` reader's records.
                            engine.replica_apply(names[tp.topic], tp.partition, records)
                        for tp in reached:
                            engine.caught_up(names[tp.topic], tp.partition)
                            del catching_up[tp]
                except KafkaError as exc:
                    # Read everything followed again from its start: whatever was
                    # fetched or sought when it failed is not trusted.
                    log.warning("following the changelogs failed (%r); starting over", exc)
                    async with self._lock:
                        for tp in followed:
                            engine.drop_replica(names[tp.topic], tp.partition)
                    followed = set()
                    catching_up.clear()
                    await asyncio.sleep(1.0)
        finally:
            await consumer.stop()
