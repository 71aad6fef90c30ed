"""The Redis sink: newest-window hashes, closed-window history, catalog and change feed.

One atomic write per batch: a Lua script (``WRITE_BATCH``) that gets the whole batch as
flat arguments, inside one MULTI/EXEC (a batch too large for one command is split into
several script calls within the same transaction). A batch touches up to thousands of
hashes; sent as separate commands, redis-py's per-command packing and reply parsing cost
more CPU than the engine. Every write is idempotent: a history member is replaced (remove
by score, then add) so a replayed close leaves exactly one, byte-identical member; hashes
are overwritten. Change-feed entries are only added when a hash's content changes.
A failed write is retried with backoff until Redis is back; the caller does not commit its
input progress before the write succeeded, so nothing is lost while Redis is away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streams.core.records import WindowValue
from streams.core.windows import rfc3339
from streams.kpis.base import Kpi

log = logging.getLogger(__name__)
_T = TypeVar("_T")

CATALOG_KEY = "kpi:catalog"
#: Internal: per input topic, up to which event time windows were closed, written and
#: committed (Unix seconds). Written after the state commit of the batch that got there.
PROGRESS_KEY = "kpi:_progress"
CHANGES_KEY = "kpi:changes"
CHANGES_MAXLEN = 100_000
HISTORY_KEEP = 1000
#: Most arguments per script call (Redis accepts up to 1,048,576 per command).
MAX_ARGS = 200_000

#: ARGV: history_keep, changes key, changes maxlen, updated_at, then sections, each a
#: count followed by its items: progress (field, value), closed windows (history key,
#: score, member), changed hashes (key, value, window_start, window_end, count, final,
#: name, window, scope). Commands run in argument order, as the pipeline did.
WRITE_BATCH = """
local keep = tonumber(ARGV[1])
local changes, maxlen, updated_at = ARGV[2], ARGV[3], ARGV[4]
local i = 5
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key, score = ARGV[i], ARGV[i + 1]
  redis.call('ZREMRANGEBYSCORE', key, score, score)
  redis.call('ZADD', key, score, ARGV[i + 2])
  redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local value, ws, we, final = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 5]
  redis.call('HSET', ARGV[i], 'value', value, 'window_start', ws, 'window_end', we,
    'count', ARGV[i + 4], 'final', final, 'updated_at', updated_at)
  redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'name', ARGV[i + 6],
    'window', ARGV[i + 7], 'scope', ARGV[i + 8], 'value', value, 'window_start', ws,
    'window_end', we, 'final', final)
  i = i + 9
end
return 0
"""


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
        self._write_batch = self.redis.register_script(WRITE_BATCH)
        self.healthy = True
        # Set once the catalog was written: from then on its absence means data loss.
        self._catalog_written = False

    async def setup(self, catalog: Sequence[Kpi], currency: str) -> None:
        """Write the ``kpi:catalog`` hash."""
        mapping: dict[Any, Any] = {}
        for k in catalog:
            mapping[k.name] = orjson.dumps(k.catalog_entry(currency))

        async def fill(pipe: aioredis.client.Pipeline) -> None:
            pipe.hset(CATALOG_KEY, mapping=mapping)

        await self._retrying(fill)
        self._catalog_written = True

    async def lost_data(self) -> bool:
        """Whether Redis lost what was written (restarted without persistence, or flushed).

        The catalog is written once at start and never removed, so its absence after that
        means the keys are gone. False while Redis is unreachable (that is an outage, not a
        loss: the writes are retried) and before the catalog was first written.
        """
        if not self._catalog_written:
            return False
        try:
            return not await self.redis.exists(CATALOG_KEY)
        except (RedisError, OSError):
            return False

    def forget_written(self) -> None:
        """Write every newest-window hash next time, changed or not (after a data loss)."""
        self._last.clear()

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

        calls = self._script_calls(closed, changes, progress or {}, updated_at)

        async def fill(pipe: aioredis.client.Pipeline) -> None:
            for args in calls:
                await self._write_batch(keys=[PROGRESS_KEY], args=args, client=pipe)

        await self._retrying(fill)
        for key, content, _wv in changes:
            self._last[key] = content

    def _script_calls(
        self,
        closed: Sequence[WindowValue],
        changes: Sequence[tuple[str, tuple[str, int, int, int, int], WindowValue]],
        progress: dict[str, float],
        updated_at: str,
    ) -> list[list[str | bytes]]:
        """The batch as ``WRITE_BATCH`` argument lists of at most ``MAX_ARGS`` each."""
        head: list[str | bytes] = [
            str(self.history_keep),
            CHANGES_KEY,
            str(CHANGES_MAXLEN),
            updated_at,
        ]
        progress_items: list[str | bytes] = []
        for t, v in progress.items():
            progress_items += (t, repr(v))
        history: list[list[str | bytes]] = [
            [
                hash_key(wv.kpi, wv.window, wv.scope) + ":history",
                repr(float(wv.start)),
                history_member(wv),
            ]
            for wv in closed
        ]
        hashes: list[list[str | bytes]] = [
            [
                key,
                value,
                rfc3339(start),
                rfc3339(end),
                str(count),
                str(final),
                wv.kpi,
                wv.window,
                wv.scope,
            ]
            for key, (value, start, end, count, final), wv in changes
        ]
        calls = []
        i = j = 0
        first = True
        while first or i < len(history) or j < len(hashes):
            budget = MAX_ARGS
            args = [*head, str(len(progress_items) // 2 if first else 0)]
            if first:
                args += progress_items
                budget -= len(progress_items)
            k = min(len(history), i + max(0, budget // 3))
            args.append(str(k - i))
            for item in history[i:k]:
                args += item
            budget -= 3 * (k - i)
            i = k
            m = min(len(hashes), j + max(0, budget // 9))
            args.append(str(m - j))
            for item in hashes[j:m]:
                args += item
            j = m
            calls.append(args)
            first = False
        return calls

    async def _retrying(self, fill: Callable[[aioredis.client.Pipeline], Awaitable[None]]) -> None:
        async def transaction() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                await fill(pipe)
                await pipe.execute()

        await self._retried(transaction, "write")

    async def _retried(self, call: Callable[[], Awaitable[_T]], what: str) -> _T:
        """``call()``, again with backoff (0.1 s doubling to 5 s) until Redis answers."""
        delay = 0.1
        while True:
            try:
                result = await call()
            except (RedisError, OSError) as exc:
                self.healthy = False
                if self._on_error is not None:
                    self._on_error(exc)
                log.warning("Redis %s failed (%s); retrying in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not self.healthy:
                log.info("Redis answers again")
            self.healthy = True
            if self._on_ok is not None:
                self._on_ok()
            return result

    async def read_progress(self) -> dict[str, float]:
        """The closing progress per topic recorded by the topics' leaders.

        Retried like the writes: a worker that does not lead every topic reads it before
        each batch, and a Redis outage must hold it up, not stop it.
        """
        raw: dict[Any, Any] = await self._retried(
            lambda: self.redis.hgetall(PROGRESS_KEY), "progress read"
        )
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()
