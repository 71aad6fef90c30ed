"""The fixed workload: simulator events generated once (fixed seed and start), then published.

Generation and publishing are not timed as part of any figure. The serialized messages are
kept in memory, so the invoices-only copy (single-KPI comparison) and the latency phase reuse
the very same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson

from producers.publisher import Publisher
from producers.simulator import CompanySimulator
from streams.config import Settings
from streams.topics import create_published_topics

DECISIONS = ("invoice.approved", "invoice.rejected")
OCCURRED_AT = b'"occurred_at":"'
RFC3339_LEN = len("2025-01-06T00:00:00.000Z")


@dataclass
class Workload:
    """The generated messages, in publication order, and what they contain."""

    messages: list[tuple[str, bytes, bytes]]  # (logical topic, key, value)
    per_topic: Counter[str] = field(default_factory=Counter)
    per_type: Counter[str] = field(default_factory=Counter)
    first_time: float = 0.0
    last_time: float = 0.0
    generate_s: float = 0.0
    sha256: str = ""
    run_tag: bytes = b""

    @property
    def invoice_decisions(self) -> int:
        """Decisions the single-KPI peer must fold into its windows."""
        return sum(self.per_type[t] for t in DECISIONS)

    def describe(self) -> dict[str, object]:
        """For the JSON report."""
        return {
            "messages": len(self.messages),
            "per_topic": dict(self.per_topic),
            "per_type": dict(self.per_type.most_common()),
            "event_time_from": self.first_time,
            "event_time_to": self.last_time,
            "event_time_days": round((self.last_time - self.first_time) / 86400, 2),
            "generate_s": round(self.generate_s, 2),
            "sha256": self.sha256,
        }


def generate(events: int, *, seed: int, start: float, scale: float) -> Workload:
    """``events`` messages of a clean simulated company (no faults), deterministic."""
    began = time.monotonic()
    sim = CompanySimulator(seed, start, clock=lambda: math.inf, scale=scale)
    messages: list[tuple[str, bytes, bytes]] = []
    per_topic: Counter[str] = Counter()
    per_type: Counter[str] = Counter()
    digest = hashlib.sha256()
    dumps = orjson.dumps
    first = last = start
    for i in range(events):
        emission = sim.take()
        assert emission is not None  # the clock is infinite
        payload = emission.payload
        value = payload if isinstance(payload, bytes) else dumps(payload)
        messages.append((emission.topic, emission.key.encode(), value))
        per_topic[emission.topic] += 1
        if isinstance(payload, dict):
            per_type[payload["type"]] += 1
        digest.update(value)
        if i == 0:
            first = sim.now
    last = sim.now
    # Every id of this run contains "-<seed>-<start in base 36>-" (see CompanySimulator).
    tag = f"-{sim._run}-".encode()
    return Workload(
        messages,
        per_topic,
        per_type,
        first,
        last,
        time.monotonic() - began,
        digest.hexdigest(),
        tag,
    )


async def _publish(
    settings: Settings,
    messages: Iterable[tuple[str, bytes, bytes]],
    progress: Callable[[int], None] | None,
) -> int:
    await create_published_topics(settings)
    n = 0
    async with Publisher(settings, linger_ms=20, flush_every=20_000, client_id="kpi-bench") as pub:
        for topic, key, value in messages:
            await pub.send(topic, key.decode(), value)
            n += 1
            if progress is not None and n % 100_000 == 0:
                progress(n)
    return n


def publish(
    settings: Settings,
    messages: Iterable[tuple[str, bytes, bytes]],
    progress: Callable[[int], None] | None = None,
) -> tuple[int, float]:
    """Publish (acks=all) to ``settings``' prefixed topics; (messages, seconds)."""
    began = time.monotonic()
    n = asyncio.run(_publish(settings, messages, progress))
    return n, time.monotonic() - began


def with_occurred_at(value: bytes, stamp: bytes) -> bytes:
    """``value`` with its ``occurred_at`` replaced by ``stamp`` (same RFC 3339 width)."""
    i = value.find(OCCURRED_AT)
    if i < 0:
        return value
    i += len(OCCURRED_AT)
    return value[:i] + stamp + value[i + RFC3339_LEN :]
