"""What goes into the engine and what comes out of a batch: plain records, no behaviour."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Message:
    """One input message; ``topic`` is the logical (unprefixed) topic name."""

    topic: str
    partition: int
    offset: int
    value: bytes
    #: The message's Kafka key (None: it had none); only a dead letter uses it.
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input message that cannot be applied, with the SPEC's reason."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    payload: bytes
    #: The original message key (None: it had none), the dead letter's own key.
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class WindowValue:
    """The value of one KPI for one window and scope."""

    kpi: str
    window: str
    scope: str
    start: int
    end: int
    #: The window's name in the business calendar (``2026-03``, ``FY2027-Q1``...).
    label: str
    value: float | None
    count: int
    final: bool
    #: For a duration KPI (``Kpi.distribution``): the percentiles of its durations (None
    #: without any), and its worst entities, ``(id, seconds)`` longest first (then by id).
    #: None / None for other KPIs.
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    worst: tuple[tuple[str, float], ...] | None = None


@dataclass(slots=True)
class BatchResult:
    """Everything one batch produced, for the sinks and the metrics."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: Counter[str] = field(default_factory=Counter)
    #: Applied events per (topic, event type).
    applied: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Windows the batch closed (final, for the history).
    closed: list[WindowValue] = field(default_factory=list)
    #: The newest window of every KPI and scope the batch changed.
    current: list[WindowValue] = field(default_factory=list)
