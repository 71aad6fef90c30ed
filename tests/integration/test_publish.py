"""Simulated events through a real Kafka: topics created, every message back with its key."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from producers.publisher import Publisher
from producers.simulator import CompanySimulator, Emission, Faults
from streams.config import Settings
from streams.topics import create_published_topics

pytestmark = pytest.mark.integration

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def simulated(count: int) -> list[Emission]:
    clock = START + 30 * 86400
    faults = Faults.spread(duplicates=0.05, invalid=0.1)
    # Incidents and invoices only: hiring would open with the 800-strong initial workforce.
    sim = CompanySimulator(
        17, START, clock=lambda: clock, faults=faults, domains=["invoices", "incidents"]
    )
    emissions = []
    for emission in sim:
        emissions.append(emission)
        if len(emissions) == count:
            return emissions
    raise AssertionError("the simulator ran dry")


async def consume_all(settings: Settings, expected: int, timeout_s: float = 60.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        topics = list(settings.input_topics)
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(
                consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
            )
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        # Nothing more than expected arrives either.
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer._client.force_metadata_update()  # noqa: SLF001 - fresh topics
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no metadata for {topic}")


async def test_topics_are_created_once_with_the_configured_partitions(kpi_env: Settings) -> None:
    created = await create_published_topics(kpi_env)
    expected = list(kpi_env.input_topics)
    assert sorted(created) == sorted(expected)
    assert await create_published_topics(kpi_env) == []  # already there: nothing to do, no error
    consumer = AIOKafkaConsumer(bootstrap_servers=kpi_env.kafka_bootstrap)
    await consumer.start()
    try:
        for topic in expected:
            assert len(await _partitions(consumer, topic)) == kpi_env.partitions
    finally:
        await consumer.stop()


async def test_published_events_come_back_keyed_by_entity(kpi_env: Settings) -> None:
    emissions = simulated(200)
    await create_published_topics(kpi_env)
    async with Publisher(kpi_env) as publisher:
        for emission in emissions:
            await publisher.send(*emission)
    assert publisher.delivered == 200

    records = await consume_all(kpi_env, expected=200)
    assert len(records) == 200

    def body(payload: object) -> bytes:
        return payload if isinstance(payload, bytes) else orjson.dumps(payload)

    sent = [(kpi_env.topic(e.topic), e.key.encode(), body(e.payload)) for e in emissions]
    assert Counter((r.topic, r.key, r.value) for r in records) == Counter(sent)
    assert {r.topic for r in records} <= set(kpi_env.input_topics)
    # One entity, one partition: its lifecycle stays in order.
    partitions_of_key: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    for r in records:
        partitions_of_key[r.topic, r.key].add(r.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())
    # And each partition holds its messages in the order they were sent.
    received: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.offset):
        received[r.topic, r.partition].append((r.key, r.value))
    expected: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
    for topic, key, value in sent:
        (partition,) = partitions_of_key[topic, key]
        expected[topic, partition].append((key, value))
    assert received == expected
