"""A small reader for downstream services over the Redis layout of SPEC section 3.

async with KpiReader("redis://localhost:6379/0") as kpis:
    now = await kpis.current("dso", "1mo", "all")          # KpiValue or None (.label)
    past = await kpis.history("dso", "1d", "sales", since=t0)
    slow = await kpis.current("ticket_resolution_time", "1d")   # .p90, .worst
    async for change in kpis.follow_changes():            # resumes after disconnects
        ...

``prefix=`` (default ``kpi``) is the writing instance's ``KPI_REDIS_PREFIX``. It needs only
``redis`` and the standard library: ``pip install backoffice-kpi`` without the worker extra.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from streams.redis_connect import connect
from streams.redis_keys import DEFAULT_PREFIX, RedisKeys


@dataclass(frozen=True, slots=True)
class KpiValue:
    """One window's value of a KPI for a scope; ``value`` None means undefined."""

    name: str
    window: str
    scope: str
    value: float | None
    window_start: datetime
    window_end: datetime
    count: int
    final: bool
    updated_at: datetime | None = None
    #: The window's name in the business calendar (``2026-03``, ``FY2027-Q1``...); empty
    #: when a version 1 worker wrote it.
    label: str = ""
    #: A duration KPI's percentiles (None when the window has no duration) and its worst
    #: entities, ``(id, seconds)`` longest first (empty without any). All None for the
    #: other KPIs, and when a version 1 worker wrote it.
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    worst: tuple[tuple[str, float], ...] | None = None


@dataclass(frozen=True, slots=True)
class KpiChange:
    """One entry of the ``<prefix>:changes`` stream; ``id`` is where to resume from."""

    id: str
    name: str
    window: str
    scope: str
    value: float | None
    window_start: datetime
    window_end: datetime
    final: bool
    #: A duration KPI's percentiles (None when undefined, and for the other KPIs).
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


def _float(text: str) -> float | None:
    return float(text) if text else None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _worst(entries: list[dict[str, Any]] | None) -> tuple[tuple[str, float], ...] | None:
    """``[{"id", "seconds"}]`` as ``(id, seconds)`` pairs; None when not written."""
    if entries is None:
        return None
    return tuple((str(e["id"]), float(e["seconds"])) for e in entries)


def _newest(name: str, window: str, scope: str, h: dict[str, str]) -> KpiValue | None:
    """A newest-window hash as a ``KpiValue``; None when there is none."""
    if not h:
        return None
    worst = h.get("worst")
    return KpiValue(
        name,
        window,
        scope,
        _float(h.get("value", "")),
        _time(h["window_start"]),
        _time(h["window_end"]),
        int(h.get("count", 0)),
        h.get("final") == "1",
        _time(h["updated_at"]) if h.get("updated_at") else None,
        h.get("label", ""),
        _float(h.get("p50", "")),
        _float(h.get("p90", "")),
        _float(h.get("p99", "")),
        None if worst is None else _worst(json.loads(worst)),
    )


class KpiReader:
    """Read current values, closed-window history, the catalog and the change feed."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, **options: Any) -> None:
        """Read the Redis at ``url``, the keys under ``prefix`` (the writer's KPI_REDIS_PREFIX).

        ``options`` go to ``redis.asyncio.from_url`` (TLS: ``ssl_ca_certs``, ...).
        """
        self.keys = RedisKeys(prefix)
        # decode_responses: every answer is str; typed Any because redis-py types both.
        # A connect timeout: an address that drops packets must not hang the caller.
        self.redis: Any = connect(url, decode_responses=True, socket_connect_timeout=5, **options)

    async def __aenter__(self) -> KpiReader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    async def catalog(self) -> dict[str, dict[str, Any]]:
        """KPI name -> ``{name, title, unit, dimension, windows, target}``."""
        raw: dict[str, str] = await self.redis.hgetall(self.keys.catalog)
        return {name: json.loads(doc) for name, doc in sorted(raw.items())}

    async def current(self, name: str, window: str, scope: str = "all") -> KpiValue | None:
        """The newest window's value, or None when nothing was written for it yet."""
        h: dict[str, str] = await self.redis.hgetall(self.keys.newest(name, window, scope))
        return _newest(name, window, scope, h)

    async def currents(self, wanted: Sequence[tuple[str, str, str]]) -> list[KpiValue | None]:
        """``current`` of each ``(name, window, scope)``, in one round trip (no transaction)."""
        pipe = self.redis.pipeline(transaction=False)
        for name, window, scope in wanted:
            pipe.hgetall(self.keys.newest(name, window, scope))
        hashes: list[dict[str, str]] = await pipe.execute()
        return [_newest(*key, h) for key, h in zip(wanted, hashes, strict=True)]

    async def scopes(self, name: str, window: str) -> list[str]:
        """Every scope that has a newest-window hash for this KPI and window."""
        prefix = self.keys.newest(name, window, "")
        found = set()
        async for key in self.redis.scan_iter(match=f"{prefix}*", count=500):
            rest = key[len(prefix) :]
            if ":" not in rest:
                found.add(rest)
        return sorted(found)

    async def history(
        self,
        name: str,
        window: str,
        scope: str = "all",
        *,
        since: float | None = None,
        until: float | None = None,
    ) -> list[KpiValue]:
        """Closed windows with ``since <= window_start <= until`` (Unix seconds), oldest first."""
        members = await self.redis.zrangebyscore(
            self.keys.history(name, window, scope),
            "-inf" if since is None else since,
            "+inf" if until is None else until,
        )
        out = []
        for member in members:
            doc = json.loads(member)
            out.append(
                KpiValue(
                    name,
                    window,
                    scope,
                    doc["value"],
                    _time(doc["window_start"]),
                    _time(doc["window_end"]),
                    int(doc["count"]),
                    True,
                    label=doc.get("label", ""),
                    p50=doc.get("p50"),
                    p90=doc.get("p90"),
                    p99=doc.get("p99"),
                    worst=_worst(doc.get("worst")),
                )
            )
        return out

    async def follow_changes(
        self, last_id: str = "$", block_ms: int = 5000
    ) -> AsyncIterator[KpiChange]:
        """Changes after ``last_id`` (``"0"`` for everything kept, ``"$"`` for new ones).

        Keep the last ``KpiChange.id`` you handled and pass it back after a disconnect.
        """
        while True:
            answer = await self.redis.xread(
                {self.keys.changes: last_id}, block=block_ms, count=1000
            )
            for _stream, entries in answer or []:
                for entry_id, f in entries:
                    last_id = entry_id
                    yield KpiChange(
                        entry_id,
                        f["name"],
                        f["window"],
                        f["scope"],
                        _float(f.get("value", "")),
                        _time(f["window_start"]),
                        _time(f["window_end"]),
                        f.get("final") == "1",
                        _float(f.get("p50", "")),
                        _float(f.get("p90", "")),
                        _float(f.get("p99", "")),
                    )
