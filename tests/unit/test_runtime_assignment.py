"""The runtime's own view of its assignment, and its stalls (issue 12), without Kafka.

aiokafka reports the previous partitions from ``assignment()`` until a rebalance has
finished; the runtime must act only on what the rebalance listener gave it.
"""

from __future__ import annotations

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from streams.config import Settings
from streams.runtime import Runtime
from streams.sinks.metrics import Metrics
from streams.sinks.redis_sink import RedisSink


def runtime() -> Runtime:
    settings = Settings(topic_prefix="t.", stall_seconds=5)
    rt = Runtime(settings, Metrics(CollectorRegistry()), RedisSink(settings.redis_url))
    counts = {t: 2 for t in settings.input_topics} | {settings.dead_letter_topic: 2}
    rt.configure(counts)
    return rt


def age(rt: Runtime, seconds: float) -> None:
    """As if the worker had last made progress, and last been idle, ``seconds`` ago."""
    rt.last_input_at -= seconds
    rt._settled_at -= seconds


async def test_assigned_partitions_wait_for_a_restore_and_revocation_forgets_them() -> None:
    rt = runtime()
    tps = [TopicPartition("t.invoices", 0), TopicPartition("t.hiring", 1)]
    assert rt.unrestored() == set()
    rt.on_assigned(tps)
    # Nothing to read is no reason to wait: both are due for a restore at once.
    assert rt.unrestored() == {("invoices", 0), ("hiring", 1)}
    committed = []

    async def commit() -> None:
        # Offsets are committed while the partitions still count as assigned.
        committed.append(rt.assigned)

    await rt.on_revoked(tps, commit=commit)
    assert committed == [frozenset(tps)]
    assert rt.assigned == frozenset()
    assert rt.unrestored() == set()


def test_work_waiting_without_progress_is_a_stall() -> None:
    rt = runtime()
    # Before the first assignment the worker waits for the group.
    age(rt, 6)
    problem = rt.stall()
    assert problem is not None and "waiting for the group to assign partitions" in problem
    rt.on_assigned([TopicPartition("t.incidents", 1)])
    problem = rt.stall()
    assert problem is not None and "1 assigned partitions not restored" in problem


def test_nothing_to_do_is_no_stall() -> None:
    rt = runtime()
    rt.on_assigned([])
    age(rt, 60)
    assert rt.stall() is None
    # Idle just now: work that begins to wait is judged from here.
    rt.on_assigned([TopicPartition("t.incidents", 1)])
    assert rt.stall() is None
