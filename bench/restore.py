"""Restart time: how long a worker needs to restore a large state from its changelog.

    .venv/bin/python -m bench.restore            # 1,000,000 open entities (BENCH_ENTITIES)

Builds the state one input partition would hold after one million invoices were received
and none decided (one entity key each, plus their applied ids and panes), commits it to a
changelog topic on a dedicated local stack as the worker does, then times
``read_partitions`` + ``PartitionState.restore`` + ``Engine.assign``: the work of a worker's
restore (``streams/restore.py``) but the dead-letter read-back. Reports the median of three
restores, records per second and the restored state's resident size. The stack is stopped
at the end.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import sys
import time
from typing import TYPE_CHECKING

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from streams import engine_build
from streams.config import Settings
from tooling.stack import free_port, stack_down, stack_up

# The engine's modules are imported in the functions: main() chooses its build first.
if TYPE_CHECKING:
    from streams.core.state import PartitionState

T0 = 1_767_225_600.0


def build_state(entities: int) -> PartitionState:
    """One partition with ``entities`` open AP invoices, through the real engine."""
    from streams.core.engine import Engine
    from streams.core.records import Message

    engine = Engine(
        partitions={"invoices": 1, "hiring": 1, "incidents": 1},
        grace_s=3600,
        currency="USD",
        clock=lambda: T0 + 10 * 86400,
    )
    batch = []
    for i in range(entities):
        event = {
            "event_id": f"e{i}",
            "type": "invoice.received",
            "occurred_at": f"2026-01-0{1 + (i * 5) // entities}T00:00:00Z",
            "invoice_id": f"inv-{i}",
            "amount": 100.0,
            "currency": "USD",
            "department": f"d{i % 20}",
            "vendor_id": "v",
        }
        batch.append(Message("invoices", 0, i, orjson.dumps(event)))
        if len(batch) == 5000:
            engine.process(batch)
            batch = []
    engine.process(batch)
    return engine.states[("invoices", 0)]


async def publish_changelog(bootstrap: str, topic: str, state: PartitionState) -> int:
    """Commit the state into a fresh compacted changelog topic, as the worker would."""
    from streams.topics import ensure_topics

    settings = Settings(kafka_bootstrap=bootstrap, partitions=1)
    await ensure_topics(settings, {topic: {"cleanup.policy": "compact"}})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        records = state.commit()
        for record in records:
            await producer.send(topic, record.value, key=record.key, partition=0)
        await producer.flush()
        return len(records)
    finally:
        await producer.stop()


async def restore_once(bootstrap: str, topic: str) -> tuple[float, int]:
    """One restore, timed: read the changelog, rebuild the state, index it."""
    from streams.core.engine import Engine
    from streams.core.state import PartitionState
    from streams.kafka import read_partitions

    started = time.perf_counter()
    tp = TopicPartition(topic, 0)
    records = await read_partitions(Settings(kafka_bootstrap=bootstrap), [tp])
    state = PartitionState.restore("invoices", 0, [(k, v) for k, v in records[tp] if k])
    engine = Engine(
        partitions={"invoices": 1, "hiring": 1, "incidents": 1},
        grace_s=3600,
        currency="USD",
        clock=time.time,
    )
    engine.assign(state)
    return time.perf_counter() - started, len(state.data)


def main() -> None:
    """Build, publish, restore three times, report the median."""
    engine_build.select()
    from streams.worker import tune_gc

    tune_gc()
    entities = int(os.environ.get("BENCH_ENTITIES", "1000000").replace("_", ""))
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=os.environ.get("BENCH_RESTORE_STACK", ".stack-bench-restore"),
    )
    print(f"restore: building a partition state with {entities:,} open entities")
    started = time.perf_counter()
    state = build_state(entities)
    print(f"restore: built {len(state.data):,} keys in {time.perf_counter() - started:.1f} s")
    stack_up(settings)
    try:
        topic = "bench-restore-changelog"
        n = asyncio.run(publish_changelog(settings.kafka_bootstrap, topic, state))
        del state
        times = []
        keys = 0
        for _ in range(3):
            seconds, keys = asyncio.run(restore_once(settings.kafka_bootstrap, topic))
            times.append(seconds)
        median = statistics.median(times)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"restore: entities={entities} records={n} keys={keys} "
            f"median_s={median:.2f} records_per_s={n / median:.0f} "
            f"runs_s={','.join(f'{t:.2f}' for t in times)} peak_rss_mb={rss_mb:.0f}"
        )
    finally:
        stack_down(settings)


if __name__ == "__main__":
    sys.exit(main())
