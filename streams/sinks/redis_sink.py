"""The Redis sink: newest-window hashes, closed-window history, catalog and change feed.

One MULTI/EXEC pipeline per batch. Every write is idempotent: a history member is replaced
(remove by score, then add) so a replayed close leaves exactly one, byte-identical member;
hashes are overwritten. Change-feed entries are only added when a hash's content changes.
A failed write is retried with backoff until Redis is back; the caller does not commit its
input progress before the write succeeded, so nothing is lost while Redis is away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streams.catalog import KpiDef
from streams.core.engine import WindowValue
from streams.core.windows import rfc3339

log = logging.getLogger(__name__)

CATALOG_KEY = "kpi:catalog"
#: Internal: per input topic, up to which event time windows were closed, written and
#: committed (Unix seconds). Written after the state commit of the batch that got there.
PROGRESS_KEY = "kpi:_progress"
CHANGES_KEY = "kpi:changes"
CHANGES_MAXLEN = 100_000
HISTORY_KEEP = 1000


def hash_key(kpi: str, window: str, scope: str) -> str:
    """``kpi:{name}:{window}:{scope}`` (SPEC section 3)."""
    return f"kpi:{kpi}:{window}:{scope}"


def format_value(value: float | None) -> str:
    """A KPI value as Redis text: shortest round-trip decimal, empty when undefined."""
    return "" if value is None else repr(float(value))


def history_member(wv: WindowValue) -> bytes:
    """The JSON member of a history sorted set; byte-identical for the same window."""
    return orjson.dumps(
        {
            "window_start": rfc3339(wv.start),
            "window_end": rfc3339(wv.end),
            "value": wv.value,
            "count": wv.count,
        }
    )


class RedisSink:
    """Writes engine results to Redis (set up / write batch / close)."""

    def __init__(
        self,
        url: str,
        *,
        history_keep: int = HISTORY_KEEP,
        on_error: Callable[[Exception], None] | None = None,
        on_ok: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.redis: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5
        )
        self.history_keep = history_keep
        self._on_error = on_error
        self._on_ok = on_ok
        self._clock = clock
        # Last content written per hash key, so unchanged hashes add no change-feed entry.
        self._last: dict[str, tuple[str, int, int, int, int]] = {}
        self.healthy = True

    async def setup(self, catalog: Sequence[KpiDef], currency: str) -> None:
        """Write the ``kpi:catalog`` hash."""
        mapping: dict[Any, Any] = {}
        for k in catalog:
            entry = k.catalog_entry()
            if entry["unit"] == "currency":
                entry["unit"] = currency
            mapping[k.name] = orjson.dumps(entry)
        await self._retrying(lambda pipe: pipe.hset(CATALOG_KEY, mapping=mapping))

    async def write(
        self,
        closed: Sequence[WindowValue],
        current: Sequence[WindowValue],
        progress: dict[str, float] | None = None,
    ) -> None:
        """Write one batch: history of closed windows, newest-window hashes, progress."""
        if not closed and not current and not progress:
            return
        updated_at = rfc3339(self._clock())
        changes: list[tuple[str, tuple[str, int, int, int, int], WindowValue]] = []
        for wv in current:
            key = hash_key(wv.kpi, wv.window, wv.scope)
            content = (format_value(wv.value), wv.start, wv.end, wv.count, int(wv.final))
            if self._last.get(key) != content:
                changes.append((key, content, wv))

        def fill(pipe: aioredis.client.Pipeline) -> None:
            if progress:
                pipe.hset(PROGRESS_KEY, mapping={t: repr(v) for t, v in progress.items()})
            for wv in closed:
                hist = hash_key(wv.kpi, wv.window, wv.scope) + ":history"
                pipe.zremrangebyscore(hist, wv.start, wv.start)
                pipe.zadd(hist, {history_member(wv): wv.start})
                pipe.zremrangebyrank(hist, 0, -(self.history_keep + 1))
            for key, (value, start, end, count, final), wv in changes:
                pipe.hset(
                    key,
                    mapping={
                        "value": value,
                        "window_start": rfc3339(start),
                        "window_end": rfc3339(end),
                        "count": count,
                        "final": final,
                        "updated_at": updated_at,
                    },
                )
                pipe.xadd(
                    CHANGES_KEY,
                    {
                        "name": wv.kpi,
                        "window": wv.window,
                        "scope": wv.scope,
                        "value": value,
                        "window_start": rfc3339(start),
                        "window_end": rfc3339(end),
                        "final": final,
                    },
                    maxlen=CHANGES_MAXLEN,
                    approximate=True,
                )

        await self._retrying(fill)
        for key, content, _wv in changes:
            self._last[key] = content

    async def _retrying(self, fill: Callable[[aioredis.client.Pipeline], object]) -> None:
        delay = 0.1
        while True:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    fill(pipe)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self.healthy = False
                if self._on_error is not None:
                    self._on_error(exc)
                log.warning("Redis write failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not self.healthy:
                log.info("Redis writes succeed again")
            self.healthy = True
            if self._on_ok is not None:
                self._on_ok()
            return

    async def read_progress(self) -> dict[str, float]:
        """The closing progress per topic recorded by the topics' leaders."""
        raw = await self.redis.hgetall(PROGRESS_KEY)
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()
