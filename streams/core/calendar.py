"""The business calendar: local hours, days and months of ``KPI_TIMEZONE``, in UTC seconds.

A *boundary* of a unit (hour or day) is an instant at which the local wall clock reads a
whole unit (``hh:00:00``, ``00:00:00``), after any clock change, or a clock change whose
forward jump skips such a reading (SPEC section 2: the window then starts or ends at the
change). So in Europe/Berlin the spring day has 23 hours and no ``02`` hour, the autumn day
25 hours and two ``02`` hours of one hour each; Australia/Lord_Howe's 30-minute change makes
a 30-minute and a 90-minute hour. Months are the days from a 1st to the next 1st.

Within a stretch of constant UTC offset ``o`` the boundaries are the instants ``t`` with
``(t + o) % unit == 0``; the stretches come from the zone's transitions, found by sampling
its offset (``zoneinfo`` does not list them) and bisecting each change to the second.
Results are cached: events arrive roughly in time order, so the per-event cost is a lookup.
"""

from __future__ import annotations

import bisect
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

HOUR_S = 3600
DAY_S = 86400
#: Pane kinds: every window is read from panes of one of these units.
HOUR, DAY, MONTH = 0, 1, 2
#: Offset samples per year when looking for clock changes (zones change at most a few times
#: a year, never twice within six hours).
_SAMPLE_S = 6 * HOUR_S
#: Bounded caches: cleared when full.
_CACHE_MAX = 16384


class Calendar:
    """Local hours, days and months of one time zone, and the fiscal year's first month."""

    def __init__(self, timezone: str = "UTC", fiscal_year_start: int = 1) -> None:
        if not 1 <= fiscal_year_start <= 12:
            msg = f"fiscal year start must be a month 1-12, not {fiscal_year_start}"
            raise ValueError(msg)
        self.timezone = timezone
        self.fiscal_year_start = fiscal_year_start
        self.zone = ZoneInfo(timezone)
        # Clock changes: their instants (ascending) and the offset from each on; the offset
        # before the first is ``_offset0``. Filled a UTC year at a time.
        self._changes: list[int] = []
        self._offsets: list[int] = []
        self._years: set[int] = set()
        self._offset0 = 0
        # (unit, 15-minute bucket) -> bounds, only for buckets wholly inside them.
        self._bounds: dict[tuple[int, int], tuple[int, int]] = {}
        self._day_starts: dict[date, int] = {}

    @property
    def name(self) -> str:
        """``<time zone> <fiscal year start>``, as kept in the state (``Europe/Berlin 4``)."""
        return f"{self.timezone} {self.fiscal_year_start}"

    # -- clock changes -----------------------------------------------------------------

    def offset(self, t: float) -> int:
        """The UTC offset (seconds) of the local clock at ``t``."""
        delta = datetime.fromtimestamp(t, self.zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    def _load(self, t: float) -> None:
        """Make sure the clock changes of the UTC years around ``t`` are known.

        The years loaded stay one contiguous range, so no change between them is missed.
        """
        year = datetime.fromtimestamp(t, UTC).year
        if year in self._years and year - 1 in self._years and year + 1 in self._years:
            return
        low, high = max(year - 1, 2), min(year + 1, 9998)
        if self._years:
            low, high = min(low, min(self._years)), max(high, max(self._years))
        for y in range(low, high + 1):
            if y not in self._years:
                self._load_year(y)

    def _load_year(self, year: int) -> None:
        start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
        end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
        found: list[tuple[int, int]] = []
        before = self.offset(start - _SAMPLE_S)
        s = start - _SAMPLE_S
        while s < end:
            nxt = s + _SAMPLE_S
            after = self.offset(nxt)
            if after != before:
                lo, hi = s, nxt  # offset(lo) == before, offset(hi) != before
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self.offset(mid) == before:
                        lo = mid
                    else:
                        hi = mid
                if start <= hi < end:
                    found.append((hi, self.offset(hi)))
                before = after
            s = nxt
        self._years.add(year)
        merged = dict(zip(self._changes, self._offsets, strict=True))
        merged.update(found)
        self._changes = sorted(merged)
        self._offsets = [merged[c] for c in self._changes]
        first_start = datetime(min(self._years), 1, 1, tzinfo=UTC).timestamp()
        self._offset0 = self.offset(first_start - 1)

    def _stretch(self, t: float) -> tuple[int, float, float, int]:
        """(offset, its first instant, the next change, the offset before) around ``t``."""
        self._load(t)
        i = bisect.bisect_right(self._changes, t)
        offset = self._offsets[i - 1] if i else self._offset0
        before = (self._offsets[i - 2] if i >= 2 else self._offset0) if i else offset
        first = float(self._changes[i - 1]) if i else float("-inf")
        nxt = float(self._changes[i]) if i < len(self._changes) else float("inf")
        return offset, first, nxt, before

    # -- boundaries --------------------------------------------------------------------

    def _change_is_boundary(self, change: float, before: int, after: int, unit: int) -> bool:
        c = int(change)
        if (c + after) % unit == 0:
            return True
        # A forward jump skips the readings [c + before, c + after).
        return after > before and -((c + before) // -unit) * unit < c + after

    def _floor(self, unit: int, t: float) -> int:
        """The last boundary at or before ``t``."""
        offset, first, _nxt, before = self._stretch(t)
        s = int((t + offset) // unit) * unit - offset
        if s >= first:
            return s
        if self._change_is_boundary(first, before, offset, unit):
            return int(first)
        return self._floor(unit, first - 1)

    def _next(self, unit: int, t: float) -> int:
        """The first boundary after ``t``."""
        offset, _first, nxt, _before = self._stretch(t)
        e = int((t + offset) // unit) * unit - offset + unit
        if e < nxt:
            return e
        after = self._stretch(nxt)[0]
        if self._change_is_boundary(nxt, offset, after, unit):
            return int(nxt)
        return self._next(unit, nxt)

    def bounds(self, unit: int, t: float) -> tuple[int, int]:
        """``[start, end)`` of the local hour (``HOUR_S``) or day (``DAY_S``) holding ``t``."""
        bucket = int(t // 900)
        key = (unit, bucket)
        found = self._bounds.get(key)
        if found is not None:
            return found
        found = (self._floor(unit, t), self._next(unit, t))
        if found[0] <= bucket * 900 and (bucket + 1) * 900 <= found[1]:
            if len(self._bounds) >= _CACHE_MAX:
                self._bounds.clear()
            self._bounds[key] = found
        return found

    def pane(self, kind: int, t: float) -> tuple[int, int]:
        """``[start, end)`` of the pane of ``kind`` (``HOUR``, ``DAY``, ``MONTH``) holding ``t``."""
        if kind == HOUR:
            return self.bounds(HOUR_S, t)
        day = self.bounds(DAY_S, t)
        if kind == DAY:
            return day
        first = self.date_at(day[0]).replace(day=1)
        return self.day_start(first), self.day_start(add_months(first, 1))

    # -- dates -------------------------------------------------------------------------

    def local(self, t: float) -> datetime:
        """The local wall-clock time at ``t``."""
        return datetime.fromtimestamp(t, self.zone)

    def date_at(self, t: float) -> date:
        """The local date at ``t``."""
        return self.local(t).date()

    def day_start(self, d: date) -> int:
        """The first instant of local date ``d`` (the next date's, if ``d`` was skipped)."""
        start = self._day_starts.get(d)
        if start is None:
            noon = datetime.combine(d, time(12), tzinfo=self.zone).timestamp()
            start, end = self.bounds(DAY_S, noon)
            if self.date_at(start) < d:  # noon was skipped into the next day's stretch
                start = end
            # A change back to midnight (America/Havana, 2025-11-02) reads midnight twice:
            # the date starts at the first.
            while True:
                before = self.bounds(DAY_S, start - 1)[0]
                if self.date_at(before) != d:
                    break
                start = before
            if len(self._day_starts) >= _CACHE_MAX:
                self._day_starts.clear()
            self._day_starts[d] = start
        return start

    def fiscal_year_first(self, d: date) -> date:
        """The first day of the fiscal year holding date ``d``."""
        start = self.fiscal_year_start
        year = d.year if d.month >= start else d.year - 1
        return date(year, start, 1)

    def fiscal_year_name(self, first: date) -> str:
        """``2026`` with the calendar year, else ``FY2027``: named by the year it ends in."""
        if self.fiscal_year_start == 1:
            return str(first.year)
        return f"FY{first.year + 1}"


def add_months(d: date, months: int) -> date:
    """The 1st of the month ``months`` after ``d``'s month."""
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def add_days(d: date, days: int) -> date:
    """The date ``days`` after ``d``."""
    return d + timedelta(days=days)
