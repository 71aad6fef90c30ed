"""The worker's input: its membership of the consumer group, and the fetch loop.

faust runs the worker: its service tree, signals, logging, web server and timers. The Kafka
traffic itself goes through aiokafka directly. faust's stream path costs ~110 CPU µs per
message here (its per-message ``Event``, ack tracking, queues and sensors; a do-nothing
agent tops out near 9,000 messages/s on this machine), which is most of the budget. So the
input is one aiokafka consumer in the application's consumer group (``KPI_APP_ID``):

- ``GroupMember`` owns that consumer, the partitions the group gave this worker and their
  offsets: what is durable (restored, or written by the checkpoint) and what is committed.
  The checkpoint commits through it once a batch's writes completed; it calls nothing back.
- ``InputConsumer`` fetches and hands whole fetches to the batch handler (the runtime), and
  passes rebalances on; a partition about to be revoked gets its offsets committed first,
  so its next owner starts where this worker stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from mode import Service

from schemas.errors import KpiError
from streams.config import Settings
from streams.kafka import make_input_consumer
from streams.logs import SaidInOneLine
from streams.sinks.metrics import Metrics
from streams.watchdog import Steps, fetch_states

log = logging.getLogger(__name__)
# mode's services of this module log with this logger: their crash by a KpiError is one line.
log.addFilter(SaidInOneLine())

#: Most messages handed to the engine at once, and how long a fetch waits for more.
BATCH_MAX = 5000
FETCH_WAIT_MS = 100
#: How often the watchdog asks the broker for the input partitions' end offsets (s).
WATCH_ENDS_S = 5.0

Fetched = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]


class GroupMember(Service):
    """The worker in the input consumer group: the consumer, its partitions, their offsets."""

    def __init__(self, settings: Settings, metrics: Metrics, steps: Steps, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._metrics = metrics
        self._steps = steps
        self._inputs = frozenset(settings.input_topics)
        # Created on start: aiokafka clients belong to the running loop.
        self._client: AIOKafkaConsumer | None = None
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._rejoining = True
        # Input partition -> last offset processed whose effects are durable.
        self._durable: dict[TopicPartition, int] = {}
        # Input partition -> next offset already committed to the group.
        self._committed: dict[TopicPartition, int] = {}
        # Input partition -> end offset asked of the broker by the watchdog: the lag does not
        # rest on the fetcher's high-water marks alone (a fetcher that stopped has old ones).
        self._ends: dict[TopicPartition, int] = {}
        self._ends_asked = 0.0
        # Why the broker did not answer the last request for end offsets or metadata
        # (None: it did). Liveness tells an outage from a stall of our own by it.
        self._kafka_error: str | None = None

    @property
    def client(self) -> AIOKafkaConsumer:
        """The started consumer."""
        if self._client is None:
            msg = "the input consumer is used before its service started"
            raise RuntimeError(msg)
        return self._client

    async def on_start(self) -> None:
        """Make and start the consumer (it joins the group once subscribed)."""
        self._client = make_input_consumer(self._settings)
        await self._client.start()

    async def on_stop(self) -> None:
        """Leave the group: the partitions move to the others at once."""
        if self._client is not None:
            await self._client.stop()

    # -- the assignment ----------------------------------------------------------------

    @property
    def assigned(self) -> frozenset[TopicPartition]:
        """The input partitions the group gave this worker.

        Set when a rebalance assigns them, emptied when one revokes them. Not the
        consumer's ``assignment()``: aiokafka keeps reporting the old partitions during a
        rebalance, and acting on those (a restore, an offset commit while the member
        rejoins) broke rebalances (issue 12).
        """
        return self._assigned

    @property
    def rejoining(self) -> bool:
        """Whether a rebalance is under way: from a revocation (or the start) on.

        Until the next assignment; nothing is committed meanwhile.
        """
        return self._rejoining

    def assign(self, assigned: Iterable[TopicPartition]) -> None:
        """The group gave this worker its partitions."""
        self._assigned = frozenset(assigned)
        self._rejoining = False
        self._steps.at("rebalance", f"assigned {len(self._assigned)} partitions")

    def revoke(self, revoked: Iterable[TopicPartition]) -> None:
        """The group takes partitions away (their offsets were committed before)."""
        revoked = frozenset(revoked)
        self._assigned = self._assigned.difference(revoked)
        self._rejoining = True
        for tp in revoked:
            self._durable.pop(tp, None)
            self._committed.pop(tp, None)
            self._metrics.forget_partition(tp.topic, tp.partition)

    # -- offsets -----------------------------------------------------------------------

    def restored(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Last offsets a restored state reflects: durable, committed with the next commit.

        The lag is counted from them.
        """
        self._durable.update(offsets)

    async def commit(self, processed: Mapping[TopicPartition, int]) -> None:
        """The batch that processed up to ``processed`` is durable: commit what is due.

        Only between an assignment and the next revocation: a commit sent while the member
        rejoins fails, and aiokafka then resets the member id in the middle of the join.
        """
        self._durable.update(processed)
        self.export_lag()
        if self._rejoining:
            return
        assigned = self._assigned
        offsets = {
            tp: OffsetAndMetadata(offset + 1, "")
            for tp, offset in self._durable.items()
            if self._committed.get(tp, -1) < offset + 1 and tp in assigned
        }
        if not offsets:
            return
        try:
            await self.client.commit(offsets)
        except KafkaError as exc:
            # The group moved on (rebalance): the next owner replays from the last commit,
            # which the restored state makes exact.
            log.info("offset commit failed (%s); the next owner replays those messages", exc)
            return
        for tp, om in offsets.items():
            self._committed[tp] = om.offset

    # -- lag ---------------------------------------------------------------------------

    def lag_by_partition(self) -> dict[TopicPartition, int]:
        """Input messages waiting per assigned partition with a durable offset.

        The end of a partition is the later of the fetcher's high-water mark and the end
        offset last asked of the broker; a partition not restored yet has no durable offset
        and is left out (the watchdog counts it).
        """
        client = self._client
        if client is None:
            return {}
        waiting = {}
        for tp in self._assigned:
            done = self._durable.get(tp)
            if done is not None:
                end = max(client.highwater(tp) or 0, self._ends.get(tp, 0))
                waiting[tp] = max(0, end - 1 - done)
        return waiting

    def lag(self) -> int:
        """Input messages waiting in the assigned partitions."""
        return sum(self.lag_by_partition().values())

    def export_lag(self) -> None:
        """Set the consumer lag gauges."""
        for tp, n in self.lag_by_partition().items():
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(n)

    async def ask_end_offsets(self) -> None:
        """Ask the broker for the assigned partitions' end offsets (every few seconds).

        Input that a stuck fetcher never saw still counts as waiting. The broker being away
        leaves the fetcher's high-water marks alone.
        """
        client = self._client
        if client is None or time.monotonic() - self._ends_asked <= WATCH_ENDS_S:
            return
        self._ends_asked = time.monotonic()
        inputs = [tp for tp in self._assigned if tp.topic in self._inputs]
        if not inputs:
            # Nothing to ask about; whether the broker answers still matters (a member
            # waiting for the group during an outage).
            self._ends = {}
            await self.check_kafka(WATCH_ENDS_S)
            return
        try:
            self._ends = await asyncio.wait_for(client.end_offsets(inputs), WATCH_ENDS_S)
        except (KafkaError, TimeoutError) as exc:
            self._kafka_error = kafka_reason(exc)
        else:
            self._kafka_error = None

    @property
    def kafka_error(self) -> str | None:
        """Why the broker did not answer the last offsets or metadata request; None if it did."""
        return self._kafka_error

    async def check_kafka(self, timeout_s: float) -> str | None:
        """Ask the brokers for the cluster's metadata: None when one answers, else why not."""
        client = self._client
        if client is None:
            return "the Kafka consumer is not started yet"
        try:
            await asyncio.wait_for(client.topics(), timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            self._kafka_error = kafka_reason(exc)
        else:
            self._kafka_error = None
        return self._kafka_error

    def fetch_states(self) -> str:
        """Aiokafka's fetch state of each assigned partition (stall reports)."""
        return fetch_states(self._client, self._assigned)


def kafka_reason(exc: BaseException) -> str:
    """One line on why a request to Kafka failed (no addresses: they are in the settings)."""
    if isinstance(exc, TimeoutError):
        return "Kafka did not answer in time"
    text = str(exc).strip().splitlines()
    return f"Kafka: {text[0] if text else type(exc).__name__}"


class BatchHandler(Protocol):
    """What the input consumer drives: the runtime (``streams/runtime.py``)."""

    def unrestored(self) -> set[tuple[str, int]]:
        """Assigned partitions whose state is not restored yet."""

    async def handle(self, fetched: Fetched) -> None:
        """Process one fetch; returns once its writes are under way."""

    async def revoke(self, revoked: frozenset[TopicPartition]) -> None:
        """Write and commit what was processed, then drop the partitions leaving."""

    async def drain(self) -> None:
        """Wait until every processed batch is written and committed."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, member: GroupMember, handler: BatchHandler, steps: Steps) -> None:
        self.member = member
        self.handler = handler
        self.steps = steps

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.handler.revoke(frozenset(revoked))
        self.steps.at("rebalance", "revoked; rejoining")

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        self.member.assign(assigned)
        log.info("assigned %s", ", ".join(f"{tp.topic}-{tp.partition}" for tp in assigned))


class InputConsumer(Service):
    """Fetch and hand over, until the worker stops."""

    def __init__(
        self,
        settings: Settings,
        member: GroupMember,
        handler: BatchHandler,
        steps: Steps,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._member = member
        self._handler = handler
        self._steps = steps
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def on_start(self) -> None:
        """Join the group and start fetching (the member's consumer is started)."""
        listener = _Rebalance(self._member, self._handler, self._steps)
        self._member.client.subscribe(list(self._settings.input_topics), listener=listener)
        self._loop_task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        """Finish, write and commit the batch in hand."""
        self._stopping = True
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), timeout=30.0)
            except (TimeoutError, asyncio.CancelledError):
                self._loop_task.cancel()
            except Exception:  # noqa: BLE001 - already logged by _run
                pass
            await self._handler.drain()
            await self._member.commit({})

    async def _run(self) -> None:
        consumer = self._member.client
        handler = self._handler
        try:
            while not self._stopping:
                batches = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=BATCH_MAX)
                # Partitions assigned with nothing new to read are restored all the same:
                # their topics' windows must close and their KPIs be led (issue 12).
                if batches or handler.unrestored():
                    await handler.handle(batches)
        except Exception as exc:  # noqa: BLE001 - the worker stops and says why
            # A worker that cannot process must not sit in the group holding partitions:
            # crash the service tree (the worker exits non-zero; a restart restores).
            if isinstance(exc, KpiError):  # a setting that does not fit: say it in one line
                log.error("kpi: error: %s", exc)
            await self.crash(exc)
