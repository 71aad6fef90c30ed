"""The worker's own view of its assignment, and its stalls (issue 12), without Kafka.

aiokafka reports the previous partitions from ``assignment()`` until a rebalance has
finished; the worker must act only on what the rebalance listener gave it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from streams.app import WorkerParts, create_app
from streams.config import Settings
from streams.core.records import BatchResult
from streams.core.state import PartitionState


def worker() -> WorkerParts:
    settings = Settings(topic_prefix="t.", stall_seconds=5)
    counts = {t: 2 for t in settings.input_topics} | {settings.dead_letter_topic: 2}
    _app, parts = create_app(settings, counts)
    return parts


def age(w: WorkerParts, seconds: float) -> None:
    """As if the worker had last made progress, and last been idle, ``seconds`` ago."""
    w.checkpoint.stats.last_input_at -= seconds
    w.watchdog._settled_at -= seconds


async def test_assigned_partitions_wait_for_a_restore_and_revocation_forgets_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = worker()
    tps = [TopicPartition("t.invoices", 0), TopicPartition("t.hiring", 1)]
    assert w.runtime.unrestored() == set()
    w.member.assign(tps)
    # Nothing to read is no reason to wait: both are due for a restore at once.
    assert w.runtime.unrestored() == {("invoices", 0), ("hiring", 1)}
    committed = []

    async def commit(processed: Mapping[TopicPartition, int]) -> None:
        # Offsets are committed while the partitions still count as assigned.
        committed.append(w.member.assigned)

    monkeypatch.setattr(w.member, "commit", commit)
    await w.runtime.revoke(frozenset(tps))
    assert committed == [frozenset(tps)]
    assert w.member.assigned == frozenset()
    assert w.member.rejoining
    assert w.runtime.unrestored() == set()


async def test_nothing_is_committed_while_the_member_rejoins() -> None:
    w = worker()
    kept, revoked = TopicPartition("t.invoices", 0), TopicPartition("t.hiring", 0)
    w.member.assign([kept, revoked])
    w.member.revoke([revoked])
    assert w.member.assigned == {kept}
    # The client is not even started: a commit would fail loudly.
    await w.member.commit({kept: 41})


def test_work_waiting_without_progress_is_a_stall() -> None:
    w = worker()
    # Before the first assignment the worker waits for the group.
    age(w, 6)
    problem = w.watchdog.stall()
    assert problem is not None and "waiting for the group to assign partitions" in problem
    w.member.assign([TopicPartition("t.incidents", 1)])
    problem = w.watchdog.stall()
    assert problem is not None and "1 assigned partitions not restored" in problem


def test_nothing_to_do_is_no_stall() -> None:
    w = worker()
    w.member.assign([])
    age(w, 60)
    assert w.watchdog.stall() is None
    # Idle just now: work that begins to wait is judged from here.
    w.member.assign([TopicPartition("t.incidents", 1)])
    assert w.watchdog.stall() is None


async def test_a_tick_right_after_a_batch_of_input_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The batch closed, read and pruned already: a tick within ``quiet_s`` of it would
    # repeat that and hold up the writes. Later, or with no batch yet, it does its work.
    w = worker()
    tp = TopicPartition("t.invoices", 0)
    w.member.assign([tp])
    w.engine.assign(PartitionState("invoices", 0))
    passed: list[int] = []

    async def pass_on(result: BatchResult, fetched: Mapping[TopicPartition, Any]) -> None:
        passed.append(sum(len(records) for records in fetched.values()))

    async def no_progress() -> None:
        return None

    monkeypatch.setattr(w.runtime, "_pass_on", pass_on)
    monkeypatch.setattr(w.runtime, "_refresh_progress", no_progress)
    await w.runtime.tick(quiet_s=60.0)
    assert passed == [0]  # no batch yet
    record = SimpleNamespace(topic="t.invoices", partition=0, offset=0, value=b"{}", key=None)
    await w.runtime.handle({tp: [record]})
    assert passed == [0, 1]
    await w.runtime.tick(quiet_s=60.0)
    assert passed == [0, 1]  # skipped: the batch was just now
    await w.runtime.tick(quiet_s=0.0)
    assert passed == [0, 1, 0]
