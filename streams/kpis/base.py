"""What a KPI is: one object with its measure, its parts, its reader and its presentation.

A KPI is fed by the event types listed in its ``feeds``. For each applied event of such a
type, the engine first runs the event's lifecycle (``streams/core/lifecycle.py``: checks,
entity updates), which yields a ``Fact`` (the scope and, for follow-up events, the time
since the entity started and its amount); the feed's ``measure`` turns event and fact into
the KPI's parts delta and balance delta. The engine adds the deltas to the panes of every
window of the KPI, for the scope and for the roll-up; a window's value is ``read`` from its
summed parts (and, for a balance KPI, the balance at the window's start and end).

A ``timeline`` KPI (system uptime) keeps no panes: its measure gives the status (1.0 down,
0.0 up) of the scope, kept as a status timeline per scope, and it is read from the fraction
of each window every scope was up (see ``streams/core/timelines.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from schemas.events import EventBase
from streams.kpis.fact import Fact

#: The scope of a KPI over all dimension values (SPEC section 3).
ROLLUP = "all"
#: Every window of the business calendar, in the SPEC's order (section 2); each KPI keeps
#: them all unless its entry says otherwise.
WINDOWS: tuple[str, ...] = ("1h", "1d", "1w", "1mo", "1q", "1y", "30d")

Dimension = Literal["department", "service", "queue"]
Direction = Literal["at_most", "at_least"]
Kind = Literal["panes", "timeline"]

#: A KPI's window value from its summed parts (the last part is always ``n``), the balance
#: at the window start and at its end (0.0 unless the KPI keeps a balance) and the window
#: length in days. ``None`` means undefined.
Reader = Callable[[Sequence[float], float, float, float], float | None]
#: What one event adds to a KPI: its parts delta and its balance delta.
Delta = tuple[tuple[float, ...], float]

E = TypeVar("E", bound=EventBase)


@dataclass(frozen=True, slots=True)
class Feed(Generic[E]):
    """One event type feeding a KPI, and what each such event adds to it."""

    event: type[E]
    #: The event's delta, or None when this event does not count for the KPI.
    measure: Callable[[E, Fact], Delta | None]


@dataclass(frozen=True, slots=True)
class Target:
    """A SMART goal: the value a KPI should stay at most / at least at, and where it is judged.

    The value applies to every window of the KPI (``backoffice_kpi_target{kpi, window}``);
    ``window`` is the one the KPI is *judged* on: its alert watches that window, and the
    catalog entry names it. Chosen per KPI: ``1d`` (the current business day) is stable
    enough, unlike ``1h``, and a miss clears once the next day starts without the problem;
    ``30d`` (rolling) for KPIs read against a balance (a flow over a stock means nothing on
    a day that has just begun, and their targets are monthly figures), for a ``for_``
    longer than a few hours, which could hardly (a day: never) elapse within one day, and
    for a share of rare events (incident SLA attainment: one miss in a service's three
    incidents of a day reads 67%).
    """

    value: float
    direction: Direction
    #: How long a miss must last before the alert fires (Prometheus ``for:``).
    for_: str = "30m"
    severity: Literal["warning", "critical"] = "warning"
    #: Human wording of the goal, for docs, dashboards and alert descriptions.
    goal: str = ""
    #: The window the target is judged on (one of ``WINDOWS`` and of the KPI's windows).
    #: Stated by every KPI: there is no default to forget.
    window: str = field(kw_only=True)
    #: Further windows the target is judged on, after ``window`` (``KPI_TARGETS_FILE``'s
    #: ``windows`` beyond the first; streams/targets.py). The built-in targets have none.
    more_windows: tuple[str, ...] = field(default=(), kw_only=True)
    #: Scopes (dimension values) with a target value of their own, same direction:
    #: ``(("sales", 35),)``. Only from ``KPI_TARGETS_FILE``; the roll-up keeps ``value``.
    scopes: tuple[tuple[str, float], ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        for window in self.windows:
            if window not in WINDOWS:
                msg = f"target window {window!r} is not a window (one of {', '.join(WINDOWS)})"
                raise ValueError(msg)

    @property
    def windows(self) -> tuple[str, ...]:
        """Every window the target is judged on, ``window`` first."""
        return (self.window, *self.more_windows)

    def value_for(self, scope: str) -> float:
        """The target value of a scope: its own when it has one, else ``value``."""
        for name, value in self.scopes:
            if name == scope:
                return value
        return self.value

    def met(self, value: float, scope: str = ROLLUP) -> bool:
        """True when ``value`` (of ``scope``) meets the goal."""
        target = self.value_for(scope)
        return value <= target if self.direction == "at_most" else value >= target


@dataclass(frozen=True, slots=True)
class Kpi:
    """One KPI of SPEC section 2 (see the module docstring)."""

    name: str
    title: str
    #: ``seconds``, ``ratio``, ``days``, ``score``, ``count``, or ``currency`` (the
    #: reporting currency's code is shown: ``Kpi.unit_label``).
    unit: str
    dimension: Dimension
    topic: str
    metric: str
    target: Target
    #: Names of the additive parts kept per pane; the last is always ``n``, the count of
    #: events that contributed (the Redis ``count``).
    parts: tuple[str, ...]
    feeds: tuple[Feed[Any], ...]
    read: Reader
    #: Name of the balance whose value at window start and end the reader needs, if any.
    #: A pane then keeps the balance's change after the parts.
    balance: str | None = None
    windows: tuple[str, ...] = WINDOWS
    description: str = ""
    kind: Kind = "panes"
    #: A duration KPI: each window and scope also keeps the distribution of its durations
    #: (percentiles ``p50``/``p90``/``p99`` from a sketch) and its ten worst entities
    #: (``streams/core/distributions.py``, SPEC section 2 "Distributions").
    distribution: bool = False
    #: Presentation (``streams/kpis/units.py``): whether a ``ratio`` is a share of a whole
    #: (a percentage in Grafana), and the decimals a terminal shows of a ratio.
    share: bool = True
    digits: int = 3
    #: An SLA attainment (the share of resolutions within their SLA): the team dashboard
    #: shows it in its own row of panels.
    sla: bool = False

    @property
    def width(self) -> int:
        """Length of a pane's vector: the parts, plus the balance change if any."""
        return len(self.parts) + (1 if self.balance is not None else 0)

    def unit_label(self, currency: str) -> str:
        """The unit as shown to people: the reporting currency's code for ``currency``."""
        return currency if self.unit == "currency" else self.unit

    def catalog_entry(self, currency: str) -> dict[str, object]:
        """The JSON object stored in the Redis ``kpi:catalog`` hash (SPEC section 3)."""
        return {
            "name": self.name,
            "title": self.title,
            "unit": self.unit_label(currency),
            "dimension": self.dimension,
            "windows": list(self.windows),
            "target": self._target_entry(),
        }

    def _target_entry(self) -> dict[str, object]:
        # The version-1 fields always; ``windows`` and ``scopes`` only when a targets file
        # gives them, so that without one the entry stays byte-identical.
        target = self.target
        entry: dict[str, object] = {
            "value": target.value,
            "direction": target.direction,
            "goal": target.goal,
            "window": target.window,
        }
        if target.more_windows:
            entry["windows"] = list(target.windows)
        if target.scopes:
            entry["scopes"] = dict(target.scopes)
        return entry


# -- readers shared by several KPIs: pure functions of summed parts -----------------------


def mean(parts: Sequence[float], _b0: float, _b1: float, _days: float) -> float | None:
    """Sum / count (``(sum, n)``); undefined without events."""
    total, n = parts
    return total / n if n else None


def ratio(parts: Sequence[float], _b0: float, _b1: float, _days: float) -> float | None:
    """Hits / count (``(hits, n)``); undefined without events."""
    hits, n = parts
    return hits / n if n else None


def total(parts: Sequence[float], _b0: float, _b1: float, _days: float) -> float | None:
    """The first part's sum."""
    return parts[0]


def count(parts: Sequence[float], _b0: float, _b1: float, _days: float) -> float | None:
    """How many events contributed."""
    return parts[-1]


def turnover(parts: Sequence[float], start: float, end: float, _days: float) -> float | None:
    """Flow / average balance: the first part over the mean of the start and end balances."""
    average = (start + end) / 2.0
    return parts[0] / average if average else None


#: The parts of a mean over durations.
DURATION_PARTS = ("sum_s", "n")


def duration(_event: EventBase, fact: Fact) -> Delta | None:
    """Measure: the time since the entity started (one event, one duration)."""
    return (fact.since_start_s, 1.0), 0.0
