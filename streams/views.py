"""Terminal views of the KPIs read from Redis: ``kpi get``, its ``--all`` table, ``kpi why``.

Each view reads once, builds plain records (the ``--json`` documents, docs/CONTRACT.md
field names, README "Scripting"), and renders them as text or JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from redis.exceptions import RedisError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from schemas.errors import ConfigurationError, NothingToShow, UnavailableError
from streams.catalog import CATALOG
from streams.config import Settings, shown_url
from streams.core.windows import rfc3339
from streams.kpis import units
from streams.kpis.base import ROLLUP, WINDOWS, Kpi
from streams.reader import KpiReader, KpiValue
from streams.redis_client import redis_reason
from streams.targets import configured_catalog

#: The windows a table shows, in the SPEC's order: those some KPI keeps.
TABLE_WINDOWS: tuple[str, ...] = tuple(w for w in WINDOWS if any(w in k.windows for k in CATALOG))


def meets(kpi: Kpi, value: float | None, scope: str = ROLLUP) -> bool | None:
    """Whether a value of ``scope`` meets the KPI's target (None when undefined).

    A scope with a target of its own (``KPI_TARGETS_FILE``) is judged against it.
    """
    return None if value is None else kpi.target.met(value, scope)


Verdict = Literal["meets", "misses"]


def verdict(kpi: Kpi, value: float | None, scope: str = ROLLUP) -> Verdict | None:
    """``meets`` or ``misses`` its target, as the ``--json`` records say; None when undefined."""
    ok = meets(kpi, value, scope)
    return None if ok is None else ("meets" if ok else "misses")


def _time(t: datetime) -> str:
    """RFC 3339 UTC, as in Redis (``2026-03-01T00:00:00Z``)."""
    return rfc3339(t.timestamp())


def window_fields(kpi: Kpi, value: KpiValue | None, scope: str = ROLLUP) -> dict[str, Any]:
    """One window's fields by their Redis names (SPEC section 3), and its ``verdict``.

    The verdict is against ``scope``'s target (its own, when ``KPI_TARGETS_FILE`` gives it one).

    ``value`` None (Redis holds nothing for the window yet): the same fields, all null. A
    duration KPI's ``p50``, ``p90``, ``p99`` and ``worst`` (``[{"id", "seconds"}]``) are
    always there (null when a version 1 worker wrote the window). Numbers at full precision.
    """
    fields: dict[str, Any] = {
        "value": value.value if value else None,
        "count": value.count if value else None,
        "window_start": _time(value.window_start) if value else None,
        "window_end": _time(value.window_end) if value else None,
        "label": value.label if value else None,
        "final": value.final if value else None,
        "updated_at": _time(value.updated_at) if value and value.updated_at else None,
    }
    if kpi.distribution:
        worst = value.worst if value else None
        fields.update(
            p50=value.p50 if value else None,
            p90=value.p90 if value else None,
            p99=value.p99 if value else None,
            worst=None if worst is None else [{"id": i, "seconds": s} for i, s in worst],
        )
    fields["verdict"] = verdict(kpi, value.value if value else None, scope)
    return fields


def kpi_record(
    kpi: Kpi, window: str, scope: str, value: KpiValue | None, currency: str
) -> dict[str, Any]:
    """A KPI's window as ``kpi get --json`` prints it: who it is, its target, its fields."""
    return {
        "name": kpi.name,
        "window": window,
        "scope": scope,
        "title": kpi.title,
        "unit": kpi.unit_label(currency),
        # The catalog's own target object (SPEC section 3, ``kpi:catalog``).
        "target": kpi.catalog_entry(currency)["target"],
        **window_fields(kpi, value, scope),
    }


def print_json(document: object) -> None:
    """One JSON document on one line of stdout, flushed (``watch --json``: JSON Lines)."""
    sys.stdout.write(orjson.dumps(document).decode() + "\n")
    sys.stdout.flush()


def _check(name: str, window: str, catalog: Sequence[Kpi] = CATALOG) -> Kpi:
    kpis = {k.name: k for k in catalog}
    kpi = kpis.get(name)
    if kpi is None:
        msg = f"unknown KPI {name!r}; one of: {', '.join(kpis)}"
        raise ConfigurationError(msg)
    if window not in kpi.windows:
        msg = f"unknown window {window!r} for {name}; one of: {', '.join(kpi.windows)}"
        raise ConfigurationError(msg)
    return kpi


def _check_window(window: str) -> str:
    if window not in TABLE_WINDOWS:
        msg = f"unknown window {window!r}; one of: {', '.join(TABLE_WINDOWS)}"
        raise ConfigurationError(msg)
    return window


def _span(value: KpiValue) -> str:
    """``2026-03: 2026-02-28 23:00 .. 2026-03-31 22:00 UTC``: the label, then the bounds."""
    bounds = f"{value.window_start:%Y-%m-%d %H:%M} .. {value.window_end:%Y-%m-%d %H:%M} UTC"
    return f"{value.label}: {bounds}" if value.label else bounds


@contextlib.asynccontextmanager
async def _reading(settings: Settings) -> AsyncIterator[KpiReader]:
    """A reader of the configured Redis; an unreachable or refusing Redis is one error line."""
    try:
        async with KpiReader(
            settings.redis_url, prefix=settings.redis_prefix, **settings.redis_options()
        ) as reader:
            yield reader
    except (RedisError, OSError) as exc:
        msg = f"cannot read Redis at {shown_url(settings.redis_url)}: {redis_reason(exc)}"
        raise UnavailableError(msg) from None


def _percentiles(kpi: Kpi, value: KpiValue, currency: str) -> str:
    """`` (p50 1.0 h, p90 5.0 h, p99 9.0 h)`` for a duration KPI's value; else empty."""
    if value.worst is None:  # not a duration KPI, or written by a version 1 worker
        return ""
    shown = ", ".join(
        f"{q} {units.value_text(kpi, v, currency)}"
        for q, v in (("p50", value.p50), ("p90", value.p90), ("p99", value.p99))
    )
    return f" ({shown})"


def _no_value(settings: Settings, name: str, window: str, scope: str) -> NothingToShow:
    msg = f"no value yet for {name} {window} {scope} in {shown_url(settings.redis_url)}"
    return NothingToShow(msg)


async def print_one(
    settings: Settings,
    name: str,
    window: str,
    scope: str,
    history: int,
    *,
    as_json: bool = False,
) -> None:
    """``kpi get NAME``: one value, optionally with recent history.

    A duration KPI's percentiles are shown next to its mean; the line ends with the verdict
    against the scope's target (its own, when ``KPI_TARGETS_FILE`` gives it one). No value
    yet is ``NothingToShow``. ``as_json``: the ``kpi_record``, with ``history`` (oldest first) when
    asked.
    """
    kpi = _check(name, window, configured_catalog(settings))
    currency = settings.currency
    async with _reading(settings) as reader:
        current = await reader.current(name, window, scope)
        if current is None:
            raise _no_value(settings, name, window, scope)
        past = (await reader.history(name, window, scope))[-history:] if history > 0 else []
    if as_json:
        document = kpi_record(kpi, window, scope, current, currency)
        if history > 0:
            document["history"] = [window_fields(kpi, p, scope) for p in past]
        print_json(document)
        return
    _print_one_text(settings, kpi, current, past)


def _print_one_text(
    settings: Settings, kpi: Kpi, current: KpiValue, past: Sequence[KpiValue]
) -> None:
    currency = settings.currency
    name, window, scope = current.name, current.window, current.scope
    state = "final" if current.final else "open"
    print(
        f"{name} {window} {scope}: {units.value_text(kpi, current.value, currency)}"
        f"{_percentiles(kpi, current, currency)} "
        f"[{_span(current)}, {state}, {current.count} events; "
        f"{_target_text(kpi, scope, currency)}] {_verdict(kpi, current.value, scope)}"
    )
    for closed in past:
        print(
            f"  {closed.label or '-':<13}  {closed.window_start:%Y-%m-%d %H:%M} UTC  "
            f"{units.value_text(kpi, closed.value, settings.currency):>14}  "
            f"({closed.count} events){_percentiles(kpi, closed, currency)}"
        )


def _target_text(kpi: Kpi, scope: str, currency: str) -> str:
    """``target at most 35.0 d for sales, judged on 30d``."""
    target = kpi.target
    own = scope != ROLLUP and any(name == scope for name, _ in target.scopes)
    return (
        f"target {target.direction.replace('_', ' ')} "
        f"{units.value_text(kpi, target.value_for(scope), currency)}"
        f"{f' for {scope}' if own else ''}, judged on {', '.join(target.windows)}"
    )


def _verdict(kpi: Kpi, value: float | None, scope: str) -> str:
    ok = meets(kpi, value, scope)
    return "undefined" if ok is None else "meets its target" if ok else "misses its target"


async def print_all(
    settings: Settings, window: str | None = None, watch_s: float = 0, *, as_json: bool = False
) -> None:
    """``kpi get --all`` and ``kpi watch``: every KPI's roll-up in every window (or one).

    With ``watch_s`` the table is redrawn every ``watch_s`` seconds until Ctrl-C. With
    ``as_json`` the ``all_json`` document is printed instead, once or, with ``watch_s``, once
    per redraw (JSON Lines).
    """
    if window is not None:
        _check_window(window)
    catalog = configured_catalog(settings)
    if as_json:
        while True:
            print_json(all_json(settings, await read_all(settings, window, catalog)))
            if not watch_s:
                return
            await asyncio.sleep(watch_s)
    if not watch_s:
        # Into a pipe or file rich would assume 80 columns and cut the KPI names: no wrapping.
        width = None if sys.stdout.isatty() else 240
        Console(width=width).print(await all_table(settings, window, catalog))
        return
    table = await all_table(settings, window, catalog)
    with Live(table, refresh_per_second=4, screen=False) as live:
        while True:
            await asyncio.sleep(watch_s)
            live.update(await all_table(settings, window, catalog))


@dataclass(frozen=True)
class AllValues:
    """What ``kpi get --all`` read: the newest value of every KPI in ``windows`` (scope all)."""

    read_at: datetime
    windows: tuple[str, ...]
    #: ``(name, window)`` -> its newest value (None: nothing written yet), for every window
    #: of ``windows`` the KPI keeps.
    found: dict[tuple[str, str], KpiValue | None]
    #: The catalog read, with ``KPI_TARGETS_FILE``'s targets (``configured_catalog``).
    catalog: tuple[Kpi, ...] = CATALOG


async def read_all(
    settings: Settings, window: str | None = None, catalog: Sequence[Kpi] = CATALOG
) -> AllValues:
    """Every KPI's newest value in every window (or ``window``), in one round trip."""
    windows = (window,) if window else TABLE_WINDOWS
    wanted = [(kpi.name, w, "all") for kpi in catalog for w in windows if w in kpi.windows]
    read_at = datetime.now(tz=UTC)
    async with _reading(settings) as reader:
        values = await reader.currents(wanted)
    found = {(name, w): value for (name, w, _), value in zip(wanted, values, strict=True)}
    return AllValues(read_at, windows, found, tuple(catalog))


def all_json(settings: Settings, read: AllValues) -> dict[str, Any]:
    """``kpi get --all --json``: where and when it read, then one ``kpi_record`` per value.

    ``values`` lists every KPI (catalog order) in every window it keeps of ``windows``; a
    window with nothing written yet has null fields.
    """
    kpis = {k.name: k for k in read.catalog}
    return {
        "redis": shown_url(settings.redis_url),
        "read_at": _time(read.read_at),
        "scope": "all",
        "windows": list(read.windows),
        "values": [
            kpi_record(kpi, w, "all", value, settings.currency)
            for (name, w), value in read.found.items()
            for kpi in (kpis[name],)
        ],
    }


def _cell(kpi: Kpi, value: KpiValue | None, currency: str) -> str:
    """A table cell: the value coloured against the target, the window's label below it.

    A duration KPI's cell adds its p90 below that (``p90 5.0 h``: no wider than a label).
    """
    v = value.value if value else None
    ok = meets(kpi, v)
    text = units.value_text(kpi, v, currency)
    if ok is not None:
        text = f"[{'green' if ok else 'red'}]{text}[/]"
    if value is not None and value.label:
        text += f"\n[dim]{value.label}[/]"
    if value is not None and value.worst is not None:
        text += f"\n[dim]p90 {units.value_text(kpi, value.p90, currency)}[/]"
    return text


async def all_table(
    settings: Settings, window: str | None = None, catalog: Sequence[Kpi] = CATALOG
) -> Table:
    """The table of every KPI's newest roll-up values, coloured against the targets.

    ``catalog``: with ``KPI_TARGETS_FILE``'s targets (``configured_catalog``).
    """
    return render_table(settings, await read_all(settings, window, catalog))


def render_table(settings: Settings, read: AllValues) -> Table:
    """``read`` as the ``kpi get --all`` table: a row per KPI, a column per window."""
    windows = read.windows
    stamp = read.read_at.strftime("%H:%M:%S")
    table = Table(
        title=f"backoffice KPIs (scope all) from {shown_url(settings.redis_url)} at {stamp} UTC",
        caption=(
            "green: meets its target, red: misses it, -: undefined (no data in the window); "
            "under each value its window's label (and for a duration its 90th percentile, "
            "p90); *: the window the target is judged on"
        ),
    )
    table.add_column("KPI", no_wrap=True, min_width=max(len(k.name) for k in CATALOG))
    for w in windows:
        table.add_column(w, justify="right")
    table.add_column("target", justify="right")
    for kpi in read.catalog:
        cells = []
        for w in windows:
            if w not in kpi.windows:
                cells.append("")
                continue
            cell = _cell(kpi, read.found[(kpi.name, w)], settings.currency)
            cells.append(f"*{cell}" if w in kpi.target.windows else cell)
        goal = "<=" if kpi.target.direction == "at_most" else ">="
        table.add_row(
            kpi.name,
            *cells,
            f"{goal} {units.value_text(kpi, kpi.target.value, settings.currency)}",
        )
    return table


#: The entities ``kpi why`` lists (SPEC section 2: "the 10 longest").
WORST_ROWS = 10


async def print_worst(
    settings: Settings,
    name: str,
    window: str,
    scope: str,
    label: str | None = None,
    *,
    as_json: bool = False,
) -> bool:
    """``kpi why NAME``: the worst entities of a window, longest first; False if none.

    The newest window, or the closed window ``label`` (from the history). An unknown KPI
    or window and a KPI without a distribution are errors (``ConfigurationError``); no
    value yet (as ``kpi get``) and a closed window not in the history, ``NothingToShow``.
    ``as_json``: the window's ``kpi_record`` (its ``worst``: the listed entities).
    """
    kpi = _check(name, window)
    if not kpi.distribution:
        durations = ", ".join(k.name for k in CATALOG if k.distribution)
        msg = f"{name} has no worst entities: only the duration KPIs do ({durations})"
        raise ConfigurationError(msg)
    async with _reading(settings) as reader:
        if label is None:
            found = await reader.current(name, window, scope)
            if found is None:
                raise _no_value(settings, name, window, scope)
        else:
            history = await reader.history(name, window, scope)
            found = next((past for past in reversed(history) if past.label == label), None)
            if found is None:
                newest = ", ".join(past.label for past in history[-3:] if past.label)
                msg = (
                    f"no closed window {label!r} of {name} {window} {scope} in "
                    f"{shown_url(settings.redis_url)}"
                    + (f"; the newest closed: {newest}" if newest else "")
                )
                raise NothingToShow(msg)
    worst = found.worst or ()
    if as_json:
        document = kpi_record(kpi, window, scope, found, settings.currency)
        document["worst"] = [{"id": i, "seconds": s} for i, s in worst[:WORST_ROWS]]
        print_json(document)
        return bool(worst)
    state = "final" if found.final else "open"
    where = f"{name} {window} {scope} [{_span(found)}, {state}, {found.count} events]"
    if not worst:
        # A version 1 worker's window (no ``worst``) reads the same: nothing to list.
        print(f"{where}: nothing measured, no worst entities")
        return False
    print(f"{where}: the {min(len(worst), WORST_ROWS)} longest")
    rows = worst[:WORST_ROWS]
    id_width = max(len("id"), *(len(entity) for entity, _ in rows))
    texts = [units.value_text(kpi, seconds, settings.currency) for _, seconds in rows]
    text_width = max(len(t) for t in texts)
    for rank, ((entity, seconds), text) in enumerate(zip(rows, texts, strict=True), start=1):
        # To the millisecond, as event times are given (the exact value is in Redis).
        print(f"{rank:>3}  {entity:<{id_width}}  {text:>{text_width}}  {seconds:.3f} s")
    return True
