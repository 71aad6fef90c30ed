"""The closing progress in Redis: per input topic, how far its leader closed and committed.

``<prefix>:_progress`` (``kpi:_progress`` by default) maps each topic to the event time
(Unix seconds) up to which its windows were closed, written *and* their state committed.
The checkpoint writes it only after the batch's changelog is durable: a worker that takes
over the lead resumes from it and must find every window up to it closed in the state it
restores (docs/ARCHITECTURE.md). Every worker reads it before a batch, to prune what the
leaders have closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from streams.redis_client import RedisConnection
from streams.redis_keys import RedisKeys


class ProgressStore:
    """Reads and writes the ``<prefix>:_progress`` hash (internal: not part of the contract)."""

    def __init__(self, redis: RedisConnection, keys: RedisKeys) -> None:
        self._redis = redis
        self._key = keys.progress
        # What this worker last wrote: an unchanged progress is not written again.
        self._written: dict[str, float] = {}
        # A write and a ``forget_written`` never interleave (the Redis sink's repair runs
        # beside the batches' writes).
        self._lock = asyncio.Lock()

    async def read(self) -> dict[str, float]:
        """The closing progress per topic, as the topics' leaders last wrote it.

        Retried like the writes: a worker that does not lead every topic reads it before
        each batch, and a Redis outage must hold it up, not stop it.
        """
        raw: dict[Any, Any] = await self._redis.retried(
            lambda: self._redis.client.hgetall(self._key), "progress read"
        )
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def write(self, progress: Mapping[str, float]) -> None:
        """Record the closing progress of the topics led; nothing if it did not change."""
        if not progress:
            return
        async with self._lock:
            if progress == self._written:
                return
            mapping = {topic: repr(value) for topic, value in progress.items()}
            await self._redis.retried(
                lambda: self._redis.client.hset(self._key, mapping=mapping),  # type: ignore[arg-type]
                "progress write",
            )
            self._written = dict(progress)

    async def forget_written(self) -> None:
        """Write the progress next time, changed or not (Redis lost it)."""
        async with self._lock:
            self._written = {}
