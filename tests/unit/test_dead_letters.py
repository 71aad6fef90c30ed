"""Dead letters without a broker: the record, the read-back after a crash, one send each."""

from __future__ import annotations

import asyncio
import base64
import time
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import TopicPartition

from streams.config import Settings
from streams.core.engine import Engine
from streams.core.records import DeadLetter, Message
from streams.core.state import PartitionState
from streams.dead_letters import DeadLetters, dead_letter_record, source_of
from streams.kafka import Producer

SETTINGS = Settings(topic_prefix="t.")


class FakeProducer:
    """Stands in for AIOKafkaProducer: each partition's offsets count up from ``first``."""

    def __init__(self, first: int = 100) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []
        self.next: dict[int, int] = {}
        self.first = first

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes | None, partition: int) -> Any:
        self.sent.append((topic, value, key, partition))
        offset = self.next.get(partition, self.first)
        self.next[partition] = offset + 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=offset))
        return future


def engine() -> Engine:
    return Engine(
        partitions={"invoices": 4, "hiring": 4, "incidents": 4},
        grace_s=3600,
        currency="USD",
        clock=time.time,
    )


async def dead_letters(eng: Engine, fake: FakeProducer) -> DeadLetters:
    producer = Producer(lambda: fake)  # type: ignore[arg-type, return-value]
    await producer.start()
    return DeadLetters(SETTINGS, producer, eng, partitions=2)


def dl(partition: int, offset: int, payload: bytes = b"{", key: bytes | None = None) -> DeadLetter:
    return DeadLetter("schema", "bad", "invoices", partition, offset, payload, key)


def test_the_record_keeps_bytes_that_are_not_text() -> None:
    record = orjson.loads(dead_letter_record(dl(1, 5, b"\xff{", key=b"inv-\xfe"), "t.invoices"))
    assert record["topic"] == "t.invoices" and record["offset"] == 5
    assert record["payload"] == "\\xff{" and record["payload_base64"] == "/3s="
    assert record["key"] == "inv-\\xfe" and base64.b64decode(record["key_base64"]) == b"inv-\xfe"
    assert source_of(dead_letter_record(dl(1, 5), "t.invoices")) == ("t.invoices", 1, 5)
    assert source_of(b"not json") is None


async def test_sent_dead_letters_go_to_their_partition_and_their_position_to_the_engine() -> None:
    eng, fake = engine(), FakeProducer()
    eng.assign(PartitionState("invoices", 3))
    sender = await dead_letters(eng, fake)
    await sender.send([dl(3, 7, key=b"inv-7"), dl(3, 8)])
    # Keyed by the original key (none: no key); the partition follows the input partition.
    assert [(t, k, p) for t, _v, k, p in fake.sent] == [
        ("t.kpi.dead-letter", b"inv-7", 1),
        ("t.kpi.dead-letter", None, 1),
    ]
    # The next commit records where the dead-letter partition is written up to.
    assert eng.states[("invoices", 3)].dlq_next == 102


async def test_a_replay_does_not_send_what_the_crashed_batch_sent() -> None:
    eng, fake = engine(), FakeProducer()
    restored = PartitionState("invoices", 2)
    restored.applied_offset = 10  # the last commit reflects offsets up to 10
    restored.dlq_next = 40
    sender = await dead_letters(eng, fake)
    # Input partition 2 writes to dead-letter partition 0 (of 2), read back from 40.
    assert sender.read_back_from([restored]) == {TopicPartition("t.kpi.dead-letter", 0): 40}
    already = [
        dead_letter_record(dl(2, 9), "t.invoices"),  # covered by the restored state
        dead_letter_record(dl(2, 12), "t.invoices"),  # sent by the batch that crashed
        dead_letter_record(DeadLetter("late", "", "hiring", 2, 12, b"{}"), "t.hiring"),
        b"garbage",
        None,
    ]
    sender.recall([restored], already)
    eng.assign(restored)
    await sender.send([dl(2, 11), dl(2, 12)])
    assert [source_of(v) for _t, v, _k, _p in fake.sent] == [("t.invoices", 2, 11)]
    # A second replay of offset 12 (a later crash) is sent: it was skipped once only.
    await sender.send([dl(2, 12)])
    assert [source_of(v) for _t, v, _k, _p in fake.sent] == [
        ("t.invoices", 2, 11),
        ("t.invoices", 2, 12),
    ]


async def test_a_partition_restored_again_forgets_what_was_recalled_before() -> None:
    eng, fake = engine(), FakeProducer()
    first = PartitionState("invoices", 0)
    sender = await dead_letters(eng, fake)
    sender.recall([first], [dead_letter_record(dl(0, 5), "t.invoices")])
    # Revoked, then given back with a state that already reflects offset 5.
    again = PartitionState("invoices", 0)
    again.applied_offset = 20
    sender.recall([again], [])
    eng.assign(again)
    await sender.send([dl(0, 5)])
    assert len(fake.sent) == 1


def test_the_record_carries_the_original_key_as_text_or_null() -> None:
    keyed = orjson.loads(dead_letter_record(dl(1, 5, key=b"inv-1"), "t.invoices"))
    assert keyed["key"] == "inv-1" and "key_base64" not in keyed
    unkeyed = orjson.loads(dead_letter_record(dl(1, 6), "t.invoices"))
    assert unkeyed["key"] is None and "key_base64" not in unkeyed
    assert list(unkeyed) == ["reason", "detail", "topic", "partition", "offset", "key", "payload"]


def test_the_engine_hands_the_message_key_to_its_dead_letters() -> None:
    eng = engine()
    eng.assign(PartitionState("invoices", 0))
    result = eng.process(
        [Message("invoices", 0, 0, b"{", b"inv-9"), Message("invoices", 0, 1, b"not json")]
    )
    assert [(d.offset, d.reason, d.key) for d in result.dead_letters] == [
        (0, "invalid_json", b"inv-9"),
        (1, "invalid_json", None),
    ]
