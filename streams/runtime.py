"""The worker's plumbing around the pure engine: restore, dead letters, sinks, commit.

One batch goes: restore any newly assigned partition from its changelog -> ``Engine.process``
-> dead letters to ``kpi.dead-letter`` (awaited) -> Redis (retried until it succeeds) ->
metrics -> state changelog records (awaited) -> the input consumer commits the batch's
offsets (``streams/consumer.py``). Input offsets are therefore committed only after
everything the batch caused is durable. A crash anywhere replays from the committed
offsets; the restored state knows the last input offset it reflects, skips what it already
holds and recomputes the rest bit-identically, and the dead-letter topic is read back so a
replay never dead-letters a message twice. See docs/ARCHITECTURE.md for the argument.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from streams.catalog import CATALOG
from streams.config import INPUT_TOPICS, Settings
from streams.core.engine import BatchResult, DeadLetter, Engine, Message, WindowValue
from streams.core.state import ChangelogRecord, PartitionState
from streams.kafka import make_reader, read_partitions, seek_to_start
from streams.selection import selected_catalog
from streams.sinks.metrics import Metrics
from streams.sinks.redis_sink import RedisSink
from streams.topics import changelog_topic
from streams.watchdog import Steps, fetch_states, pending_tasks

log = logging.getLogger(__name__)


def dead_letter_record(dl: DeadLetter, topic_name: str) -> bytes:
    """The dead-letter message of SPEC section 1 (payload as the original text)."""
    record: dict[str, Any] = {
        "reason": dl.reason,
        "detail": dl.detail,
        "topic": topic_name,
        "partition": dl.partition,
        "offset": dl.offset,
    }
    try:
        record["payload"] = dl.payload.decode("utf-8")
    except UnicodeDecodeError:
        # Not text: keep a readable rendering and the exact bytes, so nothing is lost.
        record["payload"] = dl.payload.decode("utf-8", errors="backslashreplace")
        record["payload_base64"] = base64.b64encode(dl.payload).decode("ascii")
    return orjson.dumps(record)


#: How often the watchdog asks the broker for the input partitions' end offsets (s).
WATCH_ENDS_S = 5.0


class Runtime:
    """Everything between the input consumer and the engine: restore, batches, writes, replicas."""

    def __init__(self, settings: Settings, metrics: Metrics, sink: RedisSink) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sink = sink
        self.logical = {settings.topic(t): t for t in INPUT_TOPICS}
        self.real = {t: settings.topic(t) for t in INPUT_TOPICS}
        self.engine: Engine | None = None
        self.lock = asyncio.Lock()
        # (topic, partition) -> offsets whose dead letter is already in the topic (replays).
        self._dlq_sent: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.current: dict[tuple[str, str, str], WindowValue] = {}
        self._progress_written: dict[str, float] = {}
        # Changelog partitions the replication task must re-read from their beginning.
        self._rewind: set[TopicPartition] = set()
        self.last_batch_at = 0.0
        self.started_at = time.time()
        #: What the input loop, the writes, the replicas and the tick are doing (stall reports).
        self.steps = Steps()
        # Whether the current stall was logged already (once per stall).
        self._stall_logged = False
        #: The input partitions the group gave this worker: set when a rebalance assigns
        #: them, emptied when one revokes them. Not the consumer's ``assignment()``: aiokafka
        #: keeps reporting the old partitions during a rebalance, and acting on those (a
        #: restore, an offset commit while the member rejoins) broke rebalances (issue 12).
        self.assigned: frozenset[TopicPartition] = frozenset()
        # Whether a rebalance is under way for this worker: from a revocation (or the start)
        # until the next assignment.
        self.rejoining = True
        # When the worker last made input progress (a batch with input written), and when
        # it last had nothing to do: a stall is work waiting since both. A restore is no
        # progress: a group that rebalances for good restores again and again.
        self.last_input_at = time.time()
        self._settled_at = time.time()
        # Input partition -> end offset asked of the broker by the watchdog: the lag does not
        # rest on the fetcher's high-water marks alone (a fetcher that stopped has old ones).
        self._ends: dict[TopicPartition, int] = {}
        self._ends_asked = 0.0
        self.events_processed = 0
        # Input partition -> last offset processed (committed by the input consumer).
        self.processed: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        # The writes of the last processed batch, while they run (see ``_write``).
        self._writing: asyncio.Future[None] | None = None
        #: Called after each batch's writes completed (the consumer commits offsets).
        self.on_durable: Callable[[], Awaitable[None]] | None = None
        #: Called when a batch's writes failed (the worker stops).
        self.on_failure: Callable[[BaseException | None], None] | None = None

    def attach(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        """The input consumer and the producer of dead letters and changelog records."""
        self.consumer = consumer
        self.producer = producer

    def configure(self, partitions: dict[str, int]) -> None:
        """Build the engine once the topics' partition counts are known."""
        self.engine = Engine(
            partitions={t: partitions[self.real[t]] for t in INPUT_TOPICS},
            grace_s=self.settings.grace_seconds,
            currency=self.settings.currency,
            clock=time.time,
            catalog=selected_catalog(self.settings),
            max_dimension_values=self.settings.max_dimension_values,
            idle_partition_s=self.settings.idle_partition_seconds,
        )
        self.dlq_partitions = partitions[self.settings.dead_letter_topic]
        self.started_at = time.time()

    # -- rebalancing -------------------------------------------------------------------

    def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """The group gave this worker its partitions (restored by the next ``handle``)."""
        self.assigned = frozenset(assigned)
        self.rejoining = False
        self.steps.at("rebalance", f"assigned {len(self.assigned)} partitions")

    def unrestored(self) -> set[tuple[str, int]]:
        """Assigned input partitions whose state is not restored yet."""
        if self.engine is None:
            return set()
        return self.assigned_inputs() - self.engine.states.keys()

    def assigned_inputs(self) -> set[tuple[str, int]]:
        """The input partitions the consumer group gave this worker, by logical topic."""
        return {
            (self.logical[tp.topic], tp.partition)
            for tp in self.assigned
            if tp.topic in self.logical
        }

    async def _restore(self, tps: Iterable[tuple[str, int]]) -> None:
        assert self.engine is not None
        wanted = sorted(tps)
        if not wanted:
            return
        self.steps.at("input", "restoring " + ", ".join(f"{t}-{p}" for t, p in wanted))
        started = time.monotonic()
        changelog = {
            TopicPartition(changelog_topic(self.settings, t), p): (t, p) for t, p in wanted
        }
        records = await read_partitions(self.settings, list(changelog))
        states = []
        for tp, (t, p) in changelog.items():
            state = PartitionState.restore(t, p, ((k, v) for k, v in records[tp] if k is not None))
            states.append(state)
        # Dead letters a crashed batch already sent: read the dead-letter partitions from the
        # position each state last committed.
        dlq_start: dict[TopicPartition, int] = {}
        for st in states:
            tp = TopicPartition(self.settings.dead_letter_topic, st.partition % self.dlq_partitions)
            dlq_start[tp] = min(dlq_start.get(tp, st.dlq_next), st.dlq_next)
        dlq = await read_partitions(self.settings, list(dlq_start), dlq_start)
        by_source = {(self.real[st.topic], st.partition): st for st in states}
        for _tp, recs in dlq.items():
            for _key, value in recs:
                if value is None:
                    continue
                try:
                    rec = orjson.loads(value)
                    source = by_source.get((rec["topic"], rec["partition"]))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
                if source is not None and rec["offset"] > source.applied_offset:
                    self._dlq_sent[(source.topic, source.partition)].add(int(rec["offset"]))
        for st in states:
            self.engine.assign(st)
            # What the restored state holds is durable: committed as processed, and the lag
            # is counted from it.
            self.processed[TopicPartition(self.real[st.topic], st.partition)] = st.applied_offset
        log.info(
            "restored %d partition(s) in %.2f s: %s",
            len(states),
            time.monotonic() - started,
            ", ".join(
                f"{t}-{p}@{st.applied_offset}" for (t, p), st in zip(wanted, states, strict=True)
            ),
        )

    async def on_revoked(
        self, revoked: Iterable[TopicPartition], commit: Callable[[], Awaitable[None]]
    ) -> None:
        """Write and commit what was processed, then drop the partitions that move away.

        One hold of the batch lock, so no batch comes between the writes, the offset commit
        (``commit``) and the revocation: every batch processed before is committed, and one
        fetched before but handled after leaves the revoked partitions out.
        """
        revoked = frozenset(revoked)  # used twice below: a one-shot iterable would not do
        async with self.lock:
            self.steps.at("rebalance", "revoking: waiting for the writes")
            await self._drain()
            self.steps.at("rebalance", "revoking: committing offsets")
            await commit()
            self.steps.at("rebalance", "revoking: dropping state")
            self.assigned = self.assigned.difference(revoked)
            self.rejoining = True
            if self.engine is None:
                return
            for tp in revoked:
                self.processed.pop(tp, None)
                self.metrics.forget_partition(tp.topic, tp.partition)
                topic = self.logical.get(tp.topic)
                if topic is None or (topic, tp.partition) not in self.engine.states:
                    continue
                self.engine.revoke(topic, tp.partition)
                self._dlq_sent.pop((topic, tp.partition), None)
                # Its changelog is now someone else's: read it again from the start.
                self._rewind.add(
                    TopicPartition(changelog_topic(self.settings, topic), tp.partition)
                )
            self._update_leadership()

    def _update_leadership(self) -> None:
        """Lead a topic (close and publish its windows) iff we own its partition 0.

        A topic we stop leading loses its KPI series here (its new leader exports them); a
        topic we start leading resumes from the progress its last leader wrote to Redis.
        """
        engine = self.engine
        assert engine is not None
        now_leading = {t for t in INPUT_TOPICS if (t, 0) in self.assigned_inputs()}
        started, stopped = engine.lead(now_leading)
        for topic in stopped:
            for kpi in engine.kpis_of(topic):
                scopes = {k[2] for k in self.current if k[0] == kpi.name}
                self.metrics.forget_scopes(kpi.name, scopes)
                for key in [k for k in self.current if k[0] == kpi.name]:
                    del self.current[key]
        if started or stopped:
            log.info(
                "leading %s (was %s)",
                sorted(now_leading) or "no topic",
                sorted((now_leading - started) | stopped) or "none",
            )

    async def _refresh_progress(self, engine: Engine) -> None:
        if engine.needs_progress():
            engine.set_progress(await self.sink.read_progress())
            fresh = engine.resuming()
            if fresh:
                log.info("resuming %s from written progress %s", fresh, engine.progress())

    async def replicate(self) -> None:
        """Follow, as replicas, the changelogs of the partitions others own of topics we lead.

        Runs for the life of the worker. Only a topic's leader reads its windows, so only it
        needs the other partitions' panes. A partition whose state we hold is not followed
        (our state is the authority, and reading our own writes back would cost as much as
        writing them); one that starts to be followed (revoked from us, never ours, or of a
        topic we start to lead) is read from its start, and until it has been read up to
        where its changelog ended then, the topic's windows are neither closed nor read
        (``Engine.follow``/``caught_up``): a compacted changelog may hold the first records
        of a commit behind a later one, so no earlier point is a whole view.
        """
        assert self.engine is not None
        engine = self.engine
        names = {changelog_topic(self.settings, t): t for t in INPUT_TOPICS}
        every = [
            TopicPartition(name, p)
            for name, t in names.items()
            for p in range(engine.n_partitions(t))
        ]
        consumer = make_reader(self.settings)
        await consumer.start()
        followed: set[TopicPartition] = set()
        # Partitions read from their start, and the end offset they must reach first.
        catching_up: dict[TopicPartition, int] = {}
        steps = self.steps
        try:
            while True:
                try:
                    steps.at("replicas", "waiting for the batch lock")
                    async with self.lock:
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
                    async with self.lock:
                        steps.at("replicas", "applying")
                        for tp, records in batches.items():
                            if tp not in followed:
                                continue
                            engine.replica_apply(
                                names[tp.topic],
                                tp.partition,
                                ((r.key, r.value) for r in records if r.key),
                            )
                        for tp in reached:
                            engine.caught_up(names[tp.topic], tp.partition)
                            del catching_up[tp]
                except KafkaError as exc:
                    # Read everything followed again from its start: whatever was
                    # fetched or sought when it failed is not trusted.
                    log.warning("following the changelogs failed (%r); starting over", exc)
                    async with self.lock:
                        for tp in followed:
                            engine.drop_replica(names[tp.topic], tp.partition)
                    followed = set()
                    catching_up.clear()
                    await asyncio.sleep(1.0)

        finally:
            await consumer.stop()

    # -- the batch ---------------------------------------------------------------------

    async def handle(
        self, fetched: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Process one fetch (records per input partition); its writes follow in the background.

        Returns once the batch is processed and the previous batch's writes are complete:
        one batch's writes overlap the next batch's fetch and processing (see ``_write``).
        """
        self.steps.at("input", "waiting for the batch lock")
        async with self.lock:
            # Records of partitions revoked since the fetch are not ours to process: their
            # next owner reads them from the offsets committed on revocation.
            if any(tp not in self.assigned for tp in fetched):
                fetched = {tp: recs for tp, recs in fetched.items() if tp in self.assigned}
            engine = self.engine
            assert engine is not None
            logical = self.logical
            messages = [
                Message(
                    logical[r.topic],
                    r.partition,
                    r.offset,
                    r.value if r.value is not None else b"",
                )
                for records in fetched.values()
                for r in records
            ]
            missing = self.unrestored()
            if missing:
                await self._drain()
                await self._restore(missing)
            self._update_leadership()
            self.steps.at("input", "reading the closing progress from Redis")
            await self._refresh_progress(engine)
            self.steps.at("input", f"processing {len(messages)} messages")
            result = engine.process(messages)
            self.steps.at("input", "waiting for the previous batch's writes")
            await self._pass_on(engine, result, fetched)
        self.steps.at("input", "fetching")

    async def tick(self) -> None:
        """Close, read and prune without new input of our own.

        Other workers' progress arrives through the replicas, and idle partitions are left
        out by the wall clock, so windows can close while our partitions are quiet.
        """
        # Asked before taking the lock: a Redis that does not answer must not hold up the
        # batches, whose own writes wait for it (and are retried) anyway.
        self.steps.at("tick", "asking Redis for lost data")
        lost = await self.sink.lost_data()
        self.steps.at("tick", "waiting for the batch lock")
        async with self.lock:
            await self._drain()
            if lost:
                await self._rewrite_lost()
            engine = self.engine
            if engine is None or not engine.held():
                self.steps.at("tick", "idle")
                return
            self._update_leadership()
            await self._refresh_progress(engine)
            self.steps.at("tick", "closing windows")
            await self._pass_on(engine, engine.process([]), {})
            await self._drain()
            self._export_lag()
        self.steps.at("tick", "idle")

    async def _rewrite_lost(self) -> None:
        """Redis lost our keys: write the catalog, every newest window and the progress again.

        The history of windows closed before the loss is not in the worker any more (their
        panes were folded away once written) and is not rewritten; windows closed from now
        on are written as always. Run Redis with persistence (AOF) to keep it.
        """
        log.warning(
            "Redis lost the product's keys (kpi:catalog is gone: restarted without "
            "persistence, or flushed); writing the catalog, %d newest windows and the closing "
            "progress again. History written before the loss is gone.",
            len(self.current),
        )
        self.metrics.redis_data_lost.inc()
        await self.sink.setup(CATALOG, self.settings.currency)
        self.sink.forget_written()
        await self.sink.write([], list(self.current.values()))
        # Written again by the next batch (or tick) of a topic we lead.
        self._progress_written = {}

    async def drain(self) -> None:
        """Wait until every processed batch is written (dead letters, Redis, changelog)."""
        async with self.lock:
            await self._drain()

    async def _drain(self) -> None:
        task, self._writing = self._writing, None
        if task is not None:
            await task  # a failed write raises here, and the worker stops

    async def _pass_on(
        self,
        engine: Engine,
        result: BatchResult,
        fetched: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        """Take what the writes need from the engine now, then start them after the last."""
        n_messages = sum(len(records) for records in fetched.values())
        self.metrics.observe_batch(result, n_messages, self.real)
        for wv in result.current:
            self.current[(wv.kpi, wv.window, wv.scope)] = wv
        for (t, p), watermark in engine.watermarks().items():
            self.metrics.watermark.labels(self.real[t], str(p)).set(
                watermark if watermark != float("-inf") else 0
            )
        # The records are built now, before the next batch changes the state. Their meta
        # records carry the dead-letter position known before this batch's dead letters
        # are sent: a restore reads the dead-letter topic from there, a little earlier than
        # needed, and skips what is at or below the restored offset.
        changelog = [
            (changelog_topic(self.settings, t), p, records) for t, p, records in engine.commit()
        ]
        progress = engine.closing_progress()
        offsets = {tp: records[-1].offset for tp, records in fetched.items() if records}
        timestamps = [r.timestamp for records in fetched.values() for r in records]
        await self._drain()
        self._writing = asyncio.ensure_future(
            self._write(result, changelog, progress, offsets, timestamps)
        )
        self._writing.add_done_callback(self._written)

    def _written(self, task: asyncio.Future[None]) -> None:
        # Raised again by the next drain; reported now, so a worker that failed to write
        # stops even when no further batch comes.
        if not task.cancelled() and task.exception() is not None and self.on_failure:
            self.on_failure(task.exception())

    async def _write(
        self,
        result: BatchResult,
        changelog: list[tuple[str, int, list[ChangelogRecord]]],
        progress: dict[str, float],
        offsets: dict[TopicPartition, int],
        timestamps: list[int],
    ) -> None:
        """One batch's writes, in the order the exactness argument needs.

        Batches are written one after the other, so everything below happens in the same
        order as if the next batch had not been processed yet; processing has no effect
        outside the process until its own writes.
        """
        steps = self.steps
        steps.at("writes", f"sending {len(result.dead_letters)} dead letters")
        await self._send_dead_letters(result.dead_letters)
        steps.at("writes", "writing Redis")
        await self.sink.write(result.closed, result.current)
        # The next batch may prune panes on the strength of this batch's closing, so this
        # batch must be durable first (see docs/ARCHITECTURE.md).
        steps.at("writes", f"sending the changelog of {len(changelog)} partitions")
        await self._send_changelog(changelog)
        # The progress marker only after the state commit: a worker that resumes from it
        # must find every window up to it closed in the state it restores, or it would
        # judge the replayed events of a lost commit late. Lagging behind the history is
        # harmless: windows after it are closed again, byte-identically.
        if progress and progress != self._progress_written:
            steps.at("writes", "writing the closing progress")
            await self.sink.write([], [], progress)
            self._progress_written = progress
        written_at_ms = time.time() * 1000.0
        self.metrics.observe_latencies(
            [(written_at_ms - ts) / 1000.0 for ts in timestamps if ts > 0]
        )
        self.processed.update(offsets)
        self.events_processed += len(timestamps)
        self.last_batch_at = time.time()
        if offsets:
            self.last_input_at = self.last_batch_at
        self._export_lag()
        if self.on_durable is not None:
            steps.at("writes", "committing input offsets")
            await self.on_durable()
        steps.at("writes", "idle")

    def lag_by_partition(self) -> dict[TopicPartition, int]:
        """Input messages waiting per restored assigned partition.

        The end of a partition is the later of the fetcher's high-water mark and the end
        offset the watchdog last asked the broker for; a partition not restored yet has no
        processed offset and is left out (``stall`` counts it).
        """
        consumer = self.consumer
        if consumer is None:
            return {}
        waiting = {}
        for tp in self.assigned:
            done = self.processed.get(tp)
            if done is not None:
                end = max(consumer.highwater(tp) or 0, self._ends.get(tp, 0))
                waiting[tp] = max(0, end - 1 - done)
        return waiting

    def lag(self) -> int:
        """Input messages waiting in the assigned partitions."""
        return sum(self.lag_by_partition().values())

    def stall(self) -> str | None:
        """The stall, if any, as a health problem.

        Work waits (a rebalance not finished, assigned partitions not restored, input not
        processed) and the worker made no input progress for ``KPI_STALL_SECONDS``: none
        since the work began to wait, that is, since it last had nothing to do.
        """
        now = time.time()
        unrestored = self.unrestored()
        waiting = sum(self.lag_by_partition().values())
        if not (self.rejoining or unrestored or waiting):
            self._settled_at = now
            return None
        since = now - max(self._settled_at, self.last_input_at)
        if since <= self.settings.stall_seconds:
            return None
        if self.rejoining:
            what = "waiting for the group to assign partitions"
        elif unrestored:
            what = f"{len(unrestored)} assigned partitions not restored"
        else:
            what = f"{waiting} messages waiting"
        return f"stalled: {what}, no batch completed for {since:.0f} s"

    async def watch(self) -> None:
        """Log a stall once, with what every loop of the worker is waiting for.

        Asks the broker for the assigned partitions' end offsets every few seconds, so
        input that a stuck fetcher never saw still counts as waiting. Diagnostics only: an
        error here is logged and never stops the worker.
        """
        try:
            await self._watch()
        except Exception:  # noqa: BLE001 - the watchdog must not take the worker down
            log.exception("stall watchdog failed")

    async def _watch(self) -> None:
        consumer = self.consumer
        if consumer is not None and time.monotonic() - self._ends_asked > WATCH_ENDS_S:
            self._ends_asked = time.monotonic()
            inputs = [tp for tp in self.assigned if tp.topic in self.logical]
            try:
                self._ends = (
                    await asyncio.wait_for(consumer.end_offsets(inputs), WATCH_ENDS_S)
                    if inputs
                    else {}
                )
            except (KafkaError, TimeoutError):
                pass  # the broker is away: the fetcher's high-water marks stand alone
        problem = self.stall()
        if problem is None:
            self._stall_logged = False
            return
        if self._stall_logged:
            return
        self._stall_logged = True
        waiting = sorted(
            f"{self.logical.get(tp.topic, tp.topic)}-{tp.partition}"
            for tp, n in self.lag_by_partition().items()
            if n > 0
        )
        log.error(
            "%s; partitions waiting: %s; held: %s; %s; fetch states: %s; tasks: %s",
            problem,
            ", ".join(waiting) or "none",
            ", ".join(sorted(f"{t}-{p}" for t, p in self.engine.held())) if self.engine else "",
            self.steps.describe(),
            fetch_states(self.consumer, self.assigned),
            pending_tasks(),
        )

    def _export_lag(self) -> None:
        for tp, n in self.lag_by_partition().items():
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(n)

    async def _send_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> None:
        if not dead_letters:
            return
        assert self.engine is not None and self.producer is not None
        futures = []
        for dl in dead_letters:
            sent = self._dlq_sent.get((dl.topic, dl.partition))
            if sent and dl.offset in sent:
                sent.discard(dl.offset)
                continue
            key = f"{self.real[dl.topic]}:{dl.partition}:{dl.offset}".encode()
            fut = await self.producer.send(
                self.settings.dead_letter_topic,
                dead_letter_record(dl, self.real[dl.topic]),
                key=key,
                partition=dl.partition % self.dlq_partitions,
            )
            futures.append((dl, fut))
        for dl, fut in futures:
            metadata = await fut
            st = self.engine.states.get((dl.topic, dl.partition))
            if st is not None:
                st.dlq_next = max(st.dlq_next, metadata.offset + 1)

    async def _send_changelog(
        self, changelog: list[tuple[str, int, list[ChangelogRecord]]]
    ) -> None:
        producer = self.producer
        assert producer is not None
        futures = []
        for topic, p, records in changelog:
            # Whole batches per changelog partition: one future per ~1 MB, not per record.
            batch = producer.create_batch()
            for record in records:
                if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=p))
                    batch = producer.create_batch()
                    if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                        msg = f"changelog record of {len(record.value or b'')} bytes too large"
                        raise RuntimeError(msg)
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=p))
        if futures:
            await asyncio.gather(*futures)
