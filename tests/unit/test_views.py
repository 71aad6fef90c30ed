"""What ``kpi get`` and ``kpi watch`` show of the calendar windows, and ``/kpis``' records.

Redis is a small fake here (the reader's commands over a dict); the real thing is
tests/integration/test_redis_acl.py (``kpi get`` as a least-privilege reader).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import orjson
import pytest
from rich.console import Console

from streams import views
from streams.app import kpi_json
from streams.catalog import KPIS
from streams.config import Settings
from streams.core.records import WindowValue
from streams.kpis.base import WINDOWS
from streams.reader import KpiReader
from tests.cli import run_kpi

T0 = 1_772_319_600  # 2026-02-28T23:00:00Z: 2026-03-01 00:00 in Europe/Berlin
MARCH_END = 1_774_994_400  # 2026-03-31T22:00:00Z: 2026-04-01 00:00 CEST
FEB_START = 1_769_900_400  # 2026-01-31T23:00:00Z


def newest(label: str, value: str, start: str, end: str, count: str = "118") -> dict[str, str]:
    return {
        "value": value,
        "window_start": start,
        "window_end": end,
        "label": label,
        "count": count,
        "final": "0",
        "updated_at": "2026-03-19T10:00:00Z",
    }


class FakeRedis:
    """The reader's commands (HGETALL, ZRANGEBYSCORE, a pipeline of HGETALLs) over dicts."""

    def __init__(self, hashes: dict[str, dict[str, str]], zsets: dict[str, list[str]]) -> None:
        self.hashes, self.zsets = hashes, zsets
        self.round_trips = 0

    async def hgetall(self, key: str) -> dict[str, str]:
        self.round_trips += 1
        return dict(self.hashes.get(key, {}))

    async def zrangebyscore(self, key: str, lo: Any, hi: Any) -> list[str]:
        self.round_trips += 1
        return list(self.zsets.get(key, []))

    def pipeline(self, transaction: bool) -> Any:
        assert transaction is False  # a reader may not run MULTI
        fake, queued = self, []

        class Pipe:
            def hgetall(self, key: str) -> None:
                queued.append(key)

            async def execute(self) -> list[dict[str, str]]:
                fake.round_trips += 1
                return [dict(fake.hashes.get(k, {})) for k in queued]

        return Pipe()

    async def aclose(self) -> None:
        pass


MONTH = newest("2026-03", "41.5", "2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z")
HISTORY = [
    orjson.dumps(
        {
            "window_start": "2026-01-31T23:00:00Z",
            "window_end": "2026-02-28T23:00:00Z",
            "label": "2026-02",
            "value": 39.25,
            "count": 101,
        }
    ).decode(),
    # Written by a version 1 worker: no label.
    '{"window_start":"2026-02-28T23:00:00Z","window_end":"2026-03-31T22:00:00Z",'
    '"value":null,"count":3}',
]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRedis:
    redis = FakeRedis(
        {"kpi:dso:1mo:all": MONTH, "kpi:enps:1q:all": newest("2026-Q1", "12.0", "x", "y")},
        {"kpi:dso:1mo:all:history": HISTORY},
    )
    redis.hashes["kpi:enps:1q:all"]["window_start"] = "2025-12-31T23:00:00Z"
    redis.hashes["kpi:enps:1q:all"]["window_end"] = "2026-03-31T22:00:00Z"

    class Reader(KpiReader):
        def __init__(self, url: str, **_options: Any) -> None:
            super().__init__(url)
            self.redis = redis

    monkeypatch.setattr(views, "KpiReader", Reader)
    return redis


async def test_kpi_get_names_the_window_by_its_label(
    fake: FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    await views.print_one(Settings(), "dso", "1mo", "all", history=2)
    first, *history = capsys.readouterr().out.splitlines()
    assert first == (
        "dso 1mo all: 41.5 d [2026-03: 2026-02-28 23:00 .. 2026-03-31 22:00 UTC, open, 118 "
        "events; target at most 45.0 d, judged on 30d] meets its target"
    )
    assert history == [
        "  2026-02        2026-01-31 23:00 UTC          39.2 d  (101 events)",
        "  -              2026-02-28 23:00 UTC               -  (3 events)",
    ]


async def test_the_reader_reads_the_label_of_hash_and_history(fake: FakeRedis) -> None:
    async with views.KpiReader("redis://unused") as reader:
        now = await reader.current("dso", "1mo")
        past = await reader.history("dso", "1mo")
        both = await reader.currents([("dso", "1mo", "all"), ("dso", "1q", "all")])
    assert now is not None and now.label == "2026-03" and now.value == 41.5
    assert [p.label for p in past] == ["2026-02", ""]
    assert both == [now, None]


async def test_the_table_shows_every_window_with_its_label_in_one_round_trip(
    fake: FakeRedis,
) -> None:
    table = await views.all_table(Settings())
    assert [c.header for c in table.columns] == ["KPI", *WINDOWS, "target"]
    assert fake.round_trips == 1
    out = io.StringIO()
    Console(file=out, width=250, color_system=None).print(table)
    text = out.getvalue()
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    lines = text.splitlines()

    def cells(i: int) -> list[str]:
        return [c.strip() for c in lines[i].split("│")[1:-1]]

    # The value, and its window's label on the line below; a star on the judged window.
    dso = lines.index(rows["dso"])
    assert cells(dso)[WINDOWS.index("1mo") + 1] == "41.5 d"
    assert cells(dso + 1)[WINDOWS.index("1mo") + 1] == "2026-03"
    assert cells(dso)[WINDOWS.index("30d") + 1] == "*-"
    enps = lines.index(rows["enps"])
    assert cells(enps)[WINDOWS.index("1q") + 1] == "12.00"
    assert cells(enps + 1)[WINDOWS.index("1q") + 1] == "2026-Q1"


async def test_the_table_of_one_window(fake: FakeRedis) -> None:
    table = await views.all_table(Settings(), "1q")
    assert [c.header for c in table.columns] == ["KPI", "1q", "target"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("get", "dso", "-w", "2w"), "unknown window '2w' for dso; one of: "),
        (("get", "--all", "-w", "month"), "unknown window 'month'; one of: "),
        (("watch", "-w", "1m"), "unknown window '1m'; one of: "),
    ],
)
def test_an_unknown_window_is_one_line_listing_the_valid_ones(
    tmp_path: Any, args: tuple[str, ...], message: str
) -> None:
    result = run_kpi(tmp_path, *args, KPI_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert result.stderr == f"kpi: error: {message}1h, 1d, 1w, 1mo, 1q, 1y, 30d\n"


def test_any_window_of_the_kpi_is_asked_of_redis(tmp_path: Any) -> None:
    # Accepted: the command goes on to Redis, which refuses the connection.
    result = run_kpi(tmp_path, "get", "dso", "-w", "1mo", KPI_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert result.stderr.startswith("kpi: error: cannot read Redis at redis://127.0.0.1:1/0")


def test_kpis_page_records_carry_the_label() -> None:
    wv = WindowValue("dso", "1mo", "all", T0, MARCH_END, "2026-03", 41.5, 118, False)
    assert kpi_json(wv) == {
        "name": "dso",
        "window": "1mo",
        "scope": "all",
        "value": 41.5,
        "value_text": "41.5",
        "window_start": "2026-02-28T23:00:00Z",
        "window_end": "2026-03-31T22:00:00Z",
        "label": "2026-03",
        "count": 118,
        "final": False,
    }


# -- duration KPIs: percentiles next to the mean, and `kpi why` (SPEC version 2) -----------

WORST = [{"id": f"T-{n:02d}", "seconds": 3600.0 * (12 - n)} for n in range(12)][:10]
TICKETS = {
    **newest("2026-03-08", "5400.0", "2026-03-07T23:00:00Z", "2026-03-08T23:00:00Z", "40"),
    "p50": "1800.0",
    "p90": "36000.0",
    "p99": "43200.5",
    "worst": orjson.dumps(WORST).decode(),
}
CLOSED_DAY = orjson.dumps(
    {
        "window_start": "2026-03-06T23:00:00Z",
        "window_end": "2026-03-07T23:00:00Z",
        "label": "2026-03-07",
        "value": 90.0,
        "count": 2,
        "p50": 60.0,
        "p90": 120.0,
        "p99": 120.0,
        "worst": [{"id": "T-b", "seconds": 120.0}, {"id": "T-a", "seconds": 60.0}],
    }
).decode()
EMPTY_DAY = orjson.dumps(
    {
        "window_start": "2026-03-05T23:00:00Z",
        "window_end": "2026-03-06T23:00:00Z",
        "label": "2026-03-06",
        "value": None,
        "count": 0,
        "p50": None,
        "p90": None,
        "p99": None,
        "worst": [],
    }
).decode()


@pytest.fixture
def tickets(fake: FakeRedis) -> FakeRedis:
    fake.hashes["kpi:ticket_resolution_time:1d:all"] = TICKETS
    fake.zsets["kpi:ticket_resolution_time:1d:all:history"] = [EMPTY_DAY, CLOSED_DAY]
    return fake


async def test_kpi_get_shows_the_percentiles_next_to_the_mean(
    tickets: FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    await views.print_one(Settings(), "ticket_resolution_time", "1d", "all", history=2)
    first, *history = capsys.readouterr().out.splitlines()
    assert first.startswith(
        "ticket_resolution_time 1d all: 1.5 h (p50 30.0 min, p90 10.0 h, p99 12.0 h) [2026-03-08: "
    )
    assert history[1].endswith("(2 events) (p50 1.0 min, p90 2.0 min, p99 2.0 min)")
    assert history[0].endswith("(0 events) (p50 -, p90 -, p99 -)")
    # Other KPIs: as before, no percentiles.
    await views.print_one(Settings(), "dso", "1mo", "all", history=0)
    assert "p50" not in capsys.readouterr().out


async def test_the_reader_reads_percentiles_and_worst_of_hash_and_history(
    tickets: FakeRedis,
) -> None:
    async with views.KpiReader("redis://unused") as reader:
        now = await reader.current("ticket_resolution_time", "1d")
        past = await reader.history("ticket_resolution_time", "1d")
        dso = await reader.current("dso", "1mo")
    assert now is not None and (now.p50, now.p90, now.p99) == (1800.0, 36000.0, 43200.5)
    assert now.worst == tuple((w["id"], w["seconds"]) for w in WORST)
    assert [(p.p90, p.worst) for p in past] == [
        (None, ()),
        (120.0, (("T-b", 120.0), ("T-a", 60.0))),
    ]
    assert dso is not None and (dso.p50, dso.worst) == (None, None)


async def test_the_table_shows_a_durations_p90_under_its_label(tickets: FakeRedis) -> None:
    out = io.StringIO()
    Console(file=out, width=240, color_system=None).print(await views.all_table(Settings()))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 240
    row = next(i for i, line in enumerate(lines) if "│ ticket_resolution_time " in line)
    day = WINDOWS.index("1d") + 1
    cells = [[c.strip() for c in lines[row + k].split("│")[1:-1]] for k in range(3)]
    assert [c[day] for c in cells] == ["*1.5 h", "2026-03-08", "p90 10.0 h"]
    dso = next(i for i, line in enumerate(lines) if "│ dso " in line)
    assert "p90" not in lines[dso + 2]


async def test_kpi_why_lists_the_newest_windows_worst_longest_first(
    tickets: FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await views.print_worst(Settings(), "ticket_resolution_time", "1d", "all")
    head, *rows = capsys.readouterr().out.splitlines()
    assert head == (
        "ticket_resolution_time 1d all [2026-03-08: 2026-03-07 23:00 .. 2026-03-08 23:00 UTC, "
        "open, 40 events]: the 10 longest"
    )
    assert len(rows) == 10
    assert rows[0] == "  1  T-00  12.0 h  43200.000 s"
    assert rows[9] == " 10  T-09   3.0 h  10800.000 s"


async def test_kpi_why_reads_a_closed_window_by_its_label(
    tickets: FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await views.print_worst(Settings(), "ticket_resolution_time", "1d", "all", "2026-03-07")
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  1  T-b  2.0 min  120.000 s",
        "  2  T-a  1.0 min  60.000 s",
    ]
    # A closed window without any measurement: one line, and False (exit 1).
    assert not await views.print_worst(
        Settings(), "ticket_resolution_time", "1d", "all", "2026-03-06"
    )
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith("final, 0 events]: nothing measured, no worst entities")


@pytest.mark.parametrize(
    ("args", "kind", "message"),
    [
        (
            ("dso", "1mo", "all"),
            views.ConfigurationError,  # exit 2: a usage error
            "dso has no worst entities: only the duration KPIs do (",
        ),
        (
            ("ticket_resolution_time", "1d", "desk"),
            views.NothingToShow,  # exit 1
            "no value yet for ticket_resolution_time 1d desk in redis://",
        ),
        (
            ("ticket_resolution_time", "1d", "all", "2026-03-01"),
            views.NothingToShow,
            "no closed window '2026-03-01' of ticket_resolution_time 1d all in "
            "redis://unused; the newest closed: 2026-03-06, 2026-03-07",
        ),
    ],
)
async def test_kpi_why_errors(
    tickets: FakeRedis, args: tuple[Any, ...], kind: type[Exception], message: str
) -> None:
    settings = Settings(redis_url="redis://unused")
    with pytest.raises(kind) as info:
        await views.print_worst(settings, *args)
    assert type(info.value) is kind
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("why", "dso"), "dso has no worst entities: only the duration KPIs do ("),
        (("why", "ticket_resolution_time", "-w", "2w"), "unknown window '2w' for "),
        (("why", "nope"), "unknown KPI 'nope'; one of: "),
    ],
)
def test_kpi_why_refuses_in_one_line_before_reading_redis(
    tmp_path: Any, args: tuple[str, ...], message: str
) -> None:
    result = run_kpi(tmp_path, *args, KPI_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert result.stderr.startswith(f"kpi: error: {message}")
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_kpis_page_records_of_a_duration_kpi_carry_percentiles_and_worst() -> None:
    wv = WindowValue(
        "ticket_resolution_time",
        "1d",
        "all",
        T0,
        T0 + 86400,
        "2026-03-01",
        90.0,
        2,
        False,
        60.0,
        120.0,
        120.0,
        (("T-b", 120.0), ("T-a", 60.0)),
    )
    record = kpi_json(wv)
    assert list(record)[-4:] == ["p50", "p90", "p99", "worst"]
    assert record["worst"] == [{"id": "T-b", "seconds": 120.0}, {"id": "T-a", "seconds": 60.0}]
    assert (record["p50"], record["p90"], record["p99"]) == (60.0, 120.0, 120.0)
    empty = kpi_json(dataclasses.replace(wv, value=None, p50=None, p90=None, p99=None, worst=()))
    assert (empty["p50"], empty["worst"]) == (None, [])


# -- --json: the same reads as records (README, "Scripting") ----------------------------------


def one_document(capsys: pytest.CaptureFixture[str]) -> Any:
    """The one line of stdout, parsed: a single JSON document and nothing else."""
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1, out
    return orjson.loads(out)


async def test_kpi_get_json_is_the_redis_fields_with_target_verdict_and_history(
    fake: FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    await views.print_one(Settings(), "dso", "1mo", "all", history=2, as_json=True)
    document = one_document(capsys)
    # The catalog's target object, as in Redis's kpi:catalog.
    target = document.pop("target")
    assert (target["value"], target["direction"], target["window"]) == (45.0, "at_most", "30d")
    assert target == KPIS["dso"].catalog_entry("USD")["target"]
    assert document == {
        "name": "dso",
        "window": "1mo",
        "scope": "all",
        "title": KPIS["dso"].title,
        "unit": "days",
        "value": 41.5,
        "count": 118,
        "window_start": "2026-02-28T23:00:00Z",
        "window_end": "2026-03-31T22:00:00Z",
        "label": "2026-03",
        "final": False,
        "updated_at": "2026-03-19T10:00:00Z",
        "verdict": "meets",
        "history": [
            {
                "value": 39.25,
                "count": 101,
                "window_start": "2026-01-31T23:00:00Z",
                "window_end": "2026-02-28T23:00:00Z",
                "label": "2026-02",
                "final": True,
                "updated_at": None,
                "verdict": "meets",
            },
            {
                "value": None,
                "count": 3,
                "window_start": "2026-02-28T23:00:00Z",
                "window_end": "2026-03-31T22:00:00Z",
                "label": "",
                "final": True,
                "updated_at": None,
                "verdict": None,
            },
        ],
    }
    # Without --history: no history field at all.
    await views.print_one(Settings(), "dso", "1mo", "all", history=0, as_json=True)
    assert "history" not in one_document(capsys)


async def test_json_keeps_full_float_precision_and_says_misses(
    fake: FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.hashes["kpi:dso:1mo:all"] = {**MONTH, "value": repr(45 + 1 / 3)}
    await views.print_one(Settings(), "dso", "1mo", "all", history=0, as_json=True)
    document = one_document(capsys)
    assert document["value"] == 45 + 1 / 3  # not 45.3, as the text shows it
    assert document["verdict"] == "misses"


async def test_kpi_get_json_of_a_duration_kpi_has_percentiles_and_worst(
    tickets: FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    await views.print_one(Settings(), "ticket_resolution_time", "1d", "all", 1, as_json=True)
    document = one_document(capsys)
    assert (document["p50"], document["p90"], document["p99"]) == (1800.0, 36000.0, 43200.5)
    assert document["worst"] == WORST
    assert document["unit"] == "seconds"
    (closed,) = document["history"]
    assert closed["worst"] == [{"id": "T-b", "seconds": 120.0}, {"id": "T-a", "seconds": 60.0}]


async def test_kpi_get_all_json_lists_every_kpi_in_every_window_it_keeps(
    tickets: FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    await views.print_all(Settings(), as_json=True)
    document = one_document(capsys)
    assert tickets.round_trips == 1
    assert document["scope"] == "all" and document["windows"] == list(WINDOWS)
    assert document["redis"] == "redis://localhost:6379/0"
    assert document["read_at"].endswith("Z")
    pairs = [(v["name"], v["window"]) for v in document["values"]]
    assert pairs == [(k.name, w) for k in views.CATALOG for w in WINDOWS if w in k.windows]
    by = {(v["name"], v["window"]): v for v in document["values"]}
    assert by["dso", "1mo"]["value"] == 41.5 and by["dso", "1mo"]["label"] == "2026-03"
    assert by["enps", "1q"]["value"] == 12.0
    assert by["ticket_resolution_time", "1d"]["p90"] == 36000.0
    # Nothing written yet for dso 30d: the same fields, null.
    nothing = by["dso", "30d"]
    assert nothing["value"] is nothing["window_start"] is nothing["verdict"] is None
    assert set(nothing) == set(by["dso", "1mo"])
    # One window only.
    await views.print_all(Settings(), "1q", as_json=True)
    assert {v["window"] for v in one_document(capsys)["values"]} == {"1q"}


async def test_watch_json_is_one_document_per_redraw(
    fake: FakeRedis, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Stop(Exception):
        pass

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise Stop

    monkeypatch.setattr(views.asyncio, "sleep", sleep)
    with pytest.raises(Stop):
        await views.print_all(Settings(), watch_s=2.5, as_json=True)
    lines = capsys.readouterr().out.splitlines()
    assert sleeps == [2.5, 2.5, 2.5] and len(lines) == 3
    assert all(orjson.loads(line)["values"] for line in lines)


async def test_kpi_why_json_lists_the_worst_as_in_redis(
    tickets: FakeRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings()
    assert await views.print_worst(settings, "ticket_resolution_time", "1d", "all", as_json=True)
    document = one_document(capsys)
    assert document["worst"] == WORST and document["label"] == "2026-03-08"
    assert document["count"] == 40 and document["final"] is False
    # A window without measurements: the document, with no worst, and False (exit 1).
    closed = "2026-03-06"
    assert not await views.print_worst(
        settings, "ticket_resolution_time", "1d", "all", closed, as_json=True
    )
    document = one_document(capsys)
    assert (document["label"], document["worst"], document["value"]) == (closed, [], None)
