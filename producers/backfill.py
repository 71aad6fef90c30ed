"""``kpi publish FILE``: backfill events from a JSON Lines or CSV file into the input topics.

Every row is first checked with the worker's own rules (``schemas.decode`` plus the ``future``
check), so a file is published whole or, with ``--skip-invalid``, without its bad rows; nothing
is sent while a row would be dead-lettered for a reason a file can show. Rows are then routed
to their topic with their entity key, in file order, through one idempotent producer.
"""

from __future__ import annotations

import asyncio
import csv
import math
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from producers.publisher import Publisher
from schemas.decode import SCHEMA, decode
from schemas.errors import (
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    FUTURE,
    FUTURE_TOLERANCE_S,
    InvalidEvent,
    KpiError,
)
from schemas.events import MODEL_OF_TYPE, NUMERIC_STRING_PATTERN, TOPIC_OF_TYPE, key_of
from streams.config import INPUT_TOPICS, Settings, environment_help
from streams.logs import quiet_logger
from streams.topics import create_published_topics

__all__ = [
    "EXIT_INVALID_ROWS",
    "BackfillError",
    "EventChecker",
    "FileFormat",
    "Message",
    "Row",
    "Scan",
    "UncheckedRouter",
    "csv_record_to_event",
    "detect_format",
    "publish",
    "read_rows",
    "register",
    "Sent",
    "scan",
    "send_rows",
    "summary_record",
]

#: Exit code when rows are invalid and nothing was published (errors of the command are 2).
EXIT_INVALID_ROWS: Final = EXIT_NOTHING
_REPORT_EVERY_S: Final = 5.0  # progress lines when stdout is not a terminal
_PROGRESS_EVERY_ROWS: Final = 500
# For rows that are not a known type, decode's verdict does not depend on the topic:
# invalid_json, schema and unknown_type (for a type outside the contract) come first.
_ANY_INPUT_TOPIC: Final = INPUT_TOPICS[0]
_NUMERIC = re.compile(NUMERIC_STRING_PATTERN)
_INTEGER = re.compile(r"^[+-]?[0-9]{1,18}$")  # fits a JSON (64-bit) integer for orjson
_EXACT_FLOAT_INT: Final = 2**53


class BackfillError(KpiError):
    """The file cannot be read as events (missing, unreadable, bad CSV header, ...)."""


class FileFormat(StrEnum):
    """Input file formats."""

    jsonl = "jsonl"
    csv = "csv"


_FORMAT_OF_SUFFIX: Final = {
    ".jsonl": FileFormat.jsonl,
    ".ndjson": FileFormat.jsonl,
    ".json": FileFormat.jsonl,
    ".csv": FileFormat.csv,
}


@dataclass(frozen=True, slots=True)
class Row:
    """One event of the file: its 1-based line, its JSON bytes and, for CSV, the parsed object.

    ``problem`` is set when the file itself shows the row is broken in a way its JSON cannot
    (a CSV record with more cells than the header has columns).
    """

    line: int
    value: bytes
    fields: dict[str, object] | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """Where a row goes: logical topic, message key, value; event time if it was checked."""

    topic: str
    key: str
    value: bytes
    occurred_at_s: float | None = None


#: Turns a row into its message, or raises ``InvalidEvent`` (or ``BackfillError``).
Router = Callable[[Row], Message]


def detect_format(path: Path, explicit: FileFormat | None = None) -> FileFormat:
    """The format to read ``path`` with: ``explicit``, else from the file's extension."""
    if explicit is not None:
        return explicit
    found = _FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if found is None:
        msg = (
            f"cannot tell the format of {path} from its extension; "
            "use --format jsonl or --format csv"
        )
        raise BackfillError(msg)
    return found


def read_rows(path: Path, file_format: FileFormat) -> Iterator[Row]:
    """The rows of ``path`` in file order; blank lines are not rows.

    Raises :class:`BackfillError` for a file that cannot be read at all (a bad row is not an
    error here: it is a row whose bytes the checks will refuse).
    """
    try:
        if file_format is FileFormat.jsonl:
            yield from _jsonl_rows(path)
        else:
            yield from _csv_rows(path)
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise BackfillError(msg) from None


def _jsonl_rows(path: Path) -> Iterator[Row]:
    # Binary: a line that is not UTF-8 is a row the worker would call invalid_json, not a
    # reason to give up on the file.
    with path.open("rb") as file:
        for line_number, line in enumerate(file, 1):
            value = line.rstrip(b"\r\n")
            if value.strip():
                yield Row(line_number, value)


def _csv_rows(path: Path) -> Iterator[Row]:
    # utf-8-sig: spreadsheets write a byte-order mark that would otherwise stick to the first
    # column's name. newline="": the csv module handles line ends, also inside quoted cells.
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file, strict=True)
        try:
            header = _csv_header(path, reader)
            while True:
                first_line = reader.line_num + 1  # a record may span lines: report its first
                cells = next(reader, None)
                if cells is None:
                    return
                if not cells:
                    continue  # a blank line
                fields = csv_record_to_event(header, cells)
                problem = None
                if len(cells) > len(header):
                    # Most likely an unquoted comma: refuse rather than guess which cell moved.
                    problem = f"{len(cells)} cells but the CSV header has {len(header)} columns"
                yield Row(first_line, orjson.dumps(fields), fields, problem)
        except csv.Error as exc:
            msg = f"{path}:{reader.line_num}: unreadable CSV: {exc}"
            raise BackfillError(msg) from None
        except UnicodeDecodeError as exc:
            msg = f"{path}: not UTF-8 text after line {reader.line_num}: {exc.reason}"
            raise BackfillError(msg) from None


def _csv_header(path: Path, reader: Iterator[list[str]]) -> list[str]:
    for cells in reader:
        if not cells:
            continue
        names = [name.strip() for name in cells]
        if "" in names:
            column = names.index("") + 1
            msg = f"{path}: CSV header has a column without a name (column {column})"
            raise BackfillError(msg)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            msg = f"{path}: CSV header names {', '.join(repeated)} more than once"
            raise BackfillError(msg)
        return names
    msg = f"{path}: no CSV header line (the first line names the columns, e.g. event_id,type,...)"
    raise BackfillError(msg)


def csv_record_to_event(header: list[str], cells: list[str]) -> dict[str, object]:
    """One CSV record as the JSON object of its event, cells converted per the type's fields.

    An empty cell is a missing field. Amounts, costs and reporting amounts become JSON
    numbers, ``score`` an integer and ``voluntary`` a boolean (``true``/``false`` in any
    case) when they are spelled as such; a cell that is not is kept as text, so that the
    check reports it exactly as the worker would report the same JSON. Cells beyond the
    header are left out.
    """
    event: dict[str, object] = {}
    for name, text in zip(header, cells, strict=False):
        if text != "":
            event[name] = text
    event_type = event.get("type")
    converters = _CONVERTERS.get(event_type) if isinstance(event_type, str) else None
    if converters:
        for name, convert in converters.items():
            value = event.get(name)
            if isinstance(value, str):
                event[name] = convert(value)
    return event


def _to_number(text: str) -> object:
    if _NUMERIC.fullmatch(text) is None:
        return text
    number = float(text)
    if not math.isfinite(number):
        return text  # "1e400": let the check say it is out of range, not orjson's null
    if number.is_integer() and abs(number) < _EXACT_FLOAT_INT:
        return int(number)  # 120 rather than 120.0: what a source system would write
    return number


def _to_int(text: str) -> object:
    return int(text) if _INTEGER.fullmatch(text) else text


def _to_bool(text: str) -> object:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text


# Field annotation -> CSV text converter; every other field is text. Derived from the models,
# so a new field of an existing kind needs nothing here.
_CONVERTER_OF_ANNOTATION: Final[dict[object, Callable[[str], object]]] = {
    float: _to_number,
    float | None: _to_number,  # reporting_amount (an empty cell: not given)
    int: _to_int,
    bool: _to_bool,
}
_CONVERTERS: Final[dict[str, dict[str, Callable[[str], object]]]] = {
    event_type: {
        name: converter
        for name, info in model.model_fields.items()
        if (converter := _CONVERTER_OF_ANNOTATION.get(info.annotation)) is not None
    }
    for event_type, model in MODEL_OF_TYPE.items()
}


def _parsed(row: Row) -> object:
    if row.fields is not None:
        return row.fields
    try:
        return orjson.loads(row.value)
    except orjson.JSONDecodeError:
        return None


class EventChecker:
    """The worker's checks that need no state: decode (schema, type, currency) and ``future``.

    ``now_s`` is fixed for the whole run: both passes over the file then agree on every row,
    and the worker, whose clock is later, cannot find a row in the future that this did not.
    """

    def __init__(self, currency: str, now_s: float) -> None:
        self.currency = currency
        self.now_s = now_s

    def __call__(self, row: Row) -> Message:
        """The message of a valid row; ``InvalidEvent`` with the worker's reason otherwise."""
        if row.problem is not None:
            raise InvalidEvent(SCHEMA, row.problem)
        # decode needs the row's topic; parsing the JSON twice costs about a microsecond.
        obj = _parsed(row)
        event_type = obj.get("type") if isinstance(obj, dict) else None
        topic = _ANY_INPUT_TOPIC
        if isinstance(event_type, str):
            topic = TOPIC_OF_TYPE.get(event_type, _ANY_INPUT_TOPIC)
        event = decode(row.value, topic=topic, currency=self.currency)
        occurred_at_s = event.occurred_at_s
        if occurred_at_s > self.now_s + FUTURE_TOLERANCE_S:
            ahead_s = occurred_at_s - self.now_s
            detail = f"occurred_at is {ahead_s:.0f} s ahead of the clock"
            raise InvalidEvent(FUTURE, f"{detail} (more than {FUTURE_TOLERANCE_S} s)")
        return Message(event.topic, key_of(event), row.value, occurred_at_s)


class UncheckedRouter:
    """``--no-validate``: rows as they are, to their topic and key when those can be read.

    A row without a known ``type`` or a string key goes to ``fallback_topic``, keyed by its
    line number, so broken rows still reach the worker (and its dead-letter topic).
    """

    def __init__(self, fallback_topic: str | None, path: Path) -> None:
        self.fallback_topic = fallback_topic
        self.path = path

    def __call__(self, row: Row) -> Message:
        """The row's message; ``BackfillError`` if it needs ``--topic`` and there is none."""
        obj = _parsed(row)
        if isinstance(obj, dict):
            event_type = obj.get("type")
            model = MODEL_OF_TYPE.get(event_type) if isinstance(event_type, str) else None
            if model is not None:
                key = obj.get(model.key_field)
                if isinstance(key, str) and key:
                    return Message(model.topic, key, row.value)
        if self.fallback_topic is None:
            msg = (
                f"{self.path}:{row.line}: no usable type or key; with --no-validate such rows "
                "need --topic (invoices, hiring or incidents)"
            )
            raise BackfillError(msg)
        return Message(self.fallback_topic, str(row.line), row.value)


@dataclass
class Scan:
    """What a first pass over the file found."""

    rows: int = 0
    #: Valid rows per logical topic.
    valid: Counter[str] = field(default_factory=Counter)
    #: Invalid rows per dead-letter reason.
    invalid: Counter[str] = field(default_factory=Counter)
    #: Valid rows more than grace behind an earlier row of their topic (see :func:`scan`).
    maybe_late: int = 0
    first_maybe_late_line: int | None = None

    @property
    def valid_rows(self) -> int:
        """Rows that will be published."""
        return sum(self.valid.values())


def scan(
    rows: Iterator[Row],
    route: Router,
    *,
    grace_s: float,
    on_invalid: Callable[[Row, InvalidEvent], None],
    on_progress: Callable[[int], None] | None = None,
) -> Scan:
    """Route every row without sending anything; report each invalid row to ``on_invalid``.

    Also counts rows that may be dead-lettered as ``late``: the worker keeps a watermark per
    partition, so a row more than grace behind an earlier row of its topic is late if both
    land on the same partition (likely with many keys). A file sorted by ``occurred_at`` has
    none.
    """
    result = Scan()
    newest_by_topic: dict[str, float] = {}
    for row in rows:
        result.rows += 1
        if on_progress is not None and result.rows % _PROGRESS_EVERY_ROWS == 0:
            on_progress(result.rows)
        try:
            message = route(row)
        except InvalidEvent as exc:
            result.invalid[exc.reason] += 1
            on_invalid(row, exc)
            continue
        result.valid[message.topic] += 1
        t = message.occurred_at_s
        if t is not None:
            newest = newest_by_topic.get(message.topic, t)
            if t < newest - grace_s:
                result.maybe_late += 1
                if result.first_maybe_late_line is None:
                    result.first_maybe_late_line = row.line
            newest_by_topic[message.topic] = max(newest, t)
    return result


@dataclass
class Sent:
    """What the publishing pass did."""

    #: Messages handed to the publisher (all delivered once :func:`send_rows` returns).
    total: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    last_line: int = 0
    interrupted: bool = False


async def send_rows(
    rows: Iterator[Row],
    route: Router,
    publisher: Publisher,
    *,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Sent:
    """Send every row that ``route`` accepts, in file order; invalid rows are skipped.

    One producer and file order keep each entity's events in order: they share a key, hence
    a partition, and the idempotent producer never reorders a partition's messages.
    """
    sent = Sent()
    for row in rows:
        if stop is not None and stop.is_set():
            sent.interrupted = True
            break
        try:
            message = route(row)
        except InvalidEvent:
            continue  # reported by the first pass
        await publisher.send(message.topic, message.key, message.value)
        sent.total += 1
        sent.by_topic[message.topic] += 1
        sent.last_line = row.line
        if sent.total % _PROGRESS_EVERY_ROWS == 0:
            if on_progress is not None:
                on_progress(sent.total)
            await asyncio.sleep(0)  # let the signal handler and aiokafka's sender run
    await publisher.flush()
    return sent


# ---- the command ------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add the ``publish`` command to the ``kpi`` application."""
    from producers.cli import PRODUCER_SETTINGS

    app.command("publish", epilog=environment_help(*PRODUCER_SETTINGS))(publish)


def publish(
    file: Annotated[
        Path,
        typer.Argument(
            help="JSON Lines (.jsonl, .ndjson, .json: one object per line) or CSV (.csv, "
            "a header naming the contract's fields) file, one event per row.",
            show_default=False,
        ),
    ],
    file_format: Annotated[
        FileFormat | None,
        typer.Option("--format", help="File format, when the extension does not tell."),
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="Publish the valid rows and list the invalid ones. By default one invalid "
            "row means nothing is published (exit code 1).",
        ),
    ] = False,
    validate: Annotated[
        bool,
        typer.Option(
            "--validate/--no-validate",
            help="Check every row with the worker's rules first. --no-validate sends rows as "
            "they are, e.g. to test the dead-letter path.",
        ),
    ] = True,
    topic: Annotated[
        str | None,
        typer.Option(
            help="With --no-validate: the input topic for rows without a usable type or key "
            "(keyed by their line number).",
            show_default=False,
        ),
    ] = None,
    create_topics: Annotated[
        bool, typer.Option(help="Create missing input and dead-letter topics first.")
    ] = True,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="End with the summary as one JSON document on stdout (progress and invalid "
            "rows go to stderr); fields: README, 'Scripting'.",
        ),
    ] = False,
) -> None:
    """Publish events from a JSON Lines or CSV file to the input topics (a backfill).

    Exit 1 when rows are invalid and nothing was published, 130 when interrupted.
    """
    if topic is not None and topic not in INPUT_TOPICS:
        msg = f"{topic!r} is not an input topic; choose from {', '.join(INPUT_TOPICS)}"
        raise typer.BadParameter(msg, param_hint="--topic")
    if topic is not None and validate:
        msg = "only applies with --no-validate (valid rows go to their own topic)"
        raise typer.BadParameter(msg, param_hint="--topic")
    if skip_invalid and not validate:
        msg = "--skip-invalid needs validation; drop --no-validate"
        raise typer.BadParameter(msg, param_hint="--skip-invalid")
    if not file.is_file():
        reason = "no such file" if not file.exists() else "not a regular file"
        msg = f"cannot read {file}: {reason}"
        raise BackfillError(msg)
    chosen_format = detect_format(file, file_format)
    settings = Settings()
    route: Router = (
        EventChecker(settings.currency, now_s=time.time())
        if validate
        else UncheckedRouter(topic, file)
    )
    # Plain text only: details quote untrusted input, which rich would read as markup.
    # With --json stdout carries the summary document only: the rest goes to stderr.
    console = Console(stderr=as_json, soft_wrap=True, markup=False, emoji=False, highlight=False)
    errors = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)

    def report(row: Row, exc: InvalidEvent) -> None:
        # file:line: as compilers do, so editors and grep can jump to the row.
        errors.print(f"{file}:{row.line}: {exc.reason}: {exc.detail}")

    began = time.monotonic()
    before = _identity(file)
    with _Progress(console, "validating" if validate else "reading", None) as progress:
        found = scan(
            read_rows(file, chosen_format),
            route,
            grace_s=settings.grace_seconds,
            on_invalid=report,
            on_progress=progress.update,
        )
    if found.invalid and not skip_invalid:
        if as_json:
            elapsed_s = time.monotonic() - began
            _print_json(summary_record(file, found, Sent(), elapsed_s, validate, refused=True))
        else:
            _print_refusal(console, file, found)
        raise typer.Exit(EXIT_INVALID_ROWS)
    if not found.valid_rows:
        # Nothing to send: no reason to need Kafka (or to create topics) for an empty file.
        sent = Sent()
    else:
        if _identity(file) != before:
            msg = f"{file} changed while it was being checked; run the command again"
            raise BackfillError(msg)
        sent = asyncio.run(
            _publish_file(settings, file, chosen_format, route, found, console, create_topics)
        )
    elapsed_s = time.monotonic() - began
    if as_json:
        _print_json(summary_record(file, found, sent, elapsed_s, validate))
    else:
        _print_summary(console, file, found, sent, elapsed_s, validate)
    if sent.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


async def _publish_file(
    settings: Settings,
    path: Path,
    file_format: FileFormat,
    route: Router,
    found: Scan,
    console: Console,
    create_topics: bool,
) -> Sent:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        # aiokafka logs every failed connection attempt; PublishError says it in one line.
        with quiet_logger("aiokafka"):
            if create_topics:
                created = await create_published_topics(settings)
                if created:
                    console.print(f"created topics: {', '.join(created)}")
            async with Publisher(settings, client_id="kpi-publish") as publisher:
                with _Progress(console, "publishing", found.valid_rows) as progress:
                    return await send_rows(
                        read_rows(path, file_format),
                        route,
                        publisher,
                        stop=stop,
                        on_progress=progress.update,
                    )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


class _Progress:
    """A live rich bar on a terminal, else a plain line every few seconds."""

    def __init__(self, console: Console, phase: str, total: int | None) -> None:
        self._console = console
        self._phase = phase
        self._total = total
        self._live = console.is_terminal
        self._started = self._last_line = time.monotonic()
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task(phase, total=total)

    def __enter__(self) -> _Progress:
        if self._live:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live:
            self._bar.stop()

    def update(self, done: int) -> None:
        if self._live:
            self._bar.update(self._task, completed=done)
            return
        now = time.monotonic()
        if now - self._last_line >= _REPORT_EVERY_S:
            self._last_line = now
            of = f"/{self._total:,}" if self._total is not None else ""
            rate = done / max(now - self._started, 1e-9)
            self._console.print(f"kpi publish: {self._phase} {done:,}{of} rows ({rate:,.0f}/s)")


def _by(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items()))


def _print_refusal(console: Console, path: Path, found: Scan) -> None:
    bad = sum(found.invalid.values())
    console.print(
        f"kpi publish: {bad:,} of {found.rows:,} rows in {path} are invalid "
        f"({_by(found.invalid)}); nothing published"
    )
    console.print(
        f"  fix them, or use --skip-invalid to publish the {found.valid_rows:,} valid rows"
    )


def summary_record(
    path: Path, found: Scan, sent: Sent, elapsed_s: float, validated: bool, *, refused: bool = False
) -> dict[str, object]:
    """The summary as ``kpi publish --json`` prints it (the text summary's figures)."""
    status = "refused" if refused else "interrupted" if sent.interrupted else "done"
    return {
        "status": status,
        "file": str(path),
        "rows": found.rows,
        "published": sent.total,
        "published_by_topic": dict(sorted(sent.by_topic.items())),
        "validated": validated,
        "invalid": dict(sorted(found.invalid.items())),
        "maybe_late": found.maybe_late,
        "first_maybe_late_line": found.first_maybe_late_line,
        # The last line published: resume after it (when interrupted).
        "last_line": sent.last_line or None,
        "elapsed_s": elapsed_s,
    }


def _print_json(document: dict[str, object]) -> None:
    print(orjson.dumps(document).decode(), flush=True)


def _print_summary(
    console: Console, path: Path, found: Scan, sent: Sent, elapsed_s: float, validated: bool
) -> None:
    rate = sent.total / max(elapsed_s, 1e-9)
    console.print(
        f"kpi publish: {'interrupted' if sent.interrupted else 'done'}; read {found.rows:,} "
        f"rows from {path}, published {sent.total:,} in {elapsed_s:,.1f} s ({rate:,.0f}/s)"
    )
    console.print(f"  published by topic: {_by(sent.by_topic) or 'none'}")
    if not validated:
        console.print("  not validated (--no-validate): the worker judges every row")
    elif found.invalid:
        console.print(f"  invalid, skipped: {_by(found.invalid)}")
    else:
        console.print("  invalid: none")
    if found.maybe_late:
        console.print(
            f"  warning: {found.maybe_late:,} rows (first at line {found.first_maybe_late_line})"
            " are more than KPI_GRACE_SECONDS behind an earlier row of their topic; the worker"
            " may dead-letter them as late (sort the file by occurred_at)"
        )
    if sent.interrupted:
        console.print(
            f"  stopped after line {sent.last_line}: to resume, publish the rows after it"
        )
