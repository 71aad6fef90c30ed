"""Event-time windows: specs, pane assignment and the closing rule, on plain float seconds.

A window spec of ``size`` and ``step`` (both whole seconds, aligned to the Unix epoch) keeps
panes of ``gcd(size, step)`` seconds: an event updates exactly one pane per spec, and a
window's parts are the sum of the ``size / pane`` panes it covers. Tumbling windows have one
pane per window; the rolling ``30d`` window (step 1 day) has 30 daily panes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

HOUR_S = 3600
#: Stands for "the end of a window before any event": the watermark of no events is -inf.
BEFORE_ALL_WINDOWS = -(2**62)
DAY_S = 86400


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One window shape of a KPI, e.g. ``1h`` tumbling or ``30d`` rolling by a day."""

    name: str
    size_s: int
    step_s: int
    #: Length of the panes this spec keeps (computed once: it is on the per-event path).
    pane_s: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pane_s", math.gcd(self.size_s, self.step_s))

    @property
    def size_days(self) -> float:
        """Window length in days (DSO multiplies by it)."""
        return self.size_s / DAY_S

    def window_end_of_pane(self, pane_start: int) -> int:
        """End of the *last* window that contains this pane (when the pane may be dropped)."""
        first_end = self.first_window_end_after(pane_start)
        # Windows that contain the pane end in [pane_end, pane_start + size]; the last one is
        # the largest step-aligned end <= pane_start + size.
        last = ((pane_start + self.size_s) // self.step_s) * self.step_s
        return max(first_end, last)

    def first_window_end_after(self, t: float) -> int:
        """The smallest window end strictly greater than ``t`` (``t`` may be -inf)."""
        if t == float("-inf"):
            return BEFORE_ALL_WINDOWS
        return (int(t // self.step_s) + 1) * self.step_s

    def newest_window(self, t: float) -> tuple[int, int]:
        """The window ``[start, end)`` that is "current" when the watermark is ``t``."""
        end = self.first_window_end_after(t)
        return end - self.size_s, end

    def window_ends_between(self, after: float, upto: float) -> Iterator[int]:
        """Every window end ``e`` with ``after < e <= upto``, ascending."""
        e = self.first_window_end_after(after)
        while e <= upto:
            yield e
            e += self.step_s

    def pane_starts(self, window_end: int) -> range:
        """The starts of the panes a window ``[window_end - size, window_end)`` covers."""
        return range(window_end - self.size_s, window_end, self.pane_s)


WINDOW_SPECS: dict[str, WindowSpec] = {
    "1h": WindowSpec("1h", HOUR_S, HOUR_S),
    "1d": WindowSpec("1d", DAY_S, DAY_S),
    "30d": WindowSpec("30d", 30 * DAY_S, DAY_S),
}


#: Window boundaries repeat in every batch that writes them: formatted once (3% of a
#: worker's CPU before). Bounded: cleared when full.
_RFC3339_CACHE: dict[float, str] = {}
_RFC3339_CACHE_MAX = 8192


def rfc3339(t: float) -> str:
    """UTC RFC 3339 text of Unix seconds, as written to Redis (``Z`` suffix)."""
    text = _RFC3339_CACHE.get(t)
    if text is None:
        if len(_RFC3339_CACHE) >= _RFC3339_CACHE_MAX:
            _RFC3339_CACHE.clear()
        text = _RFC3339_CACHE[t] = _format_rfc3339(t)
    return text


def _format_rfc3339(t: float) -> str:
    dt = datetime.fromtimestamp(t, tz=UTC)
    if dt.microsecond:
        return dt.isoformat().replace("+00:00", "Z")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
