"""``kpi dlq`` without a broker: reading records back, the selection, the summaries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from schemas.errors import ConfigurationError
from streams.config import Settings
from streams.core.records import DeadLetter
from streams.dead_letters import dead_letter_record
from tests.cli import run_kpi
from tooling import dlq
from tooling.dlq import (
    REASONS,
    DeadLetterRecord,
    Replay,
    Stats,
    parse_record,
    parse_time,
    selection,
)

SETTINGS = Settings(topic_prefix="t.")
NOW = datetime(2026, 3, 8, 12, 0, tzinfo=UTC).timestamp()


def read_back(
    dl: DeadLetter, *, at_ms: int = 1_772_971_200_000, dlq_offset: int = 0
) -> DeadLetterRecord:
    record = parse_record(dead_letter_record(dl, SETTINGS.topic(dl.topic)), 1, dlq_offset, at_ms)
    assert record is not None
    return record


def test_a_record_gives_back_the_exact_key_and_payload() -> None:
    text = read_back(DeadLetter("currency", "no rate", "invoices", 2, 7, b'{"a":1}', b"inv-7"))
    assert (text.key, text.payload, text.source) == (b"inv-7", b'{"a":1}', "t.invoices:2:7")
    binary = read_back(DeadLetter("invalid_json", "x", "hiring", 0, 3, b"\xff\x00{", b"\xfe"))
    assert (binary.key, binary.payload) == (b"\xfe", b"\xff\x00{")
    unkeyed = read_back(DeadLetter("late", "", "incidents", 1, 9, b"{}"))
    assert unkeyed.key is None


def test_a_record_from_before_version_2_has_no_key_and_garbage_is_no_record() -> None:
    old = {"reason": "schema", "detail": "d", "topic": "t.invoices", "partition": 0}
    old |= {"offset": 4, "payload": "{}"}
    record = parse_record(orjson.dumps(old), 0, 0, 0)
    assert record is not None and record.key is None and record.payload == b"{}"
    assert parse_record(b"not json", 0, 0, 0) is None
    assert parse_record(b"[1]", 0, 0, 0) is None
    assert parse_record(None, 0, 0, 0) is None
    assert parse_record(orjson.dumps(old | {"payload_base64": "%%"}), 0, 0, 0) is None


def test_a_line_shows_time_reason_position_key_and_detail() -> None:
    dl = read_back(
        DeadLetter("currency", "EUR without reporting_amount", "invoices", 2, 7, b"{}", b"i")
    )
    assert dl.line() == (
        "2026-03-08T12:00:00Z  currency           t.invoices/2/7  key=i"
        "  EUR without reporting_amount"
    )
    shown = dl.as_json()
    assert shown["dead_lettered_at"] == "2026-03-08T12:00:00.000Z"
    assert (shown["dead_letter_partition"], shown["key"]) == (1, "i")


def test_the_selection_takes_reasons_topics_and_a_time_range() -> None:
    chosen = selection(SETTINGS, ["currency"], ["invoices"], "2h", "now", now=NOW)
    assert chosen.topics == {"t.invoices"}
    ms = int(NOW * 1000)
    hit = DeadLetter("currency", "", "invoices", 0, 1, b"{}")
    assert read_back(hit, at_ms=ms - 3600_000) in chosen
    assert read_back(hit, at_ms=ms - 3 * 3600_000) not in chosen  # before --since
    assert read_back(hit, at_ms=ms) not in chosen  # --until is exclusive
    assert read_back(DeadLetter("late", "", "invoices", 0, 1, b"{}"), at_ms=ms - 1) not in chosen
    assert read_back(DeadLetter("currency", "", "hiring", 0, 1, b"{}"), at_ms=ms - 1) not in chosen
    # The full topic name works too, and nothing given selects everything.
    assert selection(SETTINGS, None, ["t.hiring"]).topics == {"t.hiring"}
    everything = selection(SETTINGS, None, None)
    assert read_back(DeadLetter("late", "", "hiring", 0, 1, b"{}")) in everything


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["nope"], None, None, None), "--reason 'nope': not a dead-letter reason"),
        ((None, ["payroll"], None, None), "--topic 'payroll': not an input topic"),
        ((None, None, "yesterday", None), "--since 'yesterday': expected an ISO 8601 time"),
        ((None, None, "1h", "2h"), "--since 1h is not before --until 2h"),
    ],
)
def test_bad_selections_are_one_line_errors(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        selection(SETTINGS, *args, now=NOW)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_times_are_iso_naive_utc_or_durations_ago() -> None:
    assert parse_time("2026-03-08T11:00:00", "--since", NOW) == int((NOW - 3600) * 1000)
    assert parse_time("2026-03-08T12:00:00+01:00", "--since", NOW) == int((NOW - 3600) * 1000)
    assert parse_time("90m", "--since", NOW) == int((NOW - 5400) * 1000)
    assert parse_time("1w", "--since", NOW) == int((NOW - 7 * 86400) * 1000)


def test_the_replay_summary_counts_by_reason_and_topic() -> None:
    letters = [read_back(DeadLetter("currency", "", "invoices", 0, i, b"{}")) for i in range(3)] + [
        read_back(DeadLetter("unknown_entity", "", "hiring", 0, 1, b"{}"))
    ]
    done = Replay(replayed=letters, already=2, not_selected=5)
    assert done.summary(dry_run=False) == (
        "replayed 4 dead letters (currency: 3, unknown_entity: 1; to t.hiring: 1,"
        " to t.invoices: 3), 2 already replayed, 5 not selected"
    )
    assert Replay(already=4, unreadable=1).summary(dry_run=False) == (
        "replayed 0 dead letters (nothing new), 4 already replayed, 0 not selected, 1 unreadable"
    )
    assert (
        Replay(replayed=letters[:1])
        .summary(dry_run=True)
        .startswith("dry run: would replay 1 dead letter (currency: 1; to t.invoices: 1)")
    )
    doc = done.as_json(dry_run=False)
    assert (doc["replayed"], doc["by_topic"], doc["already_replayed"]) == (
        4,
        {"t.hiring": 1, "t.invoices": 3},
        2,
    )


def test_stats_count_by_reason_and_topic_with_first_and_last() -> None:
    counted = Stats()
    for at_ms, reason in ((2000, "late"), (1000, "late"), (1500, "schema")):
        counted.add(read_back(DeadLetter(reason, "", "invoices", 0, 1, b"{}"), at_ms=at_ms))
    doc = counted.as_json("t.kpi.dead-letter")
    assert (doc["total"], doc["by_reason"]) == (3, {"late": 2, "schema": 1})
    assert doc["by_reason_and_topic"][0] == {
        "reason": "late",
        "topic": "t.invoices",
        "count": 2,
        "first": "1970-01-01T00:00:01.000Z",
        "last": "1970-01-01T00:00:02.000Z",
    }
    lines = counted.table().splitlines()
    assert lines[0].split() == ["reason", "topic", "count", "first", "last"]
    assert lines[1].split()[:3] == ["late", "t.invoices", "2"]
    assert lines[-1].split() == ["total", "3"]


def test_every_reason_the_product_names_is_selectable() -> None:
    contract = (Path(__file__).resolve().parents[2] / "docs" / "CONTRACT.md").read_text()
    for reason in REASONS:
        assert f"`{reason}`" in contract


def test_bad_arguments_exit_2_with_one_line(tmp_path: Path) -> None:
    done = run_kpi(tmp_path, "dlq", "replay", "--reason", "nope")
    assert done.returncode == 2
    assert done.stderr.startswith("kpi: error: --reason 'nope': not a dead-letter reason")
    assert done.stderr.count("\n") == 1 and done.stdout == ""


async def test_a_replay_sends_what_is_new_once_and_never_a_dead_letter_of_its_own_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    letters = [
        read_back(DeadLetter("late", "", "hiring", 0, 5, b"{}")),  # replayed before, to 0:40
        read_back(DeadLetter("late", "", "hiring", 0, 40, b"{}")),  # its copy, late again
        read_back(DeadLetter("currency", "", "invoices", 1, 3, b"{}")),  # new
        read_back(DeadLetter("currency", "", "invoices", 1, 3, b"{}")),  # the same, twice
        read_back(DeadLetter("schema", "", "invoices", 2, 9, b"{}")),  # new, not selected
    ]

    async def ledger(_settings: Settings) -> dlq.Ledger:
        return dlq.Ledger(replayed={"t.hiring:0:5"}, copies={"t.hiring:0:40"})

    async def dead_letters(_settings: Settings) -> AsyncIterator[DeadLetterRecord | None]:
        for dl in letters:
            yield dl

    monkeypatch.setattr(dlq, "read_ledger", ledger)
    monkeypatch.setattr(dlq, "read_dead_letters", dead_letters)
    todo = await dlq.plan(SETTINGS, selection(SETTINGS, ["late", "currency"], None))
    assert [dl.source for dl in todo.replayed] == ["t.invoices:1:3"]
    assert (todo.already, todo.again, todo.not_selected) == (3, 1, 1)
    assert todo.summary(dry_run=False) == (
        "replayed 1 dead letter (currency: 1; to t.invoices: 1), 3 already replayed"
        " (1 of them dead-lettered again after the replay), 1 not selected"
    )
