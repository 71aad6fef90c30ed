"""``kpi publish FILE`` without a broker: parsing, the worker's checks per row, routing, errors."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

import producers.backfill as backfill
from producers.backfill import (
    BackfillError,
    EventChecker,
    FileFormat,
    Row,
    UncheckedRouter,
    read_rows,
    scan,
)
from producers.publisher import PublishError
from schemas.errors import InvalidEvent
from streams.config import Settings

T0 = "2024-05-01T12:00:00Z"

RECEIVED = {
    "event_id": "e1",
    "type": "invoice.received",
    "occurred_at": T0,
    "invoice_id": "INV-1",
    "amount": 1250.5,
    "currency": "USD",
    "department": "finance",
    "vendor_id": "V-1",
}
APPROVED = {
    "event_id": "e2",
    "type": "invoice.approved",
    "occurred_at": "2024-05-01T13:00:00Z",
    "invoice_id": "INV-1",
}
TICKET = {
    "event_id": "e3",
    "type": "ticket.opened",
    "occurred_at": T0,
    "ticket_id": "T-1",
    "queue": "access",
    "priority": "p2",
}
HIRED = {
    "event_id": "e4",
    "type": "employee.hired",
    "occurred_at": T0,
    "employee_id": "E-1",
    "department": "it",
}
GOOD = [RECEIVED, APPROVED, TICKET, HIRED]


def jsonl(path: Path, *rows: dict[str, Any] | bytes) -> Path:
    lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# ---- reading ----------------------------------------------------------------------------


def test_jsonl_rows_keep_their_bytes_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n   \n{"b": 2}\nnot json\n')
    rows = list(read_rows(path, FileFormat.jsonl))
    assert [(r.line, r.value) for r in rows] == [
        (1, b'{"a": 1}'),
        (4, b'{"b": 2}'),
        (5, b"not json"),
    ]


CSV_TEXT = (
    "\ufeffevent_id,type,occurred_at,employee_id,department,voluntary,response_id,score,"
    "training_id,cost,currency,note\n"
    "h1,employee.hired,2024-05-01T12:00:00Z,E-1,it,,,,,,,\n"
    "l1,employee.left,2024-05-02T12:00:00Z,E-1,,TRUE,,,,,,\n"
    "\n"
    's1,survey.submitted,2024-05-02T12:00:00Z,,it,,R-1,9,,,,"two\nlines"\n'
    "t1,training.completed,2024-05-02T12:00:00Z,E-1,it,,,,TR-1,1200.50,USD,\n"
    "t2,training.completed,2024-05-02T12:00:00Z,E-1,it,,,,TR-2,800,USD,\n"
    "x1,employee.promoted,2024-05-02T12:00:00Z,E-1,it,false,,9,,12,,\n"
)


def test_csv_cells_become_the_contract_types(tmp_path: Path) -> None:
    path = tmp_path / "hr.csv"
    path.write_text(CSV_TEXT, encoding="utf-8")
    rows = list(read_rows(path, FileFormat.csv))
    # A record's line is where it starts; the quoted cell spans lines 5-6.
    assert [r.line for r in rows] == [2, 3, 5, 7, 8, 9]
    fields = [r.fields for r in rows]
    common = {"occurred_at": "2024-05-02T12:00:00Z"}
    assert fields[0] == {
        "event_id": "h1",
        "type": "employee.hired",
        "occurred_at": T0,
        "employee_id": "E-1",
        "department": "it",
    }  # empty cells are missing fields, and the byte-order mark is not part of a name
    assert fields[1] == {
        "event_id": "l1",
        "type": "employee.left",
        **common,
        "employee_id": "E-1",
        "voluntary": True,
    }
    assert fields[2] == {
        "event_id": "s1",
        "type": "survey.submitted",
        **common,
        "department": "it",
        "response_id": "R-1",
        "score": 9,
        "note": "two\nlines",  # extra columns are kept: the worker ignores them
    }
    assert fields[3] is not None and fields[3]["cost"] == 1200.5
    assert fields[4] is not None and fields[4]["cost"] == 800
    assert type(fields[4]["cost"]) is int
    # A type outside the contract has no field types: everything stays text.
    assert fields[5] is not None
    assert (fields[5]["voluntary"], fields[5]["score"]) == ("false", "9")
    # The bytes sent are the converted JSON.
    assert all(orjson.loads(r.value) == r.fields for r in rows)
    checker = EventChecker("USD", now_s=time.time())
    assert [checker(r).topic for r in rows[:5]] == ["hiring"] * 5


@pytest.mark.parametrize(
    ("cell", "detail"),
    [
        ("yes", "voluntary: input should be a valid boolean"),
        ("1", "voluntary: input should be a valid boolean"),
    ],
)
def test_csv_cells_that_are_not_their_type_fail_like_the_worker(
    tmp_path: Path, cell: str, detail: str
) -> None:
    path = tmp_path / "left.csv"
    path.write_text(
        f"event_id,type,occurred_at,employee_id,voluntary\nl1,employee.left,{T0},E-1,{cell}\n"
    )
    (row,) = read_rows(path, FileFormat.csv)
    with pytest.raises(InvalidEvent) as info:
        EventChecker("USD", now_s=time.time())(row)
    assert (info.value.reason, info.value.detail) == ("schema", detail)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("1e3", 1000), ("0.5", 0.5), ("+7", 7), ("1,200", "1,200"), (" 5", " 5"), ("1e400", "1e400")],
)
def test_csv_amounts(amount: str, expected: object) -> None:
    header = ["event_id", "type", "occurred_at", "invoice_id", "amount"]
    fields = backfill.csv_record_to_event(header, ["p", "invoice.paid", T0, "INV-1", amount])
    assert fields["amount"] == expected


def test_csv_reporting_amount_column(app: typer.Typer, tmp_path: Path) -> None:
    # One column for all rows: a number for foreign money, empty (not given) otherwise.
    path = tmp_path / "invoices.csv"
    path.write_text(
        "event_id,type,occurred_at,invoice_id,amount,currency,reporting_amount,department,"
        "customer_id\n"
        f"i1,invoice.issued,{T0},AR-1,1000,EUR,1080.50,sales,C-1\n"
        f"i2,invoice.issued,{T0},AR-2,99.5,USD,,sales,C-1\n"
        f"p1,payment.received,{T0},AR-1,400,,,,\n"
        f"i3,invoice.issued,{T0},AR-3,10,GBP,,sales,C-1\n"
        f"i4,invoice.issued,{T0},AR-4,10,GBP,ten,sales,C-1\n"
    )
    rows = list(read_rows(path, FileFormat.csv))
    assert rows[0].fields is not None and rows[0].fields["reporting_amount"] == 1080.5
    assert rows[1].fields is not None and "reporting_amount" not in rows[1].fields
    result = CliRunner().invoke(app, ["publish", str(path), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert [orjson.loads(value)["event_id"] for _, _, value in sent()] == ["i1", "i2", "p1"]
    assert orjson.loads(sent()[0][2])["reporting_amount"] == 1080.5
    assert f"{path}:5: currency: currency GBP is not the reporting currency USD" in result.stderr
    assert f"{path}:6: schema: reporting_amount: not a number" in result.stderr


def test_csv_record_with_too_many_cells_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(f"event_id,type,occurred_at,service\nd1,service.down,{T0},erp,extra\n")
    (row,) = read_rows(path, FileFormat.csv)
    with pytest.raises(InvalidEvent, match="5 cells but the CSV header has 4 columns"):
        EventChecker("USD", now_s=time.time())(row)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no CSV header line"),
        ("\n\n", "no CSV header line"),
        ("event_id,,type\n", "column without a name (column 2)"),
        ("event_id,type,type\n", "names type more than once"),
        ('event_id,type\n"e1,service.up\n', "unreadable CSV"),
        ('event_id,type\n"e1"x,service.up\n', "2: unreadable CSV: ',' expected"),
    ],
)
def test_unreadable_csv_is_one_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(BackfillError, match=re.escape(message)) as info:
        list(read_rows(path, FileFormat.csv))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_csv_that_is_not_utf8_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("event_id,type\ne1,café\n".encode("latin-1"))
    with pytest.raises(BackfillError, match="not UTF-8"):
        list(read_rows(path, FileFormat.csv))


# ---- checks and routing -----------------------------------------------------------------


def test_checker_routes_to_topic_and_entity_key() -> None:
    checker = EventChecker("USD", now_s=time.time())
    routed = [checker(Row(n, orjson.dumps(e))) for n, e in enumerate(GOOD, 1)]
    assert [(m.topic, m.key) for m in routed] == [
        ("invoices", "INV-1"),
        ("invoices", "INV-1"),
        ("incidents", "T-1"),
        ("hiring", "E-1"),
    ]
    assert [m.value for m in routed] == [orjson.dumps(e) for e in GOOD]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "schema"),
        (orjson.dumps({**RECEIVED, "amount": -1}), "schema"),
        (orjson.dumps({**RECEIVED, "occurred_at": "2024-05-01T12:00:00"}), "schema"),
        (orjson.dumps({**APPROVED, "type": "invoice.cancelled"}), "unknown_type"),
        (orjson.dumps({**RECEIVED, "currency": "EUR"}), "currency"),
        (orjson.dumps({**TICKET, "occurred_at": "2099-01-01T00:00:00Z"}), "future"),
    ],
)
def test_checker_gives_the_workers_reason(value: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        EventChecker("USD", now_s=time.time())(Row(1, value))
    assert info.value.reason == reason


def test_future_allows_the_workers_five_minutes() -> None:
    now = 1_714_564_800.0  # T0
    soon = {**TICKET, "occurred_at": "2024-05-01T12:05:00Z"}
    later = {**TICKET, "occurred_at": "2024-05-01T12:05:01Z"}
    checker = EventChecker("USD", now_s=now)
    assert checker(Row(1, orjson.dumps(soon))).topic == "incidents"
    with pytest.raises(InvalidEvent, match="301 s ahead"):
        checker(Row(2, orjson.dumps(later)))


def test_scan_counts_rows_that_the_worker_may_find_late() -> None:
    def at(n: int, hour: int) -> Row:
        body = {**TICKET, "ticket_id": f"T-{n}", "occurred_at": f"2024-05-01T{hour:02d}:00:00Z"}
        return Row(n, orjson.dumps(body))

    rows = [at(1, 10), at(2, 12), at(3, 11), at(4, 10), at(5, 9), at(6, 13)]
    found = scan(
        iter(rows),
        EventChecker("USD", now_s=time.time()),
        grace_s=3600,
        on_invalid=lambda row, exc: None,
    )
    # 10:00 and 9:00 are more than an hour behind 12:00; 11:00 is exactly at the limit.
    assert (found.rows, found.valid_rows, found.maybe_late) == (6, 6, 2)
    assert found.first_maybe_late_line == 4


def test_unchecked_router_falls_back_to_topic_keyed_by_line(tmp_path: Path) -> None:
    route = UncheckedRouter("hiring", tmp_path / "f.jsonl")
    assert route(Row(3, orjson.dumps(TICKET))).topic == "incidents"
    for value in (b"{oops", orjson.dumps({**TICKET, "ticket_id": 5}), b'{"type": "x.y"}'):
        message = route(Row(7, value))
        assert (message.topic, message.key, message.value) == ("hiring", "7", value)
    with pytest.raises(BackfillError, match=r"f\.jsonl:7: no usable type or key.*--topic"):
        UncheckedRouter(None, tmp_path / "f.jsonl")(Row(7, b"{oops"))


# ---- the command, with a fake publisher -------------------------------------------------


class FakePublisher:
    instances: list[FakePublisher] = []

    def __init__(self, settings: Settings, **options: Any) -> None:
        self.settings = settings
        self.options = options
        self.sent: list[tuple[str, str, bytes]] = []
        FakePublisher.instances.append(self)

    async def __aenter__(self) -> FakePublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def send(self, topic: str, key: str, payload: bytes) -> None:
        self.sent.append((topic, key, payload))

    async def flush(self) -> None:
        pass


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    FakePublisher.instances = []
    monkeypatch.setattr(backfill, "Publisher", FakePublisher)

    async def no_topics(settings: Settings) -> list[str]:
        return []

    monkeypatch.setattr(backfill, "create_published_topics", no_topics)
    app = typer.Typer(pretty_exceptions_enable=False)
    backfill.register(app)

    @app.callback()
    def main() -> None:
        """Keep ``publish`` a sub-command, as under ``kpi``."""

    return app


def sent() -> list[tuple[str, str, bytes]]:
    return [message for publisher in FakePublisher.instances for message in publisher.sent]


def test_publishes_every_row_in_file_order(app: typer.Typer, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "events.jsonl", *GOOD)
    result = CliRunner().invoke(app, ["publish", str(path)], env={"KPI_TOPIC_PREFIX": "bf."})
    assert result.exit_code == 0, result.output
    (publisher,) = FakePublisher.instances
    assert publisher.settings.topic_prefix == "bf."
    assert publisher.sent == [
        ("invoices", "INV-1", orjson.dumps(RECEIVED)),
        ("invoices", "INV-1", orjson.dumps(APPROVED)),
        ("incidents", "T-1", orjson.dumps(TICKET)),
        ("hiring", "E-1", orjson.dumps(HIRED)),
    ]
    assert f"read 4 rows from {path}, published 4" in result.stdout
    assert "published by topic: hiring 1, incidents 1, invoices 2" in result.stdout
    assert "invalid: none" in result.stdout


def test_one_bad_row_publishes_nothing_and_names_its_line(app: typer.Typer, tmp_path: Path) -> None:
    bad = {**RECEIVED, "event_id": "e9", "invoice_id": "INV-9", "amount": "a lot"}
    path = jsonl(tmp_path / "events.jsonl", RECEIVED, APPROVED, bad, TICKET)
    result = CliRunner().invoke(app, ["publish", str(path)])
    assert result.exit_code == 1, result.output
    assert result.stderr == f"{path}:3: schema: amount: not a number nor a numeric string\n"
    assert "1 of 4 rows" in result.stdout and "nothing published" in result.stdout
    assert "--skip-invalid" in result.stdout
    assert FakePublisher.instances == []  # never even connected


def test_skip_invalid_publishes_the_rest_and_lists_the_bad(
    app: typer.Typer, tmp_path: Path
) -> None:
    path = jsonl(
        tmp_path / "events.jsonl",
        RECEIVED,
        b"{broken",
        {**TICKET, "type": "ticket.closed"},
        {**HIRED, "occurred_at": "2099-01-01T00:00:00Z"},
        APPROVED,
    )
    result = CliRunner().invoke(app, ["publish", str(path), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert [key for _, key, _ in sent()] == ["INV-1", "INV-1"]
    lines = result.stderr.splitlines()
    assert [line.split(": ")[:2] for line in lines] == [
        [f"{path}:2", "invalid_json"],
        [f"{path}:3", "unknown_type"],
        [f"{path}:4", "future"],
    ]
    assert "invalid, skipped: future 1, invalid_json 1, unknown_type 1" in result.stdout


def test_json_summary_is_the_only_thing_on_stdout(app: typer.Typer, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "events.jsonl", RECEIVED, b"{broken", TICKET, APPROVED)
    result = CliRunner().invoke(app, ["publish", str(path), "--skip-invalid", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    summary = orjson.loads(result.stdout)
    elapsed_s = summary.pop("elapsed_s")
    assert isinstance(elapsed_s, float) and elapsed_s >= 0
    assert summary == {
        "status": "done",
        "file": str(path),
        "rows": 4,
        "published": 3,
        "published_by_topic": {"incidents": 1, "invoices": 2},
        "validated": True,
        "invalid": {"invalid_json": 1},
        "maybe_late": 0,
        "first_maybe_late_line": None,
        "last_line": 4,
    }
    assert result.stderr.startswith(f"{path}:2: invalid_json: ")


def test_json_refusal_is_a_document_and_exit_1(app: typer.Typer, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "events.jsonl", RECEIVED, b"{broken")
    result = CliRunner().invoke(app, ["publish", str(path), "--json"])
    assert result.exit_code == 1, result.output
    summary = orjson.loads(result.stdout)
    assert (summary["status"], summary["published"], summary["rows"]) == ("refused", 0, 2)
    assert summary["invalid"] == {"invalid_json": 1}
    assert FakePublisher.instances == []


def test_currency_is_the_configured_one(app: typer.Typer, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "events.jsonl", RECEIVED)
    result = CliRunner().invoke(app, ["publish", str(path)], env={"KPI_CURRENCY": "EUR"})
    assert result.exit_code == 1
    assert "currency: currency USD is not the reporting currency EUR" in result.stderr
    assert sent() == []


def test_csv_publishes_converted_json(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "hr.csv"
    path.write_text(CSV_TEXT.rsplit("x1,", 1)[0])  # without the unknown type
    result = CliRunner().invoke(app, ["publish", str(path)])
    assert result.exit_code == 0, result.output
    messages = sent()
    assert [(topic, key) for topic, key, _ in messages] == [
        ("hiring", "E-1"),
        ("hiring", "E-1"),
        ("hiring", "R-1"),
        ("hiring", "TR-1"),
        ("hiring", "TR-2"),
    ]
    assert orjson.loads(messages[1][2])["voluntary"] is True


def test_no_validate_sends_rows_as_they_are(app: typer.Typer, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "raw.jsonl", RECEIVED, b"{broken", {**TICKET, "currency": "EUR"})
    args = ["publish", str(path), "--no-validate", "--topic", "incidents"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sent() == [
        ("invoices", "INV-1", orjson.dumps(RECEIVED)),
        ("incidents", "2", b"{broken"),
        ("incidents", "T-1", orjson.dumps({**TICKET, "currency": "EUR"})),
    ]
    assert "not validated" in result.stdout


def test_no_validate_csv_sends_the_converted_json(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "raw.csv"
    path.write_text(f"event_id,type,occurred_at,response_id,department,score\ns,x.y,{T0},R,,7\n")
    result = CliRunner().invoke(app, ["publish", str(path), "--no-validate", "--topic", "hiring"])
    assert result.exit_code == 0, result.output
    ((topic, key, value),) = sent()
    assert (topic, key) == ("hiring", "2")
    assert orjson.loads(value) == {
        "event_id": "s",
        "type": "x.y",
        "occurred_at": T0,
        "response_id": "R",
        "score": "7",
    }


def test_no_validate_without_topic_fails_before_sending(app: typer.Typer, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "raw.jsonl", RECEIVED, b"{broken")
    result = CliRunner().invoke(app, ["publish", str(path), "--no-validate"])
    assert isinstance(result.exception, BackfillError)
    assert f"{path}:2: no usable type or key" in str(result.exception)
    assert FakePublisher.instances == []


def test_empty_file_publishes_nothing_without_kafka(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "empty.ndjson"
    path.write_text("\n")
    result = CliRunner().invoke(app, ["publish", str(path)])
    assert result.exit_code == 0, result.output
    assert "read 0 rows" in result.stdout
    assert FakePublisher.instances == []


def test_format_option_overrides_the_extension(app: typer.Typer, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "events.txt", TICKET)
    result = CliRunner().invoke(app, ["publish", str(path)])
    assert isinstance(result.exception, BackfillError)
    assert "use --format jsonl or --format csv" in str(result.exception)
    result = CliRunner().invoke(app, ["publish", str(path), "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    assert [key for _, key, _ in sent()] == ["T-1"]


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.jsonl", "no such file"), ("", "not a regular file")],
)
def test_unusable_file_is_one_line(
    app: typer.Typer, tmp_path: Path, name: str, message: str
) -> None:
    result = CliRunner().invoke(app, ["publish", str(tmp_path / name)])
    # KpiError: `kpi` prints it as one line (`kpi: error: ...`) with exit code 2.
    assert isinstance(result.exception, BackfillError)
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert FakePublisher.instances == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--topic", "hiring"], "only applies with --no-validate"),
        (["--no-validate", "--topic", "payroll"], "not an input topic"),
        (["--no-validate", "--skip-invalid"], "--skip-invalid needs validation"),
        (["--format", "xml"], "--format"),
    ],
)
def test_bad_options_are_usage_errors(
    app: typer.Typer, tmp_path: Path, args: list[str], message: str
) -> None:
    path = jsonl(tmp_path / "events.jsonl", TICKET)
    result = CliRunner().invoke(app, ["publish", str(path), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert FakePublisher.instances == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_kafka_is_one_publish_error(tmp_path: Path) -> None:
    app = typer.Typer(pretty_exceptions_enable=False)
    backfill.register(app)

    @app.callback()
    def main() -> None:
        """Keep ``publish`` a sub-command."""

    path = jsonl(tmp_path / "events.jsonl", TICKET)
    bootstrap = f"127.0.0.1:{closed_port()}"
    result = CliRunner().invoke(
        app,
        ["publish", str(path), "--no-create-topics"],
        env={"KPI_KAFKA_BOOTSTRAP": bootstrap},
    )
    assert isinstance(result.exception, PublishError)
    assert str(result.exception).startswith(f"cannot reach Kafka at {bootstrap}")
    assert "\n" not in str(result.exception)
