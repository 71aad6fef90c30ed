"""``kpi dlq``: dead letters as they arrive (``tail``), counted (``stats``), sent again.

An operator's tool beside the worker (SPEC section 7). It reads the dead-letter topic by
partition assignment (no consumer group). ``replay`` publishes the selected payloads to
their original topic and partition with their original key, and records each one in a
compacted ledger topic (``<prefix>kpi.dead-letter.replayed``, keyed by the source message's
``topic:partition:offset``) once Kafka has acknowledged the publish: a second run, by any
operator, skips what the ledger holds, and a crash between the two can only resend (the
worker drops a redelivered event it applied as a duplicate).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from schemas.decode import CURRENCY, INVALID_JSON, SCHEMA, UNKNOWN_TYPE
from schemas.errors import FUTURE, ConfigurationError, UnavailableError
from streams.config import Settings, environment_help, kafka_settings
from streams.kafka import error_reason, make_producer, make_reader, start_reachable

#: Every reason the worker dead-letters with (SPEC section 1; ``cardinality`` is the
#: worker's guard on the number of dimension values, ``KPI_MAX_DIMENSION_VALUES``).
REASONS: tuple[str, ...] = (
    INVALID_JSON,
    SCHEMA,
    UNKNOWN_TYPE,
    CURRENCY,
    "unknown_entity",
    "invalid_transition",
    FUTURE,
    "late",
    "cardinality",
)
#: The ledger topic's configuration: one record per replayed dead letter, compacted.
LEDGER_CONFIG = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}
#: Publishes in flight before they are awaited and written to the ledger.
_CHUNK = 500
_START_TIMEOUT_S = 12.0
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

dlq_app = typer.Typer(
    help="Dead letters: watch them arrive, count them, replay them once the cause is fixed.",
    no_args_is_help=True,
)


# --- the records -------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterRecord:
    """One dead-letter message as read back: the record of SPEC section 1 and where it is."""

    #: Where the dead letter is in the dead-letter topic, and when it was written (ms).
    dlq_partition: int
    dlq_offset: int
    timestamp_ms: int
    reason: str
    detail: str
    #: The original (prefixed) topic, partition and offset of the message.
    topic: str
    partition: int
    offset: int
    #: The original key and payload, exact (from ``*_base64`` when they were not UTF-8).
    key: bytes | None
    payload: bytes
    #: The record as written.
    record: dict[str, Any] = field(repr=False)

    @property
    def source(self) -> str:
        """``topic:partition:offset`` of the original message: the ledger key."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def dead_lettered_at(self) -> datetime:
        """When the worker wrote the dead letter (its Kafka timestamp)."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def line(self) -> str:
        """One line for a person: time, reason, topic/partition/offset, key, detail."""
        key = self.record.get("key")
        shown_key = "-" if key is None else str(key)
        when = self.dead_lettered_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f"{when}  {self.reason:<18} {self.topic}/{self.partition}/{self.offset}"
            f"  key={shown_key}  {self.detail}"
        )

    def as_json(self) -> dict[str, Any]:
        """The record, with where and when it was dead-lettered."""
        return {
            **self.record,
            "dead_lettered_at": _rfc3339(self.dead_lettered_at),
            "dead_letter_partition": self.dlq_partition,
            "dead_letter_offset": self.dlq_offset,
        }


def parse_record(
    value: bytes | None, dlq_partition: int, dlq_offset: int, timestamp_ms: int
) -> DeadLetterRecord | None:
    """A dead-letter message read back; None when it is not a dead-letter record."""
    if value is None:
        return None
    try:
        rec = orjson.loads(value)
        if not isinstance(rec, dict):
            return None
        return DeadLetterRecord(
            dlq_partition,
            dlq_offset,
            timestamp_ms,
            str(rec["reason"]),
            str(rec.get("detail", "")),
            str(rec["topic"]),
            int(rec["partition"]),
            int(rec["offset"]),
            _exact(rec, "key"),
            _exact(rec, "payload") or b"",
            rec,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error):
        return None


def _exact(rec: dict[str, Any], name: str) -> bytes | None:
    """The original bytes of ``key`` or ``payload`` (None for a null or absent key).

    Dead letters written before version 2 have no ``key``: they are replayed without one.
    """
    exact = rec.get(f"{name}_base64")
    if exact is not None:
        return base64.b64decode(exact, validate=True)
    text = rec.get(name)
    return None if text is None else str(text).encode("utf-8")


# --- the selection ------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command looks at: reasons, original topics, a time range."""

    reasons: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()
    #: The dead letter's timestamp (when it was dead-lettered), ms: since <= t < until.
    since_ms: int | None = None
    until_ms: int | None = None

    def __contains__(self, dl: DeadLetterRecord) -> bool:
        """Whether ``dl`` is selected (empty sets select everything)."""
        if self.reasons and dl.reason not in self.reasons:
            return False
        if self.topics and dl.topic not in self.topics:
            return False
        if self.since_ms is not None and dl.timestamp_ms < self.since_ms:
            return False
        return self.until_ms is None or dl.timestamp_ms < self.until_ms


def selection(
    settings: Settings,
    reasons: Sequence[str] | None,
    topics: Sequence[str] | None,
    since: str | None = None,
    until: str | None = None,
    *,
    now: float | None = None,
) -> Selection:
    """The selection of the command line; ``ConfigurationError`` (one line) for bad values."""
    for reason in reasons or ():
        if reason not in REASONS:
            msg = f"--reason {reason!r}: not a dead-letter reason (one of {', '.join(REASONS)})"
            raise ConfigurationError(msg)
    real = []
    for topic in topics or ():
        # The input topic's name (invoices) or its full name (with KPI_TOPIC_PREFIX).
        name = topic if topic in settings.input_topics else settings.topic(topic)
        if name not in settings.input_topics:
            msg = (
                f"--topic {topic!r}: not an input topic (one of {', '.join(settings.input_topics)})"
            )
            raise ConfigurationError(msg)
        real.append(name)
    clock = datetime.now(UTC).timestamp() if now is None else now
    since_ms = None if since is None else parse_time(since, "--since", clock)
    until_ms = None if until is None else parse_time(until, "--until", clock)
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        msg = f"--since {since} is not before --until {until}"
        raise ConfigurationError(msg)
    return Selection(frozenset(reasons or ()), frozenset(real), since_ms, until_ms)


def parse_time(text: str, option: str, now: float) -> int:
    """``now``, a duration ago (``90m``, ``12h``, ``7d``) or an ISO 8601 time (naive = UTC), ms."""
    value = text.strip()
    if value.lower() == "now":
        return int(now * 1000)
    relative = _RELATIVE.match(value.lower())
    if relative:
        return int((now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]) * 1000)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        msg = f"{option} {text!r}: expected an ISO 8601 time, 'now' or a duration ago like 12h"
        raise ConfigurationError(msg) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


# --- reading ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _reader(
    settings: Settings, topic: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A started group-less consumer and the partitions of ``topic`` ([] if it does not exist)."""
    consumer = make_reader(settings, client_id="kpi-dlq")
    await start_reachable(settings, consumer, _START_TIMEOUT_S)
    try:
        try:
            # What consumer.topics() fetches; its own partitions_for_topic reads the client's
            # cached metadata, which holds only subscribed topics (none here).
            cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
        except KafkaError as exc:
            msg = f"cannot read the topics of {settings.kafka_bootstrap}: {error_reason(exc)}"
            raise UnavailableError(msg) from exc
        parts = cluster.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        if tps:
            consumer.assign(tps)
        yield consumer, tps
    finally:
        await consumer.stop()


async def _read_to_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> AsyncIterator[Any]:
    """Every record of ``tps`` from the beginning up to their end offsets now, in order."""
    if not tps:
        return
    ends = await consumer.end_offsets(tps)
    firsts = await consumer.beginning_offsets(tps)
    pending = set()
    for tp in tps:
        consumer.seek(tp, firsts[tp])
        if firsts[tp] < ends[tp]:
            pending.add(tp)
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=10_000)
        for tp, records in batches.items():
            for r in records:
                if r.offset < ends[tp]:
                    yield r
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)


def _missing_topic(settings: Settings) -> UnavailableError:
    return UnavailableError(
        f"no topic {settings.dead_letter_topic} on {settings.kafka_bootstrap} (no worker has"
        " run there with this KPI_TOPIC_PREFIX, or this user may not describe it)"
    )


async def read_dead_letters(settings: Settings) -> AsyncIterator[DeadLetterRecord | None]:
    """The whole dead-letter topic up to its end now (None for a record not readable)."""
    async with _reader(settings, settings.dead_letter_topic) as (consumer, tps):
        if not tps:
            raise _missing_topic(settings)
        async for r in _read_to_end(consumer, tps):
            yield parse_record(r.value, r.partition, r.offset, r.timestamp)


@dataclass
class Ledger:
    """What the ledger says: the sources replayed, and where their replays went."""

    #: ``topic:partition:offset`` of each original message replayed.
    replayed: set[str] = field(default_factory=set)
    #: ``topic:partition:offset`` of each replayed copy (a dead letter of a replay has it
    #: as its source).
    copies: set[str] = field(default_factory=set)


async def read_ledger(settings: Settings) -> Ledger:
    """The ledger topic as of now (empty when it does not exist yet)."""
    entries: dict[str, str | None] = {}
    async with _reader(settings, settings.replayed_topic) as (consumer, tps):
        async for r in _read_to_end(consumer, tps):
            if r.key is None:
                continue
            source = r.key.decode("utf-8", errors="replace")
            if r.value is None:
                entries.pop(source, None)  # a tombstone: replayable again
                continue
            try:
                to = orjson.loads(r.value).get("replayed_to")
            except (orjson.JSONDecodeError, AttributeError):
                to = None
            entries[source] = to if isinstance(to, str) else None
    return Ledger(set(entries), {to for to in entries.values() if to is not None})


# --- tail ---------------------------------------------------------------------------------


async def tail(
    settings: Settings, chosen: Selection, *, from_beginning: bool, as_json: bool
) -> None:
    """Print the selected dead letters as they arrive, until interrupted."""
    async with _reader(settings, settings.dead_letter_topic) as (consumer, tps):
        if not tps:
            raise _missing_topic(settings)
        if from_beginning:
            firsts = await consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, firsts[tp])
        else:
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, ends[tp])
        where = "from the oldest" if from_beginning else "from now on"
        print(
            f"kpi: dead letters of {settings.dead_letter_topic} {where} (Ctrl-C ends)",
            file=sys.stderr,
            flush=True,
        )
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in batches.values():
                for r in records:
                    dl = parse_record(r.value, r.partition, r.offset, r.timestamp)
                    if dl is None or dl not in chosen:
                        continue
                    text = orjson.dumps(dl.as_json()).decode() if as_json else dl.line()
                    print(text, flush=True)


# --- stats --------------------------------------------------------------------------------


@dataclass
class Stats:
    """Dead letters counted by reason and original topic, with the first and last time."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_ms: dict[tuple[str, str], int] = field(default_factory=dict)
    last_ms: dict[tuple[str, str], int] = field(default_factory=dict)
    unreadable: int = 0

    def add(self, dl: DeadLetterRecord) -> None:
        """Count one dead letter."""
        group = (dl.reason, dl.topic)
        self.counts[group] += 1
        t = dl.timestamp_ms
        self.first_ms[group] = min(self.first_ms.get(group, t), t)
        self.last_ms[group] = max(self.last_ms.get(group, t), t)

    def as_json(self, topic: str) -> dict[str, Any]:
        """Totals, by reason, by topic, and by both."""
        by_reason: Counter[str] = Counter()
        by_topic: Counter[str] = Counter()
        for (reason, source), n in self.counts.items():
            by_reason[reason] += n
            by_topic[source] += n
        return {
            "topic": topic,
            "total": sum(self.counts.values()),
            "by_reason": dict(sorted(by_reason.items())),
            "by_topic": dict(sorted(by_topic.items())),
            "by_reason_and_topic": [
                {
                    "reason": reason,
                    "topic": source,
                    "count": n,
                    "first": _rfc3339_ms(self.first_ms[(reason, source)]),
                    "last": _rfc3339_ms(self.last_ms[(reason, source)]),
                }
                for (reason, source), n in sorted(self.counts.items())
            ],
            "unreadable": self.unreadable,
        }

    def table(self) -> str:
        """A plain table: reason, topic, count, first and last dead-lettered, then the total."""
        rows = [("reason", "topic", "count", "first", "last")]
        for (reason, source), n in sorted(self.counts.items()):
            first = _rfc3339_ms(self.first_ms[(reason, source)])
            last = _rfc3339_ms(self.last_ms[(reason, source)])
            rows.append((reason, source, str(n), first, last))
        rows.append(("total", "", str(sum(self.counts.values())), "", ""))
        if self.unreadable:
            rows.append(("unreadable", "", str(self.unreadable), "", ""))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = []
        for row in rows:
            cells = [
                cell.rjust(w) if i == 2 else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


async def stats(settings: Settings, chosen: Selection) -> Stats:
    """Count the selected dead letters of the whole topic (read to its end offsets now)."""
    counted = Stats()
    async for dl in read_dead_letters(settings):
        if dl is None:
            counted.unreadable += 1
        elif dl in chosen:
            counted.add(dl)
    return counted


# --- replay -------------------------------------------------------------------------------


@dataclass
class Replay:
    """What a replay did (or, dry, would do)."""

    replayed: list[DeadLetterRecord] = field(default_factory=list)
    already: int = 0
    not_selected: int = 0
    #: Records that are not dead letters, or name a topic that is not this instance's input.
    unreadable: int = 0
    foreign: int = 0
    #: Of ``already``: dead letters of an earlier replay's copy (dead-lettered again), not
    #: sent again.
    again: int = 0

    def summary(self, *, dry_run: bool) -> str:
        """``replayed N dead letters (reason: n; to topic: n), ...`` in one line."""
        n = len(self.replayed)
        noun = "dead letter" if n == 1 else "dead letters"
        by_reason = Counter(dl.reason for dl in self.replayed)
        by_topic = Counter(dl.topic for dl in self.replayed)
        if n:
            reasons = ", ".join(f"{r}: {c}" for r, c in sorted(by_reason.items()))
            topics = ", ".join(f"to {t}: {c}" for t, c in sorted(by_topic.items()))
            detail = f"{reasons}; {topics}"
        else:
            detail = "nothing new"
        verb = "dry run: would replay" if dry_run else "replayed"
        already = f"{self.already} already replayed"
        if self.again:
            already += f" ({self.again} of them dead-lettered again after the replay)"
        parts = [f"{verb} {n} {noun} ({detail})", already]
        parts.append(f"{self.not_selected} not selected")
        if self.foreign:
            parts.append(f"{self.foreign} for topics that are not this instance's inputs")
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable")
        return ", ".join(parts)

    def as_json(self, *, dry_run: bool) -> dict[str, Any]:
        """The summary's numbers and the dead letters (re)played."""
        return {
            "dry_run": dry_run,
            "replayed": len(self.replayed),
            "by_reason": dict(sorted(Counter(dl.reason for dl in self.replayed).items())),
            "by_topic": dict(sorted(Counter(dl.topic for dl in self.replayed).items())),
            "already_replayed": self.already,
            "not_selected": self.not_selected,
            "foreign": self.foreign,
            "unreadable": self.unreadable,
            "dead_lettered_again": self.again,
            "dead_letters": [dl.as_json() for dl in self.replayed],
        }


async def plan(settings: Settings, chosen: Selection) -> Replay:
    """Which dead letters a replay sends: selected, for this instance, not in the ledger."""
    ledger = await read_ledger(settings)
    inputs = set(settings.input_topics)
    out = Replay()
    seen: set[str] = set()
    async for dl in read_dead_letters(settings):
        if dl is None:
            out.unreadable += 1
        elif dl not in chosen:
            out.not_selected += 1
        elif dl.topic not in inputs:
            out.foreign += 1
        elif dl.source in ledger.copies:
            # The dead letter of a replayed copy (still late, still invalid): its payload was
            # replayed already, and sending it again would only dead-letter it again, run
            # after run. To replay the original again: a tombstone in the ledger.
            out.already += 1
            out.again += 1
        elif dl.source in ledger.replayed or dl.source in seen:
            # The ledger has it, or the same message was dead-lettered twice: once is enough.
            out.already += 1
        else:
            seen.add(dl.source)
            out.replayed.append(dl)
    return out


async def replay(
    settings: Settings,
    chosen: Selection,
    *,
    dry_run: bool,
    on_sent: Callable[[DeadLetterRecord], None] | None = None,
) -> Replay:
    """Replay the selected dead letters not replayed before; record each once acknowledged.

    Each payload goes to its original topic and partition (the worker keeps an entity's
    state per input partition) with its original key. In chunks: the chunk's publishes are
    awaited (acknowledged by all in-sync replicas), then its ledger records are written
    and awaited, so the ledger never names a dead letter that was not sent.
    """
    from streams.access import check_kafka_access
    from streams.topics import ensure_topics

    if not dry_run:
        await ensure_topics(settings, {settings.replayed_topic: LEDGER_CONFIG})
        await check_kafka_access(settings, "replayer")
    todo = await plan(settings, chosen)
    if dry_run or not todo.replayed:
        return todo
    producer = make_producer(settings, client_id="kpi-dlq-replay", linger_ms=5)
    await start_reachable(settings, producer, _START_TIMEOUT_S)
    done = Replay(
        already=todo.already,
        not_selected=todo.not_selected,
        unreadable=todo.unreadable,
        foreign=todo.foreign,
        again=todo.again,
    )
    try:
        for i in range(0, len(todo.replayed), _CHUNK):
            chunk = todo.replayed[i : i + _CHUNK]
            sent = await _publish(producer, chunk)
            await _record(producer, settings.replayed_topic, sent)
            for dl, _to in sent:
                done.replayed.append(dl)
                if on_sent is not None:
                    on_sent(dl)
            if len(sent) < len(chunk):
                failed = len(chunk) - len(sent)
                msg = (
                    f"{failed} dead letter(s) not delivered; {len(done.replayed)} replayed and"
                    " recorded, run the replay again for the rest"
                )
                raise UnavailableError(msg)
    finally:
        await producer.stop()
    return done


async def _publish(
    producer: Any, chunk: Sequence[DeadLetterRecord]
) -> list[tuple[DeadLetterRecord, str]]:
    """Publish ``chunk``; the dead letters Kafka acknowledged, with where they went."""
    futures = []
    for dl in chunk:
        try:
            fut = await producer.send(dl.topic, dl.payload, key=dl.key, partition=dl.partition)
        except KafkaError as exc:
            msg = f"cannot publish to {dl.topic}: {error_reason(exc)}"
            raise UnavailableError(msg) from exc
        futures.append(fut)
    results = await asyncio.gather(*futures, return_exceptions=True)
    sent = []
    for dl, result in zip(chunk, results, strict=True):
        if isinstance(result, BaseException):
            print(f"kpi: not delivered: {dl.source}: {error_reason(result)}", file=sys.stderr)
            continue
        sent.append((dl, f"{dl.topic}:{result.partition}:{result.offset}"))
    return sent


async def _record(producer: Any, ledger: str, sent: Iterable[tuple[DeadLetterRecord, str]]) -> None:
    """Write (and wait for) one ledger record per dead letter sent."""
    now = _rfc3339(datetime.now(UTC))
    futures = []
    for dl, to in sent:
        value = {
            "dead_letter": f"{dl.dlq_partition}:{dl.dlq_offset}",
            "reason": dl.reason,
            "replayed_to": to,
            "replayed_at": now,
        }
        futures.append(await producer.send(ledger, orjson.dumps(value), key=dl.source.encode()))
    try:
        await asyncio.gather(*futures)
    except KafkaError as exc:
        # The publishes went out; without their ledger records a next run sends them again
        # (the worker drops those it applied as duplicates).
        msg = f"cannot write the replay ledger {ledger}: {error_reason(exc)}"
        raise UnavailableError(msg) from exc


# --- formatting ---------------------------------------------------------------------------


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rfc3339_ms(ms: int) -> str:
    return _rfc3339(datetime.fromtimestamp(ms / 1000, UTC))


# --- the commands -------------------------------------------------------------------------

_REASON_HELP = f"Only this reason (repeatable): {', '.join(REASONS)}."
_TOPIC_HELP = "Only dead letters of this input topic (repeatable): invoices, hiring, incidents."
_SINCE_HELP = (
    "Only dead letters written at or after this time (when the worker dead-lettered them):"
    " ISO 8601 (naive = UTC), 'now' or a duration ago like 12h, 7d."
)
_UNTIL_HELP = "Only dead letters written before this time (same forms as --since)."
#: What every ``kpi dlq`` command reads: the Kafka client settings and the topic prefix.
_ENVIRONMENT = environment_help(*kafka_settings(), "topic_prefix")
_Reasons = Annotated[list[str] | None, typer.Option("--reason", help=_REASON_HELP)]
_Topics = Annotated[list[str] | None, typer.Option("--topic", help=_TOPIC_HELP)]


@dlq_app.command("tail", epilog=_ENVIRONMENT)
def tail_command(
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the oldest dead letter, not at new ones."
    ),
    reason: _Reasons = None,
    topic: _Topics = None,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per dead letter."),
) -> None:
    """Print dead letters as they arrive: time, reason, topic/partition/offset, key, detail.

    Runs until interrupted (Ctrl-C: exit 130).
    """
    settings = Settings()
    chosen = selection(settings, reason, topic)
    asyncio.run(tail(settings, chosen, from_beginning=from_beginning, as_json=as_json))


@dlq_app.command("stats", epilog=_ENVIRONMENT)
def stats_command(
    reason: _Reasons = None,
    topic: _Topics = None,
    since: str | None = typer.Option(None, "--since", help=_SINCE_HELP),
    until: str | None = typer.Option(None, "--until", help=_UNTIL_HELP),
    as_json: bool = typer.Option(False, "--json", help="A JSON object instead of the table."),
) -> None:
    """Count the dead letters by reason and topic (the whole topic, read to its end now)."""
    settings = Settings()
    chosen = selection(settings, reason, topic, since, until)
    counted = asyncio.run(stats(settings, chosen))
    if as_json:
        print(orjson.dumps(counted.as_json(settings.dead_letter_topic)).decode())
    else:
        print(counted.table())


@dlq_app.command(
    "replay",
    # It creates the ledger topic when missing, as the worker creates its own topics.
    epilog=environment_help(*kafka_settings(), "topic_prefix", "partitions", "replication_factor"),
)
def replay_command(
    reason: _Reasons = None,
    topic: _Topics = None,
    since: str | None = typer.Option(None, "--since", help=_SINCE_HELP),
    until: str | None = typer.Option(None, "--until", help=_UNTIL_HELP),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List what would be replayed; send and record nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of lines."),
) -> None:
    """Publish dead-lettered payloads again, to their original topic with their original key.

    Only dead letters not replayed before (the ledger topic kpi.dead-letter.replayed, shared
    by every operator) are sent; each is recorded there once Kafka acknowledged it. Prints
    one line per dead letter, then `replayed N dead letters (...)`.
    """
    settings = Settings()
    chosen = selection(settings, reason, topic, since, until)

    def shown(dl: DeadLetterRecord) -> None:
        if not as_json:
            print(dl.line(), flush=True)

    done = asyncio.run(replay(settings, chosen, dry_run=dry_run, on_sent=shown))
    if as_json:
        print(orjson.dumps(done.as_json(dry_run=dry_run)).decode())
        return
    if dry_run:
        for dl in done.replayed:
            print(dl.line())
    print(done.summary(dry_run=dry_run))


def register(app: typer.Typer) -> None:
    """Add ``kpi dlq`` to the ``kpi`` application."""
    app.add_typer(dlq_app, name="dlq")
