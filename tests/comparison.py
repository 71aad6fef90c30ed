"""One comparison of closed windows with the batch reference, for every test that makes one.

The engine's closed ``WindowValue``s (unit tests) and Redis history members (integration
tests) are both read as ``reference.HistoryRecord`` and compared field by field with the
reference's: window end, label and count exactly; the value within 1e-9 relative (its
float expression may differ in the last bits); for the duration KPIs the percentiles within
the 1% relative error SPEC section 2 allows (``|got - exact| <= 0.01 * exact``: 0 exactly
for a duration of 0, None exactly when there is no duration) and the worst entities exactly
(ids, seconds as the same floats, order).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streams.catalog import CATALOG
from streams.core.records import WindowValue
from streams.kpis.base import Kpi
from streams.kpis.it import with_slas
from streams.kpis.sla import (
    DEFAULT_INCIDENT_SLA,
    DEFAULT_TICKET_SLA,
    INCIDENT_SEVERITIES,
    TICKET_PRIORITIES,
    parse_slas,
)
from tests.reference import HistoryRecord, RefResult

Key = tuple[str, str, str]
#: A history as a test collects it: (kpi, window, scope) -> {window start: record}.
Windows = dict[Key, dict[int, HistoryRecord]]

#: ``KPI_TICKET_SLA`` / ``KPI_INCIDENT_SLA`` tighter than the defaults, for the fixed
#: multi-day logs: their resolutions fall on both sides of them.
TIGHT_TICKET_SLA = "p1=30m,p2=2h,p3=6h,p4=1d"
TIGHT_INCIDENT_SLA = "sev1=1h,sev3=8h"

VALUE_REL_TOL = 1e-9
VALUE_ABS_TOL = 1e-12
#: SPEC section 2, "Distributions": a reported percentile's bound around the exact x_k.
PERCENTILE_REL_ERROR = 0.01
PERCENTILES = ("p50", "p90", "p99")


def engine_catalog(ticket_sla: str = "", incident_sla: str = "") -> tuple[Kpi, ...]:
    """The engine's catalog under ``KPI_TICKET_SLA`` / ``KPI_INCIDENT_SLA`` settings (the
    reference takes the same texts and reads them on its own)."""
    return with_slas(
        CATALOG,
        parse_slas(ticket_sla, TICKET_PRIORITIES, DEFAULT_TICKET_SLA),
        parse_slas(incident_sla, INCIDENT_SEVERITIES, DEFAULT_INCIDENT_SLA),
    )


def from_window_value(wv: WindowValue) -> HistoryRecord:
    """A closed window of the engine as the reference states it."""
    return HistoryRecord(
        wv.start, wv.end, wv.label, wv.value, wv.count, wv.p50, wv.p90, wv.p99, wv.worst
    )


def _seconds(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp())


def from_member(doc: Mapping[str, Any]) -> HistoryRecord:
    """A Redis history member (SPEC section 3) as the reference states a window.

    A member without ``worst`` (any KPI but the five duration KPIs) has no distribution.
    """
    worst = doc.get("worst")
    return HistoryRecord(
        _seconds(doc["window_start"]),
        _seconds(doc["window_end"]),
        doc.get("label"),
        doc["value"],
        doc["count"],
        doc.get("p50"),
        doc.get("p90"),
        doc.get("p99"),
        None if worst is None else tuple((w["id"], w["seconds"]) for w in worst),
    )


def within_percentile_bound(got: float | None, exact: float | None) -> bool:
    """A reported percentile against the exact x_k of the reference."""
    if got is None or exact is None:
        return got is exact
    return abs(got - exact) <= PERCENTILE_REL_ERROR * exact


def differences(want: HistoryRecord, got: HistoryRecord) -> list[tuple[str, Any, Any]]:
    """(field, expected, got) for every field of ``got`` that does not match ``want``."""
    out: list[tuple[str, Any, Any]] = []
    for name in ("window_start", "window_end", "label", "count", "worst"):
        if getattr(want, name) != getattr(got, name):
            out.append((name, getattr(want, name), getattr(got, name)))
    if want.value is None or got.value is None:
        same = want.value is got.value
    else:
        same = math.isclose(got.value, want.value, rel_tol=VALUE_REL_TOL, abs_tol=VALUE_ABS_TOL)
    if not same:
        out.append(("value", want.value, got.value))
    for name in PERCENTILES:
        if not within_percentile_bound(getattr(got, name), getattr(want, name)):
            out.append((name, getattr(want, name), getattr(got, name)))
    return out


def window_mismatches(
    key: Key, got: Mapping[int, HistoryRecord], want: Mapping[int, HistoryRecord]
) -> list[tuple[Any, ...]]:
    """(key, window start, differences) for every window of ``want`` that ``got`` lacks or
    holds otherwise (``None`` differences: missing), and every window only ``got`` has."""
    out: list[tuple[Any, ...]] = []
    for start, record in sorted(want.items()):
        found = got.get(start)
        if found is None:
            out.append((key, start, None))
        elif diff := differences(record, found):
            out.append((key, start, diff))
    out.extend((key, start, "unexpected") for start in sorted(set(got) - set(want)))
    return out


def mismatches(expected: RefResult, got: Windows) -> list[tuple[Any, ...]]:
    """Every difference between a collected history and the reference's closed windows."""
    wanted = {key for key, windows in expected.history.items() if windows}
    out: list[tuple[Any, ...]] = [
        (key, "unexpected history")
        for key in sorted(k for k, v in got.items() if v)
        if key not in wanted
    ]
    for key in sorted(wanted):
        out += window_mismatches(key, got.get(key, {}), expected.records(key))
    return out


def describe(found: list[tuple[Any, ...]], total: int) -> str:
    """A failure message: how many windows differ, in which fields, and the first few."""
    fields = Counter(name for m in found if isinstance(m[-1], list) for name, _want, _got in m[-1])
    return (
        f"{len(found)} of {total} closed windows differ from the reference"
        f" (fields: {dict(fields)}), e.g. {found[:5]}"
    )


def assert_equal(expected: RefResult, got: Windows) -> None:
    """The collected history equals the reference's closed windows (see the module doc)."""
    found = mismatches(expected, got)
    assert not found, describe(found, sum(len(v) for v in expected.history.values()))


def collect(closed: list[WindowValue], *, once: bool = True) -> Windows:
    """The engine's closed windows by key and start; a window closed twice is an error
    (``once``), or with replays after a crash (``once=False``) must come out identical."""
    out: Windows = {}
    for wv in closed:
        windows = out.setdefault((wv.kpi, wv.window, wv.scope), {})
        record = from_window_value(wv)
        if wv.start in windows:
            assert not once, f"closed twice: {wv}"
            assert windows[wv.start] == record, f"two versions: {windows[wv.start]} {wv}"
        windows[wv.start] = record
    return out


def assert_rich(expected: RefResult) -> None:
    """The log exercises what the distributions can get wrong: windows with more than ten
    durations (so the worst list is cut), durations of 0, ties in seconds among a worst list
    (the id decides), and SLA attainments strictly between 0 and 1."""
    dists = [d for per_key in expected.distributions.values() for d in per_key.values()]
    sizes = [
        expected.history[key][start][1]
        for key, per in expected.distributions.items()
        for start in per
    ]
    assert sum(n > 10 for n in sizes) > 20
    assert any(d.p50 == 0.0 for d in dists)
    assert any(s == t for d in dists for (_, s), (_, t) in zip(d.worst, d.worst[1:], strict=False))
    slas = {k.name for k in CATALOG if k.sla}
    attainments = [
        v
        for (kpi, _w, _s), per_start in expected.history.items()
        if kpi in slas
        for v, _n in per_start.values()
    ]
    assert any(v is not None and 0.0 < v < 1.0 for v in attainments)
