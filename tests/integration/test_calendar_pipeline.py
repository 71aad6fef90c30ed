"""Calendar windows through the real stack (issue 15, "Done when").

A three-week log in Europe/Berlin with the fiscal year from April (the 2026-03-29 clock
change, the month, fiscal quarter and fiscal year end of March 31) and a two-week log in
Asia/Kolkata (+05:30; the year end 2020/2021 and ISO week 2020-W53) go through
``kpi worker``; both carry invoices in EUR and GBP with their ``reporting_amount``
(tests/eventgen.py books a quarter of them in a foreign currency), under SLAs tighter than
the defaults. Redis history equals tests/reference.py for every closed window of every KPI,
window and scope (tests/comparison.py: window end, label and count exactly, value within
1e-9 relative, percentiles within 1%, worst entities exactly), with one member per window,
and the dead-letter topic holds exactly the reference's dead letters, each once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis

from streams.config import Settings
from tests.comparison import TIGHT_INCIDENT_SLA, TIGHT_TICKET_SLA
from tests.eventgen import calendar_flush_time, random_log
from tests.integration.chaos import LiveLog, assert_exact, reference_for
from tests.integration.helpers import Worker, publish
from tests.reference import TOPICS


def calendar_log(
    settings: Settings, *, start: datetime, days: int, seed: int, n_events: int
) -> LiveLog:
    """A seeded log of ``days`` days from ``start`` in the settings' calendar, flushed after
    its last local day; its "future" faults are a day ahead of the real clock."""
    partitions = dict.fromkeys(TOPICS, settings.partitions)
    now = time.time()
    first = start.timestamp()
    messages = random_log(
        seed=seed,
        n_events=n_events,
        days=days,
        partitions=partitions,
        start=first,
        grace=settings.grace_seconds,
        now=now,
        flush_at=calendar_flush_time(first, days, settings.timezone, settings.grace_seconds),
    )
    expected = reference_for(settings, messages, partitions, now)
    return LiveLog(settings, messages, partitions, expected, now, first)


def closed_labels(log: LiveLog, window: str) -> set[str]:
    return {span.label for span in log.expected.spans[window].values()}


def applied_invoice_currencies(log: LiveLog) -> set[str]:
    """The currencies of the issued and received invoices the reference applied."""
    refused = {(t, p, o) for t, p, o, _ in log.expected.dead_letters}
    currencies = set()
    for m in log.messages:
        if (m.topic, m.partition, m.offset) in refused:
            continue
        doc = orjson.loads(m.value)
        if doc.get("type") in ("invoice.issued", "invoice.received"):
            currencies.add(doc["currency"])
    return currencies


@pytest.mark.parametrize(
    ("timezone", "fiscal_year_start", "start", "days", "labels"),
    [
        pytest.param(
            "Europe/Berlin",
            4,
            datetime(2026, 3, 16, 5, 0, tzinfo=UTC),
            21,
            {
                "1h": {"2026-03-29T01", "2026-03-29T03"},
                "1d": {"2026-03-29", "2026-03-31", "2026-04-01"},
                "1w": {"2026-W13", "2026-W14"},
                "1mo": {"2026-03"},
                "1q": {"FY2026-Q4"},
                "1y": {"FY2026"},
                "30d": {"2026-04-05"},
            },
            id="berlin-fiscal-april",
        ),
        pytest.param(
            "Asia/Kolkata",
            1,
            datetime(2020, 12, 21, 2, 0, tzinfo=UTC),
            14,
            {
                "1h": {"2020-12-31T23", "2021-01-01T00"},
                "1d": {"2020-12-31", "2021-01-01"},
                "1w": {"2020-W52", "2020-W53"},
                "1mo": {"2020-12"},
                "1q": {"2020-Q4"},
                "1y": {"2020"},
                "30d": {"2021-01-03"},
            },
            id="kolkata",
        ),
    ],
)
def test_calendar_log_through_the_worker_equals_reference(
    kpi_env: Settings,
    tmp_path: Path,
    timezone: str,
    fiscal_year_start: int,
    start: datetime,
    days: int,
    labels: dict[str, set[str]],
) -> None:
    settings = kpi_env.model_copy(
        update={
            "timezone": timezone,
            "fiscal_year_start": fiscal_year_start,
            "ticket_sla": TIGHT_TICKET_SLA,
            "incident_sla": TIGHT_INCIDENT_SLA,
        }
    )
    log = calendar_log(settings, start=start, days=days, seed=days, n_events=4000)
    # the log closes the windows it is meant to cross, in all seven windows
    for window, wanted in labels.items():
        assert wanted <= closed_labels(log, window), window
    assert {"future", "late", "schema", "currency"} <= {d[3] for d in log.expected.dead_letters}
    assert {"USD", "EUR", "GBP"} <= applied_invoice_currencies(log)

    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        publish(settings, [(m.topic, m.partition, m.value) for m in log.messages])
        r = redis.Redis.from_url(settings.redis_url)
        try:
            assert_exact(r, log, timeout_s=240)
        finally:
            r.close()
    finally:
        worker.stop()
