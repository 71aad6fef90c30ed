"""How the product opens a Redis client: the reader's and the worker's alike.

Kept apart from ``streams.redis_client`` (the worker's retried connection, which needs the
settings and the errors of the contract) so that ``streams.reader`` needs nothing but
``redis`` and the standard library: the base install, ``pip install backoffice-kpi``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client of the Redis at ``url``; ``options`` go to ``redis.asyncio.from_url``.

    It sends no CLIENT SETINFO on connect (``driver_info=None``): the product's ACL users may
    not run it (tooling/redis_access.py). redis-py ignores the refusal, but Redis 7.2+ and
    Valkey add each one to ACL LOG, where real denials must stand out; and Redis 7.0 does not
    know the command, so ``+client|setinfo`` cannot be granted there.
    """
    return aioredis.from_url(url, **{"driver_info": None, **options})
