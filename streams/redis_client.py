"""The worker's Redis connection, shared by the Redis sink and the progress store.

Every call is retried with backoff until Redis answers: the worker does not commit its input
offsets before its writes succeeded, so nothing is lost while Redis is away, and a read that
raised would stop the worker. Whether the last call succeeded is the worker's Redis health.
Only at start is an unreachable Redis an error (``check_reachable``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.errors import UnavailableError
from streams.config import shown_url
from streams.redis_connect import connect

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Backoff between attempts: from the first delay, doubling up to the last (seconds).
FIRST_RETRY_S = 0.1
LAST_RETRY_S = 5.0
#: How long the worker's start waits for Redis to answer once.
START_TIMEOUT_S = 10.0


class RedisConnection:
    """A Redis client whose calls are retried until they succeed."""

    def __init__(
        self,
        url: str,
        *,
        on_error: Callable[[Exception], None] | None = None,
        on_ok: Callable[[], None] | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        # options: TLS (``Settings.redis_options``).
        self.client = connect(url, socket_timeout=10, socket_connect_timeout=5, **options)
        # Observers of each failed and each successful call (the worker's metrics).
        self._on_error = on_error
        self._on_ok = on_ok
        self._healthy = True

    @property
    def healthy(self) -> bool:
        """Whether the last call succeeded."""
        return self._healthy

    async def retried(self, call: Callable[[], Awaitable[_T]], what: str) -> _T:
        """``call()``, again with backoff (0.1 s doubling to 5 s) until Redis answers."""
        delay = FIRST_RETRY_S
        while True:
            try:
                result = await call()
            except (RedisError, OSError) as exc:
                self._healthy = False
                if self._on_error is not None:
                    self._on_error(exc)
                log.warning("Redis %s failed (%s); retrying in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LAST_RETRY_S)
                continue
            if not self._healthy:
                log.info("Redis answers again")
            self._healthy = True
            if self._on_ok is not None:
                self._on_ok()
            return result

    async def transaction(
        self, fill: Callable[[aioredis.client.Pipeline], Awaitable[None]], what: str = "write"
    ) -> None:
        """Run the commands ``fill`` queues in one MULTI/EXEC, retried until it succeeds."""

        async def transaction() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                await fill(pipe)
                await pipe.execute()

        await self.retried(transaction, what)

    async def ping(self, timeout_s: float) -> str | None:
        """One PING, not retried: None when Redis answered within ``timeout_s``, else why not.

        For ``/readyz``; it leaves ``healthy`` (the writes' health) alone.
        """
        try:
            await asyncio.wait_for(self.client.ping(), timeout_s)
        except (TimeoutError, RedisError, OSError) as exc:
            return f"Redis: {redis_reason(exc)}"
        return None

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


async def check_reachable(url: str, timeout_s: float = START_TIMEOUT_S, **options: Any) -> None:
    """Redis at ``url`` answers a PING (as its user, in its database) within ``timeout_s``.

    ``UnavailableError`` (one line: the URL with its password as ``***``, and why) if not.
    For the worker's start: with nothing written yet there is nothing to wait out, and an
    unreachable address or a wrong password at start is a setting to fix, which a worker
    retrying forever (as it does during an outage) would only hide behind a 503 ``/health``.
    """
    client = connect(url, socket_connect_timeout=5, socket_timeout=5, **options)
    try:
        await asyncio.wait_for(client.ping(), timeout_s)
    except (TimeoutError, RedisError, OSError) as exc:
        msg = f"cannot reach Redis at {shown_url(url)}: {redis_reason(exc)}"
        raise UnavailableError(msg) from None
    finally:
        await client.aclose()


# A NOAUTH answer: "Authentication required." (RESP2), or on connecting "HELLO must be
# called with the client already authenticated, otherwise the HELLO AUTH ..." (RESP3).
_NO_AUTH = ("Authentication required", "HELLO must be called with the client already auth")


def redis_reason(exc: BaseException) -> str:
    """One line on why a Redis call failed (redis-py's own, but for the two plainest cases)."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return "timed out"
    # redis-py says "Error 111 connecting to host:port. Connect call failed (...)".
    if any(isinstance(e, ConnectionRefusedError) for e in (exc, exc.__context__)):
        return "connection refused (is Redis running there?)"
    lines = str(exc).strip().splitlines()
    if isinstance(exc, AuthenticationError) and lines[:1] and lines[0].startswith(_NO_AUTH):
        return "authentication required (give the user and password in the URL)"
    return lines[0] if lines else type(exc).__name__
