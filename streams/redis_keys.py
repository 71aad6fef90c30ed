"""Every Redis key of the product (SPEC section 3), built here only, under one prefix.

``KPI_REDIS_PREFIX`` (default ``kpi``) names them all, so that instances can share one
Redis database and a Redis ACL user can be given ``~<prefix>:*`` and nothing else:

===================================  ===========================================
key                                  what
===================================  ===========================================
``<prefix>:catalog``                 the catalog hash
``<prefix>:{name}:{window}:{scope}`` the newest window of a KPI and scope (hash)
``<prefix>:...:{scope}:history``     its closed windows (sorted set)
``<prefix>:changes``                 the change feed (stream)
``<prefix>:_progress``               the workers' closing progress (internal)
===================================  ===========================================
"""

from __future__ import annotations

from typing import Final

DEFAULT_PREFIX: Final = "kpi"


class RedisKeys:
    """The keys of one instance: ``RedisKeys()`` gives version 1's ``kpi:...`` exactly."""

    __slots__ = ("catalog", "changes", "prefix", "progress")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self.catalog = f"{prefix}:catalog"
        self.changes = f"{prefix}:changes"
        self.progress = f"{prefix}:_progress"

    def __repr__(self) -> str:
        return f"RedisKeys({self.prefix!r})"

    def newest(self, kpi: str, window: str, scope: str) -> str:
        """``<prefix>:{name}:{window}:{scope}``: the hash of the newest window."""
        return f"{self.prefix}:{kpi}:{window}:{scope}"

    def history(self, kpi: str, window: str, scope: str) -> str:
        """``<prefix>:{name}:{window}:{scope}:history``: the closed windows."""
        return f"{self.prefix}:{kpi}:{window}:{scope}:history"

    @property
    def pattern(self) -> str:
        """The glob every key of the instance matches (``SCAN MATCH``, Redis ACL ``~``)."""
        return f"{self.prefix}:*"
