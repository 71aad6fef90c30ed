"""The Redis sink: newest-window hashes, closed-window history, catalog and change feed.

One atomic write per batch: a Lua script (``WRITE_BATCH``) that gets the whole batch as
flat keys and arguments, inside one MULTI/EXEC (a batch too large for one command is split
into several script calls within the same transaction). A batch touches up to thousands of
hashes; sent as separate commands, redis-py's per-command packing and reply parsing cost
more CPU than the engine. The script declares every key it touches (``KEYS``), so Redis
checks them against the user's ACL key patterns before it runs, and a cluster-aware proxy
sees them. Every write is idempotent: a history member is replaced (remove
by score, then add) so a replayed close leaves exactly one, byte-identical member; hashes
are overwritten. Change-feed entries are only added when a hash's content changes.
A failed write is retried with backoff until Redis is back; the caller does not commit its
input progress before the write succeeded, so nothing is lost while Redis is away.

Redis losing the product's keys (restarted without persistence, or flushed) is this sink's
to notice and repair: it writes the catalog, every newest window it published and (through
the progress store) the closing progress again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streams.core.records import WindowValue
from streams.core.windows import rfc3339
from streams.kpis.base import Kpi
from streams.progress import ProgressStore
from streams.redis_client import RedisConnection
from streams.redis_keys import RedisKeys
from streams.sinks.base import SinkBatch

log = logging.getLogger(__name__)

CHANGES_MAXLEN = 100_000
HISTORY_KEEP = 1000
#: Most keys and arguments per script call (Redis accepts up to 1,048,576 per command).
MAX_ARGS = 200_000

#: How often the sink checks whether Redis lost the product's keys (seconds).
LOSS_CHECK_S = 1.0

#: KEYS: the change feed, the history keys of the closed windows, the hashes that changed
#: (those of the other KPIs first, then those of the duration KPIs).
#: ARGV: history_keep, changes maxlen, updated_at, the number of history keys, the number
#: of other KPIs' hashes, then per history key (score, member), then per hash (value,
#: window_start, window_end, label, count, final, name, window, scope), plus for a duration
#: KPI's hash (p50, p90, p99, worst). Commands run in key order, as the pipeline did. The
#: change feed keeps version 1's fields (SPEC section 3): no label; a duration KPI's entry
#: adds the percentiles (not ``worst``: up to ten ids per entry would make the capped feed
#: hold far fewer changes; a consumer reads them from the hash).
WRITE_BATCH = """
local keep = tonumber(ARGV[1])
local changes, maxlen, updated_at = KEYS[1], ARGV[2], ARGV[3]
local last_history = 1 + tonumber(ARGV[4])
local last_plain = last_history + tonumber(ARGV[5])
local i = 6
for k = 2, last_history do
  local key, score = KEYS[k], ARGV[i]
  redis.call('ZREMRANGEBYSCORE', key, score, score)
  redis.call('ZADD', key, score, ARGV[i + 1])
  redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  i = i + 2
end
for k = last_history + 1, last_plain do
  local value, ws, we, final = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 5]
  redis.call('HSET', KEYS[k], 'value', value, 'window_start', ws, 'window_end', we,
    'label', ARGV[i + 3], 'count', ARGV[i + 4], 'final', final, 'updated_at', updated_at)
  redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'name', ARGV[i + 6],
    'window', ARGV[i + 7], 'scope', ARGV[i + 8], 'value', value, 'window_start', ws,
    'window_end', we, 'final', final)
  i = i + 9
end
for k = last_plain + 1, #KEYS do
  local value, ws, we, final = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 5]
  local p50, p90, p99 = ARGV[i + 9], ARGV[i + 10], ARGV[i + 11]
  redis.call('HSET', KEYS[k], 'value', value, 'window_start', ws, 'window_end', we,
    'label', ARGV[i + 3], 'count', ARGV[i + 4], 'final', final, 'updated_at', updated_at,
    'p50', p50, 'p90', p90, 'p99', p99, 'worst', ARGV[i + 12])
  redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'name', ARGV[i + 6],
    'window', ARGV[i + 7], 'scope', ARGV[i + 8], 'value', value, 'window_start', ws,
    'window_end', we, 'final', final, 'p50', p50, 'p90', p90, 'p99', p99)
  i = i + 13
end
return 0
"""

#: Arguments per closed window (score, member), per hash of a KPI without a distribution
#: and per hash of a duration KPI (``WRITE_BATCH``).
HISTORY_ARGS, PLAIN_ARGS, DISTRIBUTION_ARGS = 2, 9, 13

#: One ``WRITE_BATCH`` call: its keys and its arguments.
ScriptCall = tuple[list[str], list[str | bytes]]


def format_value(value: float | None) -> str:
    """A KPI value as Redis text: shortest round-trip decimal, empty when undefined."""
    return "" if value is None else repr(float(value))


def worst_json(worst: Sequence[tuple[str, float]]) -> list[dict[str, object]]:
    """A window's worst entities as the contract spells them: ``[{"id", "seconds"}]``."""
    return [{"id": entity, "seconds": seconds} for entity, seconds in worst]


def distribution_fields(wv: WindowValue) -> dict[str, object]:
    """A duration KPI's ``p50, p90, p99`` (numbers or None) and ``worst`` as JSON objects.

    Empty for a KPI without a distribution (``worst`` None): its records stay version 1's.
    """
    if wv.worst is None:
        return {}
    return {"p50": wv.p50, "p90": wv.p90, "p99": wv.p99, "worst": worst_json(wv.worst)}


def history_member(wv: WindowValue) -> bytes:
    """The JSON member of a history sorted set; byte-identical for the same window.

    ``{window_start, window_end, label, value, count}`` in this order (SPEC section 3); a
    duration KPI's (``worst`` not None) adds ``p50, p90, p99`` (numbers or null) and
    ``worst`` (``[{"id", "seconds"}]``).
    """
    member: dict[str, object] = {
        "window_start": rfc3339(wv.start),
        "window_end": rfc3339(wv.end),
        "label": wv.label,
        "value": wv.value,
        "count": wv.count,
        **distribution_fields(wv),
    }
    return orjson.dumps(member)


#: What a newest-window hash holds, as written: value text, start, end, label, count,
#: final, then the distribution (p50, p90, p99, worst: all None for a KPI without one).
Content = tuple[
    str,
    int,
    int,
    str,
    int,
    int,
    float | None,
    float | None,
    float | None,
    tuple[tuple[str, float], ...] | None,
]


class RedisSink:
    """Writes each batch's window values to Redis (a ``Sink``), and repairs what Redis lost."""

    name = "Redis"

    def __init__(
        self,
        redis: RedisConnection,
        progress: ProgressStore,
        keys: RedisKeys,
        *,
        catalog: Sequence[Kpi],
        currency: str,
        history_keep: int = HISTORY_KEEP,
        clock: Callable[[], float] = time.time,
        on_lost: Callable[[], None] | None = None,
        loss_check_s: float = LOSS_CHECK_S,
    ) -> None:
        self._redis = redis
        self._progress = progress
        self._keys = keys
        self._catalog = tuple(catalog)
        self._currency = currency
        self.history_keep = history_keep
        self._clock = clock
        # Observer of each data loss found (the worker's metrics).
        self._on_lost = on_lost
        self._loss_check_s = loss_check_s
        self._write_batch = redis.client.register_script(WRITE_BATCH)
        # Last content written per hash key, so unchanged hashes add no change-feed entry.
        self._last: dict[str, Content] = {}
        # The newest value per hash key of the KPIs this worker publishes: what a repair
        # writes again.
        self._newest: dict[str, WindowValue] = {}
        # Set once the catalog was written: from then on its absence means data loss.
        self._catalog_written = False
        # Batches and repairs are written one at a time, in the order they come.
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        # Set by ``close``: the watch ends at its next turn even if the cancellation gets
        # lost on its way through the Redis client (one integration run waited ten minutes
        # in ``close`` for a watch that went on checking: the cancel had not ended it).
        self._closing = False

    async def start(self) -> None:
        """Write the catalog, then watch for data loss; in the background (Redis may be away)."""
        self._watch = asyncio.ensure_future(self._watch_for_loss())

    async def close(self) -> None:
        """Stop watching (the connection belongs to whoever made it)."""
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def write(self, batch: SinkBatch) -> None:
        """Write one batch: history of closed windows, newest-window hashes."""
        async with self._lock:
            if batch.retired:
                self._newest = {
                    key: wv for key, wv in self._newest.items() if wv.kpi not in batch.retired
                }
            await self._write(batch.closed, batch.current)

    async def write_catalog(self) -> None:
        """Write the catalog hash (``<prefix>:catalog``)."""
        mapping: dict[Any, Any] = {}
        for k in self._catalog:
            mapping[k.name] = orjson.dumps(k.catalog_entry(self._currency))

        async def fill(pipe: aioredis.client.Pipeline) -> None:
            pipe.hset(self._keys.catalog, mapping=mapping)

        await self._redis.transaction(fill)
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
            return not await self._redis.client.exists(self._keys.catalog)
        except (RedisError, OSError):
            return False

    async def _watch_for_loss(self) -> None:
        try:
            await self.write_catalog()
            while not self._closing:
                await asyncio.sleep(self._loss_check_s)
                if await self.lost_data():
                    await self._repair()
        except Exception:  # noqa: BLE001 - the batches' own writes go on regardless
            log.exception("the Redis sink's catalog write or data-loss watch failed")

    async def _repair(self) -> None:
        """Redis lost our keys: write the catalog, every newest window and the progress again.

        The history of windows closed before the loss is not in the worker any more (their
        panes were folded away once written) and is not rewritten; windows closed from now
        on are written as always. Run Redis with persistence (AOF) to keep it.
        """
        async with self._lock:
            log.warning(
                "Redis lost the product's keys (%s is gone: restarted without "
                "persistence, or flushed); writing the catalog, %d newest windows and the "
                "closing progress again. History written before the loss is gone.",
                self._keys.catalog,
                len(self._newest),
            )
            if self._on_lost is not None:
                self._on_lost()
            await self.write_catalog()
            self._last.clear()
            await self._write([], list(self._newest.values()))
            # Written again by the next batch (or tick) of a topic we lead: only after that
            # batch's state commit (see ``streams/progress.py``).
            await self._progress.forget_written()

    async def _write(self, closed: Sequence[WindowValue], current: Sequence[WindowValue]) -> None:
        if not closed and not current:
            return
        updated_at = rfc3339(self._clock())
        newest: list[tuple[str, WindowValue]] = []
        changes: list[tuple[str, Content, WindowValue]] = []
        newest_key = self._keys.newest
        for wv in current:
            key = newest_key(wv.kpi, wv.window, wv.scope)
            newest.append((key, wv))
            content: Content = (
                format_value(wv.value),
                wv.start,
                wv.end,
                wv.label,
                wv.count,
                int(wv.final),
                wv.p50,
                wv.p90,
                wv.p99,
                wv.worst,
            )
            if self._last.get(key) != content:
                changes.append((key, content, wv))

        calls = self._script_calls(closed, changes, updated_at)

        async def fill(pipe: aioredis.client.Pipeline) -> None:
            for keys, args in calls:
                await self._write_batch(keys=keys, args=args, client=pipe)

        await self._redis.transaction(fill)
        for key, content, _wv in changes:
            self._last[key] = content
        self._newest.update(newest)

    def _script_calls(
        self,
        closed: Sequence[WindowValue],
        changes: Sequence[tuple[str, Content, WindowValue]],
        updated_at: str,
    ) -> list[ScriptCall]:
        """The batch as ``WRITE_BATCH`` calls of at most ``MAX_ARGS`` keys and arguments each.

        Per closed window its key and ``HISTORY_ARGS``; per changed hash its key and
        ``PLAIN_ARGS``, or ``DISTRIBUTION_ARGS`` for a duration KPI's (``worst`` not None).
        """
        history_key = self._keys.history
        history_keys = [history_key(wv.kpi, wv.window, wv.scope) for wv in closed]
        history_args: list[str | bytes] = []
        for wv in closed:
            history_args += (repr(float(wv.start)), history_member(wv))
        plain_keys: list[str] = []
        plain_args: list[str | bytes] = []
        dist_keys: list[str] = []
        dist_args: list[str | bytes] = []
        for key, (value, start, end, label, count, final, p50, p90, p99, worst), wv in changes:
            args: list[str | bytes] = [
                value,
                rfc3339(start),
                rfc3339(end),
                label,
                str(count),
                str(final),
                wv.kpi,
                wv.window,
                wv.scope,
            ]
            if worst is None:
                plain_keys.append(key)
                plain_args += args
            else:
                # Only the duration KPIs pay for JSON here, once per changed hash.
                dist_keys.append(key)
                dist_args += args
                dist_args += (
                    format_value(p50),
                    format_value(p90),
                    format_value(p99),
                    orjson.dumps(worst_json(worst)),
                )
        groups = (
            (history_keys, history_args, HISTORY_ARGS),
            (plain_keys, plain_args, PLAIN_ARGS),
            (dist_keys, dist_args, DISTRIBUTION_ARGS),
        )
        head: list[str | bytes] = [str(self.history_keep), str(CHANGES_MAXLEN), updated_at]
        calls: list[ScriptCall] = []
        done = [0, 0, 0]
        while True:  # at least one call
            budget = MAX_ARGS
            keys = [self._keys.changes]
            taken: list[str] = []
            body: list[str | bytes] = []
            for g, (group_keys, group_args, per) in enumerate(groups):
                first = done[g]
                last = min(len(group_keys), first + max(0, budget // (per + 1)))
                budget -= (per + 1) * (last - first)
                keys += group_keys[first:last]
                body += group_args[per * first : per * last]
                taken.append(str(last - first))
                done[g] = last
            calls.append((keys, [*head, taken[0], taken[1], *body]))
            if all(n == len(group[0]) for n, group in zip(done, groups, strict=True)):
                return calls
