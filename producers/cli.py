"""``kpi simulate``: publish the virtual company's events to Kafka, paced, with optional faults."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from producers.publisher import Publisher
from producers.resume import SimulatorRun
from producers.simulator import (
    INVALID_REASONS,
    TOPICS,
    CompanySimulator,
    Emission,
    Faults,
    foreign_currencies,
    time_zone,
)
from schemas.errors import EXIT_INTERRUPTED, ConfigurationError, KpiError
from streams.config import Settings, environment_help, kafka_settings
from streams.logs import quiet_logger
from streams.topics import create_published_topics

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_REPORT_EVERY_S = 5.0  # progress lines when stdout is not a terminal
_SAVE_EVERY_S = 5.0  # --state-file: flush and record the progress this often
_ALL_TOPICS = ",".join(TOPICS)
_ALL_REASONS = ",".join(INVALID_REASONS)
_INTERRUPTED = "interrupted"  # by Ctrl-C or SIGTERM: a summary, then exit code 130


#: What ``kpi simulate`` and ``kpi publish`` read: a Kafka client that creates its topics.
PRODUCER_SETTINGS: tuple[str, ...] = (
    *kafka_settings(),
    "topic_prefix",
    "app_id",
    "partitions",
    "replication_factor",
    "currency",
    "grace_seconds",
)


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to the ``kpi`` application."""
    app.command("simulate", epilog=environment_help(*PRODUCER_SETTINGS, "timezone"))(simulate)


def simulate(
    seed: Annotated[int, typer.Option(help="Random seed: same seed and start, same events.")] = 7,
    rate: Annotated[
        float, typer.Option(min=0.0, help="Cap in events per second (0 = as fast as possible).")
    ] = 50.0,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many messages.")] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="Stop after this many wall-clock seconds.")
    ] = None,
    start: Annotated[
        str,
        typer.Option(help="Simulated start: ISO 8601 (naive = UTC), 'now', or relative '30d'."),
    ] = "now",
    speed: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Simulated seconds per wall second (1 = real time, 0 = unpaced). "
            "Simulated time never passes the wall clock.",
        ),
    ] = 1.0,
    domains: Annotated[str, typer.Option(help="Comma-separated topics to simulate.")] = _ALL_TOPICS,
    out_of_order: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share delayed by less than grace.")
    ] = 0.0,
    late: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Rate of extra events beyond grace.")
    ] = 0.0,
    duplicates: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Rate of redelivered earlier events.")
    ] = 0.0,
    invalid: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Rate of invalid events (see --invalid-reasons)."),
    ] = 0.0,
    invalid_reasons: Annotated[
        str, typer.Option(help="Comma-separated dead-letter reasons to inject.")
    ] = _ALL_REASONS,
    scale: Annotated[float, typer.Option(min=0.001, help="Multiply the company's activity.")] = 1.0,
    currencies: Annotated[
        str,
        typer.Option(
            help="Comma-separated ISO 4217 codes (e.g. EUR,GBP): about 30% of the invoices and "
            "trainings are booked in them at a daily-varying rate, with reporting_amount."
        ),
    ] = "",
    timezone: Annotated[
        str | None,
        typer.Option(
            envvar="KPI_TIMEZONE",
            show_envvar=True,
            help="IANA time zone of the company's office hours and weekdays.",
        ),
    ] = None,
    create_topics: Annotated[
        bool, typer.Option(help="Create missing input and dead-letter topics first.")
    ] = True,
    state_file: Annotated[
        Path | None,
        typer.Option(
            help="Continue the company recorded in this file (created when missing): its "
            "start, hence its event ids, and after the messages already published. The "
            "other settings must be those it records.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="End with the summary as one JSON document on stdout (progress goes to "
            "stderr); fields: README, 'Scripting'.",
        ),
    ] = False,
) -> None:
    """Simulate a mid-size company and publish its back-office events to Kafka.

    Ctrl-C (or SIGTERM) stops it after a summary, with exit code 130.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        msg = f"bad KPI_ environment setting {where}: {first['msg']}"
        raise ConfigurationError(msg) from None
    now = time.time()
    start_at = _parse_start(start, now)
    chosen = _parse_list(domains, TOPICS, "--domains")
    reasons = _parse_list(invalid_reasons, INVALID_REASONS, "--invalid-reasons")
    faults = Faults.spread(
        out_of_order=out_of_order,
        late=late,
        duplicates=duplicates,
        invalid=invalid,
        reasons=reasons,
    )
    foreign = _checked(
        foreign_currencies, [c.strip() for c in currencies.split(",") if c.strip()],
        settings.currency, option="--currencies",
    )  # fmt: skip
    zone = timezone if timezone is not None else settings.timezone
    _checked(time_zone, zone, option="--timezone")
    run = None
    if state_file is not None:
        # Everything that shapes the stream; --start as written (a restart's "2d" is
        # another time, and the recorded one wins). Not the pace: --speed, --rate, limits.
        company = {
            "seed": seed,
            "start": start,
            "domains": chosen,
            "out_of_order": out_of_order,
            "late": late,
            "duplicates": duplicates,
            "invalid": invalid,
            "invalid_reasons": reasons,
            "scale": scale,
            "currency": settings.currency,
            "currencies": foreign,
            "timezone": zone,
            "grace_seconds": settings.grace_seconds,
        }
        run = SimulatorRun.open(state_file, company, start_at)
        start_at = run.start
    pacer = _Pacer(start_at, speed)
    simulator = CompanySimulator(
        seed,
        start_at,
        clock=pacer.clock,
        wall_clock=time.time,
        currency=settings.currency,
        currencies=foreign,
        timezone=zone,
        domains=chosen,
        faults=faults,
        grace_seconds=settings.grace_seconds,
        scale=scale,
    )
    limits = _Limits(rate=rate, count=count, duration_s=duration)
    # Plain lines stay whole in logs; tables still fit. With --json stdout carries the
    # summary document only: the rest goes to stderr.
    console = Console(soft_wrap=True, stderr=as_json)
    if run is not None and run.published:
        simulator.skip_to(run.published)
        pacer.move_start(simulator.now)
        console.print(
            f"kpi simulate: continuing from {state_file}: {run.published:,} messages published "
            f"already, up to {_iso(simulator.now)}"
        )
    tally = asyncio.run(_run(settings, simulator, pacer, limits, console, create_topics, run))
    if as_json:
        print(orjson.dumps(summary_record(simulator, tally)).decode(), flush=True)
    else:
        _print_summary(console, simulator, tally)
    if tally.stopped_by == _INTERRUPTED:
        raise typer.Exit(EXIT_INTERRUPTED)


@dataclass(frozen=True)
class _Limits:
    rate: float
    count: int | None
    duration_s: float | None


@dataclass
class _Tally:
    by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    sent: int = 0
    started: float = field(default_factory=time.monotonic)
    stopped_by: str = "stopped"

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


class _Pacer:
    """Simulated clock: ``start + speed * elapsed``, never ahead of the wall clock."""

    def __init__(self, start: float, speed: float) -> None:
        self.start = start
        self.speed = speed
        self._t0 = time.monotonic()

    def move_start(self, simulated: float) -> None:
        """Start the simulated clock at ``simulated`` instead (a resumed run)."""
        self.start = simulated

    def begin(self) -> None:
        """Start the simulated clock now (after connecting, so the pace is not off by that)."""
        self._t0 = time.monotonic()

    def clock(self) -> float:
        wall = time.time()
        if self.speed <= 0:
            return wall
        return min(wall, self.start + (time.monotonic() - self._t0) * self.speed)

    def wait_s(self, simulated: float) -> float:
        """Wall seconds until simulated time ``simulated`` is reached."""
        wait = simulated - time.time()
        if self.speed > 0:
            paced = (simulated - self.start) / self.speed - (time.monotonic() - self._t0)
            wait = max(wait, paced)
        return max(wait, 0.0)


async def _run(
    settings: Settings,
    simulator: CompanySimulator,
    pacer: _Pacer,
    limits: _Limits,
    console: Console,
    create_topics: bool,
    run: SimulatorRun | None = None,
) -> _Tally:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tally = _Tally()
    try:
        async with contextlib.AsyncExitStack() as resources:
            # aiokafka logs every failed connection attempt; PublishError says it in one line.
            with quiet_logger("aiokafka"):
                if create_topics:
                    created = await create_published_topics(settings)
                    if created:
                        console.print(f"created topics: {', '.join(created)}")
                publisher = await resources.enter_async_context(Publisher(settings))
            with _Progress(console, simulator, tally, limits.count) as progress:
                pacer.begin()
                tally.started = time.monotonic()
                save = None if run is None else _Saver(run, simulator, publisher)
                await _publish(simulator, publisher, pacer, limits, tally, stop, progress, save)
                if save is not None:  # stopped or a limit reached; not after a failure
                    await save.now()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return tally


async def _publish(
    simulator: CompanySimulator,
    publisher: Publisher,
    pacer: _Pacer,
    limits: _Limits,
    tally: _Tally,
    stop: asyncio.Event,
    progress: _Progress,
    save: _Saver | None = None,
) -> None:
    while True:
        if save is not None:
            await save.due()
        if stop.is_set():
            tally.stopped_by = _INTERRUPTED
            return
        if limits.count is not None and tally.sent >= limits.count:
            tally.stopped_by = "count reached"
            return
        if limits.duration_s is not None and tally.elapsed_s >= limits.duration_s:
            tally.stopped_by = "duration reached"
            return
        emission = simulator.take()
        if emission is None:
            # Caught up with the (paced) clock: sleep until the next message is due, waking
            # up regularly for the progress display, the duration limit and Ctrl-C.
            await publisher.flush()
            progress.update()
            await _sleep(stop, min(pacer.wait_s(simulator.next_time()), 0.5))
            continue
        await publisher.send(*emission)
        _count(tally, emission)
        if limits.rate > 0:
            ahead_s = tally.sent / limits.rate - tally.elapsed_s
            if ahead_s > 0.005:
                await _sleep(stop, ahead_s)
        if tally.sent % 500 == 0:
            progress.update()
            await asyncio.sleep(0)  # let signal handlers and aiokafka's sender run


def _count(tally: _Tally, emission: Emission) -> None:
    payload = emission.payload
    kind = payload.get("type") if isinstance(payload, dict) else None
    tally.by_type[emission.topic, kind if isinstance(kind, str) else "(raw or untyped)"] += 1
    tally.sent += 1


class _Saver:
    """Records in the state file how far the run got, once Kafka acknowledged it."""

    def __init__(self, run: SimulatorRun, simulator: CompanySimulator, publisher: Publisher):
        self._run = run
        self._simulator = simulator
        self._publisher = publisher
        self._saved = time.monotonic()

    async def due(self) -> None:
        """Save when the last save is ``_SAVE_EVERY_S`` old."""
        if time.monotonic() - self._saved >= _SAVE_EVERY_S:
            await self.now()

    async def now(self) -> None:
        """Flush (a failure raises: nothing unacknowledged is recorded), then save."""
        published, upto = self._simulator.published, self._simulator.now
        await self._publisher.flush()
        self._run.save(published, upto)
        self._saved = time.monotonic()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class _Progress:
    """A live rich display on a terminal, else a plain line every few seconds."""

    def __init__(
        self, console: Console, simulator: CompanySimulator, tally: _Tally, total: int | None
    ) -> None:
        self._console = console
        self._simulator = simulator
        self._tally = tally
        self._live = console.is_terminal
        self._last_line = time.monotonic()
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task("starting", total=total)

    def __enter__(self) -> _Progress:
        if self._live:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live:
            self._bar.stop()

    def update(self) -> None:
        text = self._status()
        if self._live:
            self._bar.update(self._task, description=text, completed=self._tally.sent)
        elif time.monotonic() - self._last_line >= _REPORT_EVERY_S:
            self._last_line = time.monotonic()
            print(f"kpi simulate: {text}", file=self._console.file, flush=True)

    def _status(self) -> str:
        tally, simulator = self._tally, self._simulator
        rate = tally.sent / max(tally.elapsed_s, 1e-9)
        faults = sum(simulator.injected.values())
        return (
            f"sent {tally.sent:,} ({rate:,.0f}/s), simulated up to {_iso(simulator.now)}, "
            f"faults {faults:,}"
        )


def summary_record(simulator: CompanySimulator, tally: _Tally) -> dict[str, object]:
    """The summary as ``kpi simulate --json`` prints it (the text summary's figures)."""
    return {
        "stopped_by": tally.stopped_by,
        "sent": tally.sent,
        "elapsed_s": tally.elapsed_s,
        "simulated_from": _iso(simulator.start, "T"),
        "simulated_to": _iso(simulator.now, "T"),
        "by_topic_and_type": [
            {"topic": topic, "type": kind, "count": n}
            for (topic, kind), n in sorted(tally.by_type.items())
        ],
        "injected_faults": dict(simulator.injected),
    }


def _print_summary(console: Console, simulator: CompanySimulator, tally: _Tally) -> None:
    elapsed = tally.elapsed_s
    console.print(
        f"kpi simulate: {tally.stopped_by}; sent {tally.sent:,} messages in {elapsed:,.1f} s "
        f"({tally.sent / max(elapsed, 1e-9):,.0f}/s); simulated "
        f"{_iso(simulator.start)} .. {_iso(simulator.now)}"
    )
    table = Table(title="messages by topic and type")
    table.add_column("topic")
    table.add_column("type")
    table.add_column("count", justify="right")
    for (topic, kind), n in sorted(tally.by_type.items()):
        table.add_row(topic, kind, f"{n:,}")
    console.print(table)
    injected = simulator.injected
    if injected:
        faults = Table(title="injected faults")
        faults.add_column("kind")
        faults.add_column("count", justify="right")
        for kind, n in injected.items():
            faults.add_row(kind, f"{n:,}")
        console.print(faults)


def _parse_start(text: str, now: float) -> float:
    value = text.strip().lower()
    if value == "now":
        return now
    relative = _RELATIVE.match(value)
    if relative:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"expected 'now', an ISO 8601 time or a duration ago like 30d/12h, got {text!r}"
        raise typer.BadParameter(msg, param_hint="--start") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    start = parsed.timestamp()
    if start > now:
        msg = f"{text!r} is in the future; simulated time never runs ahead of the clock"
        raise typer.BadParameter(msg, param_hint="--start")
    return start


_T = TypeVar("_T")


def _checked(check: Callable[..., _T], *args: Any, option: str) -> _T:
    """``check(*args)``, its ``ConfigurationError`` told as a bad value of ``option``."""
    try:
        return check(*args)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _parse_list(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        msg = f"unknown value(s) {', '.join(unknown) or '(none)'}; choose from {','.join(allowed)}"
        raise typer.BadParameter(msg, param_hint=option)
    return items


def _iso(t: float, sep: str = " ") -> str:
    """UTC to the second; ``sep="T"``: RFC 3339, as in JSON."""
    return datetime.fromtimestamp(t, tz=UTC).strftime(f"%Y-%m-%d{sep}%H:%M:%SZ")


if __name__ == "__main__":  # pragma: no cover - handy without the lead's ``kpi`` entry point
    _app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(_app)
    try:
        _app()
    except KpiError as exc:
        print(f"kpi simulate: error: {exc}", file=sys.stderr)
        sys.exit(2)
