"""The business calendar: local hours and days across clock changes, and the seven windows.

Each expected instant below was worked out by hand from the zone's rules (UTC offsets in
the comments), not from the code.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from schemas.errors import ConfigurationError
from streams.config import Settings
from streams.core.calendar import DAY_S, HOUR_S, Calendar
from streams.core.engine import Engine
from streams.core.state import PartitionState
from streams.core.windows import Window, calendar_windows
from tests import reference
from tests.cli import run_kpi


def at(text: str) -> int:
    """Unix seconds of an RFC 3339 time with offset."""
    return int(datetime.fromisoformat(text).timestamp())


def hours(zone: str, first: str, n: int) -> list[tuple[int, int, str]]:
    """``n`` consecutive local hours from the one holding ``first``: (start, end, label)."""
    cal = Calendar(zone)
    w = Window("1h", cal)
    out = []
    t = at(first)
    for _ in range(n):
        start, end = cal.bounds(HOUR_S, t)
        out.append((start, end, w.label(end)))
        t = end
    return out


def test_berlin_spring_forward_has_no_two_oclock_hour() -> None:
    # 2026-03-29 02:00 CET (UTC+1) -> 03:00 CEST (UTC+2), at 01:00 UTC.
    assert hours("Europe/Berlin", "2026-03-29T00:30+01:00", 3) == [
        (at("2026-03-29T00:00+01:00"), at("2026-03-29T01:00+01:00"), "2026-03-29T00"),
        (at("2026-03-29T01:00+01:00"), at("2026-03-29T03:00+02:00"), "2026-03-29T01"),
        (at("2026-03-29T03:00+02:00"), at("2026-03-29T04:00+02:00"), "2026-03-29T03"),
    ]


def test_berlin_fall_back_has_two_two_oclock_hours() -> None:
    # 2026-10-25 03:00 CEST (UTC+2) -> 02:00 CET (UTC+1), at 01:00 UTC.
    assert hours("Europe/Berlin", "2026-10-25T01:30+02:00", 4) == [
        (at("2026-10-25T01:00+02:00"), at("2026-10-25T02:00+02:00"), "2026-10-25T01"),
        (at("2026-10-25T02:00+02:00"), at("2026-10-25T02:00+01:00"), "2026-10-25T02"),
        (at("2026-10-25T02:00+01:00"), at("2026-10-25T03:00+01:00"), "2026-10-25T02"),
        (at("2026-10-25T03:00+01:00"), at("2026-10-25T04:00+01:00"), "2026-10-25T03"),
    ]


def test_lord_howe_half_hour_changes_make_a_90_and_a_30_minute_hour() -> None:
    # Autumn, 2026-04-05: 02:00 (UTC+11) -> 01:30 (UTC+10:30), at 15:00 UTC.
    autumn = hours("Australia/Lord_Howe", "2026-04-05T01:10+11:00", 2)
    assert autumn[0] == (
        at("2026-04-05T01:00+11:00"),
        at("2026-04-05T02:00+10:30"),
        "2026-04-05T01",
    )
    assert autumn[0][1] - autumn[0][0] == 90 * 60
    # Spring, 2026-10-04: 02:00 (UTC+10:30) -> 02:30 (UTC+11): T02 starts at the change.
    spring = hours("Australia/Lord_Howe", "2026-10-04T01:10+10:30", 3)
    assert spring[1] == (
        at("2026-10-04T02:30+11:00"),
        at("2026-10-04T03:00+11:00"),
        "2026-10-04T02",
    )
    assert spring[0][1] == spring[1][0]


@pytest.mark.parametrize(
    ("zone", "utc_minute"), [("Asia/Kolkata", 30), ("Asia/Kathmandu", 15), ("UTC", 0)]
)
def test_hours_of_half_and_quarter_hour_zones_start_off_the_utc_hour(
    zone: str, utc_minute: int
) -> None:
    start, end, _ = hours(zone, "2026-01-10T12:00+00:00", 1)[0]
    assert start % 3600 == utc_minute * 60 and end - start == HOUR_S


def test_clock_change_days_are_23_and_25_hours() -> None:
    cal = Calendar("Europe/Berlin")
    spring = cal.bounds(DAY_S, at("2026-03-29T12:00+02:00"))
    autumn = cal.bounds(DAY_S, at("2026-10-25T12:00+01:00"))
    assert spring == (at("2026-03-29T00:00+01:00"), at("2026-03-30T00:00+02:00"))
    assert spring[1] - spring[0] == 23 * HOUR_S
    assert autumn[1] - autumn[0] == 25 * HOUR_S


def test_a_skipped_midnight_starts_the_day_at_the_change() -> None:
    # America/Santiago, 2026-09-06: 00:00 (UTC-4) -> 01:00 (UTC-3), at 04:00 UTC.
    cal = Calendar("America/Santiago")
    day = cal.bounds(DAY_S, at("2026-09-06T12:00-03:00"))
    assert day == (at("2026-09-06T01:00-03:00"), at("2026-09-07T00:00-03:00"))
    assert Window("1d", cal).label(day[1]) == "2026-09-06"
    # 2026-04-05: 00:00 (UTC-3) -> 23:00 of the 4th (UTC-4): the 4th has 25 hours.
    before = cal.bounds(DAY_S, at("2026-04-04T12:00-03:00"))
    assert before[1] - before[0] == 25 * HOUR_S


def test_windows_of_a_berlin_calendar_with_the_fiscal_year_from_april() -> None:
    ws = calendar_windows(Calendar("Europe/Berlin", 4))
    t = at("2026-03-29T12:00+02:00")
    expected = {
        "1h": ("2026-03-29T12:00+02:00", "2026-03-29T13:00+02:00", "2026-03-29T12", 1 / 24),
        "1d": ("2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00", "2026-03-29", 1.0),
        "1w": ("2026-03-23T00:00+01:00", "2026-03-30T00:00+02:00", "2026-W13", 7.0),
        "1mo": ("2026-03-01T00:00+01:00", "2026-04-01T00:00+02:00", "2026-03", 31.0),
        "1q": ("2026-01-01T00:00+01:00", "2026-04-01T00:00+02:00", "FY2026-Q4", 90.0),
        "1y": ("2025-04-01T00:00+02:00", "2026-04-01T00:00+02:00", "FY2026", 365.0),
        "30d": ("2026-02-28T00:00+01:00", "2026-03-30T00:00+02:00", "2026-03-29", 30.0),
    }
    for name, (start, end, label, days) in expected.items():
        w = ws[name]
        assert w.newest_window(t) == (at(start), at(end)), name
        assert (w.label(at(end)), w.days(at(end))) == (label, days), name
    after = [ws["1q"].label(e) for e in ws["1q"].window_ends_between(t, t + 200 * DAY_S)]
    assert after == ["FY2026-Q4", "FY2027-Q1", "FY2027-Q2"]


def test_default_calendar_labels_and_iso_week_53() -> None:
    ws = calendar_windows(Calendar())
    new_year = at("2026-12-31T12:00+00:00")
    assert ws["1w"].label(ws["1w"].first_window_end_after(new_year)) == "2026-W53"
    assert ws["1q"].label(ws["1q"].first_window_end_after(new_year)) == "2026-Q4"
    assert ws["1y"].label(ws["1y"].first_window_end_after(new_year)) == "2026"
    feb = ws["1mo"].first_window_end_after(at("2028-02-10T00:00+00:00"))
    assert (ws["1mo"].label(feb), ws["1mo"].days(feb)) == ("2028-02", 29.0)


def test_panes_of_long_windows_and_when_they_may_go() -> None:
    ws = calendar_windows(Calendar("Europe/Berlin"))
    year_end = ws["1y"].first_window_end_after(at("2026-06-01T00:00+02:00"))
    months = ws["1y"].pane_starts(year_end)
    assert len(months) == 12 and months[0] == at("2026-01-01T00:00+01:00")
    # A day pane stays until the last 30-day window holding it closes: 30 local days on.
    day = at("2026-03-10T00:00+01:00")
    assert ws["30d"].window_end_of_pane(day) == at("2026-04-09T00:00+02:00")
    assert ws["1w"].window_end_of_pane(day) == at("2026-03-16T00:00+01:00")


def test_bad_calendar_settings_are_one_line_errors() -> None:
    with pytest.raises(Exception, match="unknown time zone 'Mars/Olympus'"):
        Settings(timezone="Mars/Olympus")
    with pytest.raises(Exception, match="less than or equal to 12"):
        Settings(fiscal_year_start=13)
    with pytest.raises(ValueError, match="month 1-12"):
        Calendar("UTC", 0)


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("KPI_TIMEZONE", "Mars/Olympus", "kpi: error: bad setting KPI_TIMEZONE: "),
        ("KPI_FISCAL_YEAR_START", "13", "kpi: error: bad setting KPI_FISCAL_YEAR_START: "),
        ("KPI_ONLY_WINDOWS", "1mo,2mo", "kpi: error: KPI_ONLY_WINDOWS names unknown windows: 2mo"),
    ],
)
def test_a_bad_calendar_setting_stops_the_worker_in_one_line(
    tmp_path: Path, variable: str, value: str, line: str
) -> None:
    done = run_kpi(tmp_path, "worker", **{variable: value})
    assert done.returncode == 2
    assert done.stderr.startswith(line) and done.stderr.count("\n") == 1, done.stderr


def _engine(zone: str = "UTC", fiscal: int = 1) -> Engine:
    return Engine(
        partitions={"invoices": 1, "hiring": 1, "incidents": 1},
        grace_s=3600,
        currency="USD",
        clock=lambda: 2e9,
        timezone=zone,
        fiscal_year_start=fiscal,
    )


def test_a_state_kept_in_another_calendar_is_refused() -> None:
    state = PartitionState("invoices", 0)
    _engine("Europe/Berlin", 4).assign(state)
    assert state.data["k|calendar"] == "Europe/Berlin 4"
    with pytest.raises(ConfigurationError, match="KPI_TIMEZONE=Europe/Berlin and KPI_FISCAL"):
        _engine("UTC").assign(state)
    _engine("Europe/Berlin", 4).assign(state)  # the same calendar again: fine


def test_a_version_1_state_counts_as_utc_and_loses_its_own_30d_panes() -> None:
    state = PartitionState("invoices", 0)
    day = "p|dso|1d|finance|1780000000"
    state.data.update(
        {
            day: [1.0, 1.0, 1.0],
            "p|dso|30d|finance|1780000000": [1.0, 1.0, 1.0],
            "b|dso|30d|finance": 5.0,
            "b|dso|1d|finance": 5.0,
        }
    )
    with pytest.raises(ConfigurationError, match="KPI_TIMEZONE=UTC"):
        _engine("Asia/Kolkata").assign(state)
    _engine().assign(state)
    assert sorted(state.data) == sorted([day, "b|dso|1d|finance", "k|calendar"])


def test_a_repeated_midnight_leaves_no_day_pane_out_of_the_longer_windows() -> None:
    # America/Havana, 2025-11-02: 01:00 CDT (UTC-4) -> 00:00 CST (UTC-5) at 05:00 UTC, so
    # the clock reads midnight at 04:00 and at 05:00 UTC: two day panes dated the 2nd.
    cal = Calendar("America/Havana")
    ws = calendar_windows(cal)
    first = cal.bounds(DAY_S, at("2025-11-02T04:30:00+00:00"))
    assert first == (at("2025-11-02T04:00:00+00:00"), at("2025-11-02T05:00:00+00:00"))
    week_end = ws["1w"].first_window_end_after(first[0])
    assert first[0] in ws["1w"].pane_starts(week_end)
    assert ws["1d"].pane_starts(first[1]) == (first[0],)
    month_end = ws["1mo"].first_window_end_after(first[0])
    assert len(ws["1y"].pane_starts(ws["1y"].first_window_end_after(first[0]))) == 12
    assert ws["1mo"].label(month_end) == "2025-11"
    # The date 2025-11-02 starts at the first midnight, and a 30d window ends with the date
    # (both of its day panes), not at the second midnight: one 30d window per date.
    assert cal.day_start(cal.date_at(first[1])) == first[0]
    end_of_date = at("2025-11-03T05:00:00+00:00")  # midnight CST of the 3rd
    assert ws["30d"].first_window_end_after(first[0]) == end_of_date
    assert ws["30d"].label(end_of_date) == "2025-11-02"
    assert ws["30d"].start_of(end_of_date) == at("2025-10-04T04:00:00+00:00")  # CDT
    assert len(ws["30d"].pane_starts(end_of_date)) == 31  # 30 dates, the 2nd in two panes
    assert ws["30d"].days(end_of_date) == 30


def test_a_month_starting_with_a_repeated_midnight() -> None:
    # America/Havana, 2026-11-01: 01:00 CDT (UTC-4) -> 00:00 CST (UTC-5) at 05:00 UTC. The
    # month of November starts at the first midnight (04:00 UTC), October ends there.
    ws = calendar_windows(Calendar("America/Havana"))
    october_end = ws["1mo"].first_window_end_after(at("2026-10-15T12:00:00+00:00"))
    assert october_end == at("2026-11-01T04:00:00+00:00")
    november_end = ws["1mo"].first_window_end_after(october_end)
    assert november_end == at("2026-12-01T05:00:00+00:00")
    assert ws["1mo"].start_of(november_end) == october_end
    assert ws["1mo"].label(november_end) == "2026-11"


@pytest.mark.parametrize(
    "zone",
    [
        "America/Havana",
        "America/Santiago",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
    ],
)
def test_every_window_of_two_years_is_the_references(zone: str) -> None:
    # The engine's windows against the batch reference's (tests/reference.py, written
    # from the SPEC apart from the engine), 2025 and 2026: each clock change, month,
    # quarter and fiscal year end; fiscal years from January and from April.
    lo, hi = at("2025-01-10T00:00:00+00:00"), at("2026-12-20T00:00:00+00:00")
    for fiscal in (1, 4):
        ws = calendar_windows(Calendar(zone, fiscal))
        ref = reference.Calendar(zone, fiscal)
        for name, w in ws.items():
            ours = [(w.start_of(e), e, w.label(e)) for e in w.window_ends_between(lo, hi)]
            theirs = [(s.start, s.end, s.label) for s in ref.between(name, lo, hi) if s.end <= hi]
            assert ours == theirs, (zone, fiscal, name)
