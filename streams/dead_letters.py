"""Dead letters: their record (SPEC section 1), sending them, and never sending one twice.

A replayed batch (after a crash) dead-letters the same messages again. On restore, the
dead-letter partitions are read back from the position each partition's last commit
recorded (``streams/restore.py``), and the messages found there are skipped once when the
replay reaches them. The position a send reaches goes back to the engine, so the next
commit records it.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from aiokafka import TopicPartition

from streams.config import INPUT_TOPICS, Settings
from streams.core.engine import Engine
from streams.core.records import DeadLetter
from streams.core.state import PartitionState
from streams.kafka import Producer


def dead_letter_record(dl: DeadLetter, topic_name: str) -> bytes:
    """The dead-letter message of SPEC section 1 (payload and key as the original text).

    Bytes that are not UTF-8 are kept readable (backslash escapes) and exact, in a
    ``payload_base64`` / ``key_base64`` field beside, so nothing is lost.
    """
    record: dict[str, Any] = {
        "reason": dl.reason,
        "detail": dl.detail,
        "topic": topic_name,
        "partition": dl.partition,
        "offset": dl.offset,
        "key": None,
    }
    if dl.key is not None:
        _put_text(record, "key", dl.key)
    _put_text(record, "payload", dl.payload)
    return orjson.dumps(record)


def _put_text(record: dict[str, Any], field: str, raw: bytes) -> None:
    try:
        record[field] = raw.decode("utf-8")
    except UnicodeDecodeError:
        record[field] = raw.decode("utf-8", errors="backslashreplace")
        record[f"{field}_base64"] = base64.b64encode(raw).decode("ascii")


def source_of(value: bytes) -> tuple[str, int, int] | None:
    """The (topic, partition, offset) a dead-letter record was made of; None if unreadable."""
    try:
        rec = orjson.loads(value)
        return str(rec["topic"]), int(rec["partition"]), int(rec["offset"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class DeadLetters:
    """Sends the dead letters of the partitions this worker holds, each message once."""

    def __init__(
        self, settings: Settings, producer: Producer, engine: Engine, partitions: int
    ) -> None:
        self._topic = settings.dead_letter_topic
        self._real = {t: settings.topic(t) for t in INPUT_TOPICS}
        self._producer = producer
        self._engine = engine
        #: Partitions of the dead-letter topic (an input partition writes to its number mod
        #: this).
        self.partitions = partitions
        # (topic, partition) -> offsets whose dead letter is already in the topic (replays).
        self._sent: dict[tuple[str, int], set[int]] = defaultdict(set)

    def partition_of(self, input_partition: int) -> int:
        """The dead-letter partition an input partition's dead letters go to."""
        return input_partition % self.partitions

    def read_back_from(self, states: Iterable[PartitionState]) -> dict[TopicPartition, int]:
        """Where to read back the dead letters that restored states may see again.

        From the position each state's last commit recorded: the dead letters a crashed
        batch sent after it are there.
        """
        start: dict[TopicPartition, int] = {}
        for st in states:
            tp = TopicPartition(self._topic, self.partition_of(st.partition))
            start[tp] = min(start.get(tp, st.dlq_next), st.dlq_next)
        return start

    def recall(self, states: Iterable[PartitionState], values: Iterable[bytes | None]) -> None:
        """Remember the dead letters read back (``values``) that a replay of ``states`` redoes.

        Whatever was remembered of those partitions before (when they were last held) goes.
        """
        by_source: dict[tuple[str, int], PartitionState] = {}
        for st in states:
            by_source[(self._real[st.topic], st.partition)] = st
            self._sent[(st.topic, st.partition)] = set()
        for value in values:
            source = source_of(value) if value is not None else None
            if source is None:
                continue
            topic, partition, offset = source
            held = by_source.get((topic, partition))
            if held is not None and offset > held.applied_offset:
                self._sent[(held.topic, held.partition)].add(offset)

    async def send(self, dead_letters: Sequence[DeadLetter]) -> None:
        """Send a batch's dead letters (but those already sent) and wait for all of them."""
        if not dead_letters:
            return
        producer = self._producer.client
        futures = []
        for dl in dead_letters:
            sent = self._sent.get((dl.topic, dl.partition))
            if sent and dl.offset in sent:
                sent.discard(dl.offset)
                continue
            real = self._real[dl.topic]
            fut = await producer.send(
                self._topic,
                dead_letter_record(dl, real),
                # The original key (SPEC section 1); the partition is still chosen here, so
                # that read_back_from finds a partition's dead letters where it looks.
                key=dl.key,
                partition=self.partition_of(dl.partition),
            )
            futures.append((dl, fut))
        reached: dict[tuple[str, int], int] = {}
        for dl, fut in futures:
            metadata = await fut
            tp = (dl.topic, dl.partition)
            reached[tp] = max(reached.get(tp, 0), metadata.offset + 1)
        for (topic, partition), next_offset in reached.items():
            self._engine.dead_letters_sent(topic, partition, next_offset)
