"""The invoice KPIs end to end: real Kafka, the worker as a subprocess, real Redis.

Hand-computed expectations (T0 = 2026-01-01T00:00Z, windows of one hour):
  partition 0: a (finance) received T0+10m, approved T0+40m          -> 1800 s
  partition 1: b (hr) received T0+5m, rejected T0+50m                  -> 2700 s, and a
               redelivery of the rejection (same event_id)             -> dropped
  partition 2: c (finance) received T0+20m, then x received T0+1h30m, then c approved
               T0+55m: 35 min behind the watermark, within the 1 h grace -> 2100 s
  partition 3: garbage, an approval of an unknown invoice, a EUR invoice -> dead letters
  then every partition gets an event at T0+3h: frontier - grace = T0+2h closes [T0, T0+1h)
  then partition 0 gets an event at T0+10m: 2h50m behind its watermark    -> late
[T0, T0+1h): processing time finance (1800+2100)/2 = 1950 (2), hr 2700 (1),
all (1800+2100+2700)/3 = 2200 (3); error rate finance 0, hr 1, all 1/3.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from streams.config import Settings
from streams.kpis.base import WINDOWS
from streams.reader import KpiReader
from tests.integration.helpers import REPO, Worker, process_env, publish, read_topic, wait_until

T0 = 1_767_225_600
M = 60


def ts(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def received(eid: str, inv: str, t: float, dept: str, currency: str = "USD") -> dict[str, Any]:
    return {
        "event_id": eid,
        "type": "invoice.received",
        "occurred_at": ts(t),
        "invoice_id": inv,
        "amount": 100.0,
        "currency": currency,
        "department": dept,
        "vendor_id": "v1",
    }


def decided(eid: str, inv: str, t: float, type_: str = "invoice.approved") -> dict[str, Any]:
    event = {"event_id": eid, "type": type_, "occurred_at": ts(t), "invoice_id": inv}
    if type_ == "invoice.rejected":
        event["reason"] = "wrong VAT number"
    return event


FIRST = [
    ("invoices", 0, received("a1", "a", T0 + 10 * M, "finance")),
    ("invoices", 0, decided("a2", "a", T0 + 40 * M)),
    ("invoices", 1, received("b1", "b", T0 + 5 * M, "hr")),
    ("invoices", 1, decided("b2", "b", T0 + 50 * M, "invoice.rejected")),
    ("invoices", 1, decided("b2", "b", T0 + 50 * M, "invoice.rejected")),
    ("invoices", 2, received("c1", "c", T0 + 20 * M, "finance")),
    ("invoices", 2, received("x1", "x", T0 + 90 * M, "finance")),
    ("invoices", 2, decided("c2", "c", T0 + 55 * M)),
    ("invoices", 3, b"{this is not json"),
    ("invoices", 3, decided("u1", "never-received", T0 + 30 * M)),
    ("invoices", 3, received("e1", "eur", T0 + 30 * M, "finance", currency="EUR")),
]
FLUSH = [("invoices", p, received(f"f{p}", f"flush{p}", T0 + 180 * M, "ops")) for p in range(4)]
LATE = [("invoices", 0, received("late1", "late", T0 + 10 * M, "finance"))]


def history(r: redis.Redis, kpi: str, scope: str) -> dict[str, tuple[Any, int]]:
    members = r.zrange(f"kpi:{kpi}:1h:{scope}:history", 0, -1)
    out = {}
    for m in members:
        doc = orjson.loads(m)
        out[doc["window_start"]] = (doc["value"], doc["count"])
    return out


@pytest.fixture
def worker(kpi_env: Settings, tmp_path: Path) -> Any:
    w = Worker(kpi_env, tmp_path / "worker.log").start()
    yield w
    w.stop()


def test_invoice_kpis_end_to_end(kpi_env: Settings, worker: Worker) -> None:
    r = redis.Redis.from_url(kpi_env.redis_url)
    publish(kpi_env, FIRST + FLUSH)
    wait_until(lambda: history(r, "invoice_processing_time", "all"), timeout_s=90)
    publish(kpi_env, LATE)

    start = "2026-01-01T00:00:00Z"
    assert history(r, "invoice_processing_time", "all")[start] == (2200.0, 3)
    assert history(r, "invoice_processing_time", "finance")[start] == (1950.0, 2)
    assert history(r, "invoice_processing_time", "hr")[start] == (2700.0, 1)
    assert history(r, "invoice_error_rate", "all")[start] == (pytest.approx(1 / 3), 3)
    assert history(r, "invoice_error_rate", "finance")[start] == (0.0, 2)
    assert history(r, "invoice_error_rate", "hr")[start] == (1.0, 1)
    # Only [T0, T0+1h) had decisions; x (T0+1h30m) fed no decision, so no other member.
    assert list(history(r, "invoice_processing_time", "all")) == [start]

    current = r.hgetall("kpi:invoice_processing_time:1h:all")
    assert current[b"window_start"] == b"2026-01-01T03:00:00Z"
    assert current[b"label"] == b"2026-01-01T03"
    member = orjson.loads(r.zrange("kpi:invoice_processing_time:1h:all:history", 0, 0)[0])
    # A duration KPI's member adds its distribution after version 1's fields (SPEC 3).
    assert list(member) == [
        *("window_start", "window_end", "label", "value", "count"),
        *("p50", "p90", "p99", "worst"),
    ]
    assert member["label"] == "2026-01-01T00"
    # Durations 1800 (a), 2700 (b), 2100 (c): x_k with k = floor(q * 2) = 1 is 2100 s for
    # p50, p90 and p99 alike, reported within 1%; the worst longest first.
    for q in ("p50", "p90", "p99"):
        assert member[q] == pytest.approx(2100.0, rel=0.01)
    assert member["worst"] == [
        {"id": "b", "seconds": 2700.0},
        {"id": "c", "seconds": 2100.0},
        {"id": "a", "seconds": 1800.0},
    ]
    # A KPI without durations keeps version 1's member exactly.
    plain = orjson.loads(r.zrange("kpi:invoice_error_rate:1h:all:history", 0, 0)[0])
    assert list(plain) == ["window_start", "window_end", "label", "value", "count"]
    assert current[b"final"] == b"0"
    catalog = r.hgetall("kpi:catalog")
    assert orjson.loads(catalog[b"invoice_error_rate"])["dimension"] == "department"
    assert orjson.loads(catalog[b"dso"])["target"]["window"] == "30d"
    assert r.xlen("kpi:changes") > 0

    def dead_letters() -> list[dict[str, Any]]:
        found = read_topic(kpi_env, kpi_env.dead_letter_topic)
        return found if len(found) >= 4 else []

    letters = wait_until(dead_letters, timeout_s=30)
    assert sorted(d["reason"] for d in letters) == [
        "currency",
        "invalid_json",
        "late",
        "unknown_entity",
    ]
    garbage = next(d for d in letters if d["reason"] == "invalid_json")
    assert garbage["payload"] == "{this is not json"
    assert garbage["topic"] == kpi_env.topic("invoices")
    assert (garbage["partition"], garbage["offset"]) == (3, 0)

    kpis = httpx.get(worker.url("/kpis"), timeout=5).json()["kpis"]
    mine = {(k["name"], k["window"], k["scope"]): k for k in kpis}
    assert mine[("invoice_error_rate", "30d", "hr")]["value"] == 1.0
    assert mine[("invoice_processing_time", "1h", "all")]["final"] is False
    # Every calendar window of the default calendar (UTC, fiscal year from January).
    assert {w: mine[("invoice_error_rate", w, "hr")]["label"] for w in WINDOWS} == {
        "1h": "2026-01-01T03",
        "1d": "2026-01-01",
        "1w": "2026-W01",
        "1mo": "2026-01",
        "1q": "2026-Q1",
        "1y": "2026",
        "30d": "2026-01-01",
    }

    async def read() -> tuple[Any, Any, Any]:
        async with KpiReader(kpi_env.redis_url) as reader:
            return (
                await reader.current("invoice_error_rate", "30d", "all"),
                await reader.history("invoice_processing_time", "1h", "finance"),
                await reader.catalog(),
            )

    current_rate, finance, catalog_read = asyncio.run(read())
    assert current_rate is not None and current_rate.value == pytest.approx(1 / 3)
    assert [(h.label, h.value, h.count) for h in finance] == [("2026-01-01T00", 1950.0, 2)]
    assert catalog_read["dso"]["target"]["direction"] == "at_most"

    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "kpi",
            "get",
            "invoice_processing_time",
            "-w",
            "1h",
            "-s",
            "finance",
            "--history",
            "3",
        ],
        env=process_env(kpi_env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "invoice_processing_time 1h finance" in shown and "32.5 min" in shown
    assert "[2026-01-01T03: 2026-01-01 03:00 .. 2026-01-01 04:00 UTC, open" in shown
    assert "  2026-01-01T00  2026-01-01 00:00 UTC" in shown

    metrics = httpx.get(worker.url("/metrics"), timeout=5).text
    assert 'backoffice_invoice_processing_time_seconds{department="all",window="30d"}' in metrics
    assert 'backoffice_invoice_error_ratio{department="hr",window="30d"} 1.0' in metrics
    assert 'backoffice_duplicates_total{topic="' + kpi_env.topic("invoices") + '"} 1.0' in metrics
    assert 'backoffice_dead_letters_total{reason="late"} 1.0' in metrics


def test_windows_close_after_a_restart(kpi_env: Settings, tmp_path: Path) -> None:
    r = redis.Redis.from_url(kpi_env.redis_url)
    first = Worker(kpi_env, tmp_path / "first.log").start()
    try:
        publish(kpi_env, FIRST)
        wait_until(lambda: r.exists("kpi:invoice_processing_time:1h:finance"), timeout_s=90)
        wait_until(lambda: int(r.hget("kpi:invoice_error_rate:30d:all", "count") or 0) == 3)
    finally:
        first.kill()
    second = Worker(kpi_env, tmp_path / "second.log").start()
    try:
        publish(kpi_env, FLUSH)
        found = wait_until(lambda: history(r, "invoice_processing_time", "all"), timeout_s=90)
        assert found == {"2026-01-01T00:00:00Z": (2200.0, 3)}
        assert "restored" in second.log()
    finally:
        second.stop()


def test_a_state_kept_in_another_calendar_stops_the_worker_in_one_line(
    kpi_env: Settings, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(kpi_env.redis_url)
    first = Worker(kpi_env, tmp_path / "utc.log").start()
    try:
        publish(kpi_env, FIRST)
        wait_until(lambda: int(r.hget("kpi:invoice_error_rate:30d:all", "count") or 0) == 3)
    finally:
        first.stop()
    # The same application in another time zone finds its state cut in UTC at restore.
    berlin = kpi_env.model_copy(update={"timezone": "Europe/Berlin"})
    log = tmp_path / "berlin.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "kpi", "worker"],
            cwd=REPO,
            env=process_env(berlin),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    text = log.read_text(errors="replace")
    errors = [line for line in text.splitlines() if "kpi: error:" in line]
    assert done.returncode == 2, text[-3000:]
    assert len(errors) == 1, text[-3000:]
    assert "KPI_TIMEZONE=UTC" in errors[0] and "not Europe/Berlin" in errors[0], errors
    assert "new KPI_APP_ID" in errors[0]
    assert "Traceback" not in text and "Crashed reason" not in text
