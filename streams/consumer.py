"""The worker's Kafka edge: the input consumer (a faust service) and the output producer.

faust runs the worker: its service tree, signals, logging, web server and timers. The Kafka
traffic itself goes through aiokafka directly. faust's stream path costs ~110 CPU µs per
message here (its per-message ``Event``, ack tracking, queues and sensors; a do-nothing
agent tops out near 9,000 messages/s on this machine), which is most of the budget, and its
producer is not idempotent outside transactions. So the input is one aiokafka consumer in
the application's consumer group (``KPI_APP_ID``) handing whole fetches to
``Runtime.handle``, and the dead letters and changelog records go through one idempotent
producer. Offsets are committed after each batch's writes completed (``Runtime._write``);
a partition about to be revoked gets its offsets committed first, so its next owner starts
where this worker stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from mode import Service

from streams.config import Settings
from streams.kafka import make_input_consumer, make_output_producer
from streams.runtime import Runtime

log = logging.getLogger(__name__)

#: Most messages handed to the engine at once, and how long a fetch waits for more.
BATCH_MAX = 5000
FETCH_WAIT_MS = 100


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: InputConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.owner.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        self.owner.runtime.on_assigned(assigned)
        log.info("assigned %s", ", ".join(f"{tp.topic}-{tp.partition}" for tp in assigned))


class InputConsumer(Service):
    """Fetch, handle, commit; until the worker stops."""

    def __init__(self, settings: Settings, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.runtime = runtime
        # Created on start: aiokafka clients belong to the running loop.
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        # Input partition -> next offset already committed to the group.
        self._committed: dict[TopicPartition, int] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def on_start(self) -> None:
        """Start the clients, join the group and start fetching."""
        self.consumer = consumer = make_input_consumer(self.settings)
        self.producer = producer = make_output_producer(self.settings)
        await producer.start()
        await consumer.start()
        self.runtime.attach(consumer, producer)
        self.runtime.on_durable = self._commit
        self.runtime.on_failure = self._write_failed
        consumer.subscribe(list(self.settings.input_topics), listener=_Rebalance(self))
        self._loop_task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        """Finish and commit the batch in hand, leave the group, stop the clients."""
        # Leaving the group (consumer.stop) moves the partitions to the others at once.
        self._stopping = True
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), timeout=30.0)
            except (TimeoutError, asyncio.CancelledError):
                self._loop_task.cancel()
            except Exception:  # noqa: BLE001 - already logged by _run
                pass
        if self.consumer is not None:
            await self.runtime.drain()
            await self._commit()
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def _run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        try:
            while not self._stopping:
                batches = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=BATCH_MAX)
                # Partitions assigned with nothing new to read are restored all the same:
                # their topics' windows must close and their KPIs be led (issue 12).
                if batches or self.runtime.unrestored():
                    await self.runtime.handle(batches)
        except Exception as exc:  # noqa: BLE001 - the worker stops and says why
            # A worker that cannot process must not sit in the group holding partitions:
            # crash the service tree (the worker exits non-zero; a restart restores).
            await self.crash(exc)

    def _write_failed(self, exc: BaseException | None) -> None:
        log.error("writing a batch failed: %r; stopping the worker", exc)
        asyncio.ensure_future(self.crash(exc or RuntimeError("write failed")))

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what was written, then drop the state of the partitions leaving."""
        await self.runtime.on_revoked(revoked, commit=self._commit)
        for tp in revoked:
            self._committed.pop(tp, None)
        self.runtime.steps.at("rebalance", "revoked; rejoining")

    async def _commit(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        # Only between an assignment and the next revocation: a commit sent while the member
        # rejoins fails, and aiokafka then resets the member id in the middle of the join.
        assigned = self.runtime.assigned
        offsets = {
            tp: OffsetAndMetadata(offset + 1, "")
            for tp, offset in self.runtime.processed.items()
            if self._committed.get(tp, -1) < offset + 1 and tp in assigned
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # The group moved on (rebalance): the next owner replays from the last commit,
            # which the restored state makes exact.
            log.info("offset commit failed (%s); the next owner replays those messages", exc)
            return
        for tp, om in offsets.items():
            self._committed[tp] = om.offset
