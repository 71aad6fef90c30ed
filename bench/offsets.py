"""A consumer group's committed offsets against the end of its input partitions.

The "done" signal of a worker run (bench/runs.py ``run_worker``): once the group has
committed the end offset of every non-empty input partition, every message went through a
completed batch (the worker commits an input offset only after the batch that consumed it
wrote Redis and committed its state), whoever processed it and however often a rebalance
made a message be handled twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


class GroupOffsets:
    """Committed offsets of ``group`` on ``topics``, against their end offsets read once.

    A synchronous facade over aiokafka (its own event loop, one admin client), for the
    bench's polling loop. The topics must be written before it is created; partitions that
    are empty or do not exist yet are left out (no one commits an offset there).
    """

    def __init__(self, bootstrap: str, group: str, topics: list[str]) -> None:
        self.group = group
        self._loop = asyncio.new_event_loop()
        self._admin: AIOKafkaAdminClient | None = None
        try:
            self._admin = self._run(_admin(bootstrap))
            self.end = self._run(_end_offsets(self._admin, bootstrap, topics))
        except BaseException:
            self.close()
            raise

    @property
    def total(self) -> int:
        """Messages in the input partitions (their end offsets; the topics start at 0)."""
        return sum(self.end.values())

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def committed(self) -> dict[TopicPartition, int]:
        """The group's committed offset of each input partition (0 when none yet)."""
        assert self._admin is not None
        got = self._run(
            self._admin.list_consumer_group_offsets(self.group, partitions=list(self.end))
        )
        return {tp: max(0, got[tp].offset) if tp in got else 0 for tp in self.end}

    def remaining(self) -> int:
        """Messages after the group's committed offsets: 0 when the group consumed all."""
        committed = self.committed()
        return sum(max(0, end - committed[tp]) for tp, end in self.end.items())

    def close(self) -> None:
        """Stop the admin client and the loop."""
        if self._admin is not None:
            self._run(self._admin.close())
            self._admin = None
        self._loop.close()


async def _end_offsets(
    admin: AIOKafkaAdminClient, bootstrap: str, topics: list[str]
) -> dict[TopicPartition, int]:
    # Only topics that exist (a metadata request for the others might create them).
    existing = set(await admin.list_topics())
    described = await admin.describe_topics([t for t in topics if t in existing])
    tps = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp: end for tp, end in ends.items() if end > 0}


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    # Created in the loop it will run in (aiokafka binds its client to the running loop).
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin
