"""Event-time windows of the business calendar (SPEC section 2), on plain float seconds.

Seven windows: the local ``1h``, ``1d``, ``1w`` (ISO week), ``1mo``, the fiscal ``1q`` and
``1y``, and the rolling ``30d``. None keeps panes of its own: an event updates one local
hour pane, one local day pane and one local month pane (``streams/core/calendar.py``), and
a window is the sum of the panes it covers: ``1h`` one hour pane; ``1d``, ``1w`` and ``30d``
1, 7 and 30 day panes; ``1mo``, ``1q`` and ``1y`` 1, 3 and 12 month panes. A window is named
by its end (UTC seconds): every method maps an end to the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

from streams.core.calendar import (
    DAY,
    DAY_S,
    HOUR,
    HOUR_S,
    MONTH,
    Calendar,
    add_days,
    add_months,
)
from streams.kpis.base import WINDOWS

#: Stands for "the end of a window before any event": the watermark of no events is -inf.
BEFORE_ALL_WINDOWS = -(2**62)
#: The pane kinds' names in state keys (``1h`` and ``1d`` as version 1 named its panes).
PANE_NAMES: tuple[str, ...] = ("1h", "1d", "1mo")
_CACHE_MAX = 8192


class Window:
    """One window of the calendar: its bounds, panes, length in days and label, by its end."""

    def __init__(self, name: str, calendar: Calendar) -> None:
        if name not in WINDOWS:
            msg = f"unknown window {name!r} (one of {', '.join(WINDOWS)})"
            raise ValueError(msg)
        self.name = name
        self.calendar = calendar
        #: The pane kind it is read from (``HOUR``, ``DAY``, ``MONTH``) and its key name.
        self.pane = HOUR if name == "1h" else MONTH if name in ("1mo", "1q", "1y") else DAY
        self.pane_name = PANE_NAMES[self.pane]
        # end -> (start, pane starts, days, label): a window is read many times.
        self._by_end: dict[int, tuple[int, tuple[int, ...], float, str]] = {}
        # The instants [lo, hi) whose next window end was last asked for, and that end.
        self._lo = 0.0
        self._hi = 0.0
        self._end = 0

    def __repr__(self) -> str:
        return f"Window({self.name!r}, {self.calendar.timezone!r})"

    # -- which window ------------------------------------------------------------------

    def _bounds_at(self, t: float) -> tuple[int, int]:
        """``[start, end)`` of the window of this kind holding ``t``.

        For ``30d``: the one ending with the day holding ``t``.
        """
        cal = self.calendar
        if self.name == "1h":
            return cal.bounds(HOUR_S, t)
        day_start, day_end = cal.bounds(DAY_S, t)
        if self.name == "1d":
            return day_start, day_end
        d = cal.date_at(day_start)
        if self.name == "30d":
            # It ends with the date, not with the day pane: a date whose midnight a clock
            # change repeats has two day panes (America/Havana, 2025-11-02).
            return cal.day_start(add_days(d, -29)), cal.day_start(add_days(d, 1))
        if self.name == "1w":
            monday = add_days(d, -d.weekday())
            return cal.day_start(monday), cal.day_start(add_days(monday, 7))
        first, months = self._period(d)
        return cal.day_start(first), cal.day_start(add_months(first, months))

    def _period(self, d: date) -> tuple[date, int]:
        """The first day and the number of months of the ``1mo``/``1q``/``1y`` window of ``d``."""
        month = d.replace(day=1)
        if self.name == "1mo":
            return month, 1
        fy, since = _into_fiscal_year(self.calendar, month)
        if self.name == "1y":
            return fy, 12
        return add_months(fy, since - since % 3), 3

    def first_window_end_after(self, t: float) -> int:
        """The smallest window end strictly greater than ``t`` (``t`` may be -inf)."""
        if self._lo <= t < self._hi:
            return self._end
        if t == float("-inf"):
            return BEFORE_ALL_WINDOWS
        start, end = self._bounds_at(t)
        # Every t in [lo, end) has this next end (for 30d: from the start of its last day).
        lo = self.calendar.bounds(DAY_S, t)[0] if self.name == "30d" else start
        self._lo, self._hi, self._end = float(lo), float(end), end
        return end

    def newest_window(self, t: float) -> tuple[int, int]:
        """The window ``[start, end)`` that is "current" when the watermark is ``t``."""
        end = self.first_window_end_after(t)
        return self.start_of(end), end

    def window_ends_between(self, after: float, upto: float) -> Iterator[int]:
        """Every window end ``e`` with ``after < e <= upto``, ascending."""
        e = self.first_window_end_after(after)
        while e <= upto:
            yield e
            e = self.first_window_end_after(e)

    # -- a window by its end -----------------------------------------------------------

    def _window(self, end: int) -> tuple[int, tuple[int, ...], float, str]:
        found = self._by_end.get(end)
        if found is None:
            found = self._describe(end)
            if len(self._by_end) >= _CACHE_MAX:
                self._by_end.clear()
            self._by_end[end] = found
        return found

    def _describe(self, end: int) -> tuple[int, tuple[int, ...], float, str]:
        cal = self.calendar
        start = self._bounds_at(end - 1)[0]
        last_day = cal.date_at(cal.bounds(DAY_S, end - 1)[0])
        if self.name == "1h":
            return start, (start,), 1 / 24, cal.local(start).strftime("%Y-%m-%dT%H")
        first = cal.date_at(start)
        days = float((last_day - first).days + 1)
        panes = self._walk(start, end)
        if self.name == "1w":
            year, week, _ = first.isocalendar()
            label = f"{year}-W{week:02d}"
        elif self.pane == DAY:
            label = last_day.isoformat()
        elif self.name == "1mo":
            label = f"{first.year}-{first.month:02d}"
        else:
            fy, since = _into_fiscal_year(cal, first)
            name = cal.fiscal_year_name(fy)
            label = name if self.name == "1y" else f"{name}-Q{since // 3 + 1}"
        return start, panes, days, label

    def _walk(self, start: int, end: int) -> tuple[int, ...]:
        """The starts of the panes between two boundaries, walked pane by pane.

        Not by dates: where a clock change repeats midnight (America/Havana, 2025-11-02)
        two day panes have the same date.
        """
        panes = []
        at = start
        while at < end:
            panes.append(at)
            at = self.calendar.pane(self.pane, at)[1]
        return tuple(panes)

    def start_of(self, end: int) -> int:
        """The start of the window ending at ``end``."""
        return self._window(end)[0]

    def pane_starts(self, end: int) -> tuple[int, ...]:
        """The starts of the panes the window ending at ``end`` covers, in time order."""
        return self._window(end)[1]

    def days(self, end: int) -> float:
        """Calendar days the window covers (DSO): 1/24, 1, 7, 28-31, 90-92, 365-366 or 30."""
        return self._window(end)[2]

    def label(self, end: int) -> str:
        """The window's name in the calendar: ``2026-03-08T14``, ``2026-W10``, ``FY2027-Q1``..."""
        return self._window(end)[3]

    def window_end_of_pane(self, pane_start: int) -> int:
        """End of the *last* window of this kind that covers the pane (when it may go)."""
        if self.name == "30d":
            cal = self.calendar
            return cal.day_start(add_days(cal.date_at(pane_start), 30))
        return self._bounds_at(pane_start)[1]


def _into_fiscal_year(calendar: Calendar, d: date) -> tuple[date, int]:
    """The first day of the fiscal year holding ``d``, and the months from it to ``d``'s."""
    fy = calendar.fiscal_year_first(d)
    return fy, (d.year - fy.year) * 12 + d.month - fy.month


def calendar_windows(calendar: Calendar) -> dict[str, Window]:
    """Every window of ``calendar``, by name."""
    return {name: Window(name, calendar) for name in WINDOWS}


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
