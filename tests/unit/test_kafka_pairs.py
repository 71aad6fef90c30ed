"""The ``pairs`` readers: aiokafka's fetched records as (key, value) tuples (streams/kafka.py).

``streams.kafka`` replaces aiokafka's ``PartitionRecords._consumer_record`` for readers built
with ``make_reader(..., pairs=True)`` and leaves every other consumer's records as they were;
these tests run aiokafka's own record parsing over a real zstd batch, and pin the aiokafka
code the replacement relies on, so an upgrade that moves it fails here first.
"""

from __future__ import annotations

import inspect

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams import kafka
from streams.config import Settings

TP = TopicPartition("backoffice-kpi-invoices-changelog", 3)
ZSTD = 4  # aiokafka's compression attribute for zstd
RECORDS = [
    (b"p|invoice_processing_time|1h|all|1735689600", b'{"o":1,"v":[1.0,2.0],"p":null}'),
    (b"e|inv|ap-1", None),  # a tombstone
    (None, b"a value without a key"),
    (b"m", b'{"seq":1,"wm":null,"a":41,"dlq":0}'),
]


def _batch() -> bytes:
    """One zstd batch of ``RECORDS``, at offsets 0 to 3."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=ZSTD,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, (key, value) in enumerate(RECORDS):
        builder.append(i, timestamp=1_735_689_600_000 + i, key=key, value=value, headers=[])
    return bytes(builder.build())


def _records(key_deserializer: object, fetch_offset: int = 0) -> PartitionRecords:
    return PartitionRecords(
        TP, MemoryRecords(_batch()), [], fetch_offset, key_deserializer, None, True, 0
    )


def test_a_pairs_reader_gets_key_value_tuples_in_order_and_its_position_moves_on() -> None:
    records = _records(kafka._as_pair)
    assert list(records) == RECORDS
    assert records.next_fetch_offset == len(RECORDS)


def test_other_consumers_still_get_aiokafkas_consumer_records() -> None:
    got = list(_records(None))
    assert all(type(r) is ConsumerRecord for r in got)
    assert [(r.topic, r.partition, r.offset, r.key, r.value) for r in got] == [
        (TP.topic, TP.partition, i, k, v) for i, (k, v) in enumerate(RECORDS)
    ]
    assert [r.timestamp for r in got] == [1_735_689_600_000 + i for i in range(len(RECORDS))]
    assert all(r.headers == () for r in got)


def test_a_deserializer_of_another_consumer_still_runs() -> None:
    got = list(_records(lambda key: key and key.upper()))
    assert got[0].key == RECORDS[0][0].upper()


def test_records_before_the_fetch_position_are_skipped_as_before() -> None:
    # A compressed batch comes whole; aiokafka skips what lies before the position.
    assert list(_records(kafka._as_pair, fetch_offset=2)) == RECORDS[2:]


def test_the_replaced_aiokafka_code_is_the_one_the_replacement_expects() -> None:
    original = kafka._consumer_record
    assert original.__module__ == "aiokafka.consumer.fetcher"
    assert original.__qualname__ == "PartitionRecords._consumer_record"
    assert list(inspect.signature(original).parameters) == ["self", "tp", "record"]
    # aiokafka builds every record through it, and keeps the position itself.
    unpack = inspect.getsource(PartitionRecords._unpack_records)
    assert "consumer_record = self._consumer_record(tp, record)" in unpack
    assert "self.next_fetch_offset = record.offset + 1" in unpack
    assert "self._key_deserializer = key_deserializer" in inspect.getsource(
        PartitionRecords.__init__
    )
    assert PartitionRecords._consumer_record is kafka._key_value_record


async def test_make_reader_marks_only_pairs_readers() -> None:
    # Built, not started: no broker is needed to read the options back.
    pairs = kafka.make_reader(Settings(), pairs=True)
    plain = kafka.make_reader(Settings())
    assert pairs._key_deserializer is kafka._as_pair
    assert plain._key_deserializer is None
