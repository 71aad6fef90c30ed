"""A multi-day log of all three topics through the real stack equals the batch reference.

Every closed window of all sixteen KPIs in Redis history, for every window and scope,
equals tests/reference.py (tests/comparison.py: value within 1e-9 relative; for the duration
KPIs the percentiles within 1% and the worst entities exactly), under SLAs tighter than the
defaults; the dead-letter topic holds exactly the invalid, late and future events, by reason.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import redis

from streams.config import Settings
from tests.comparison import TIGHT_INCIDENT_SLA, TIGHT_TICKET_SLA, assert_rich, describe
from tests.eventgen import log_now, random_log
from tests.integration.chaos import live_start, reference_for, window_mismatches
from tests.integration.helpers import Worker, publish, read_topic, wait_until

DAYS = 5
DAY = 86400


def recent_start() -> float:
    """A log start whose intended wall clock is a few minutes before the real one.

    Then the generator's "future" events (a day past that clock) are in the real future too,
    and the worker dead-letters them with reason ``future``, as the reference does.
    """
    now = time.time()
    start = now - (DAYS + 1) * DAY
    while log_now(start + DAY, DAYS) < now - 600:
        start += DAY
    return float(int(start))


def redis_history(
    r: redis.Redis, keys: list[tuple[str, str, str]]
) -> dict[tuple[str, str, str], dict[str, dict[str, Any]]]:
    """The history members of each key, by window start."""
    out = {}
    for kpi, window, scope in keys:
        members = r.zrange(f"kpi:{kpi}:{window}:{scope}:history", 0, -1)
        out[(kpi, window, scope)] = {d["window_start"]: d for d in map(orjson.loads, members)}
    return out


def test_multi_day_log_equals_reference(kpi_env: Settings, tmp_path: Path) -> None:
    kpi_env = kpi_env.model_copy(
        update={"ticket_sla": TIGHT_TICKET_SLA, "incident_sla": TIGHT_INCIDENT_SLA}
    )
    partitions = {
        "invoices": kpi_env.partitions,
        "hiring": kpi_env.partitions,
        "incidents": kpi_env.partitions,
    }
    # live_start, not recent_start: from midnight to 01:02 UTC recent_start's log would end
    # after now; live_start dates the "future" faults from the real clock instead.
    now = time.time()
    start = live_start(DAYS, now=now)
    messages = random_log(
        seed=3, n_events=3000, days=DAYS, partitions=partitions, start=start, now=now
    )
    expected = reference_for(kpi_env, messages, partitions, now)
    assert sum(len(v) for v in expected.history.values()) > 1000
    assert_rich(expected)
    assert {"future", "late", "schema", "invalid_json"} <= {d[3] for d in expected.dead_letters}

    worker = Worker(kpi_env, tmp_path / "worker.log").start()
    try:
        publish(kpi_env, [(m.topic, m.partition, m.value) for m in messages])
        r = redis.Redis.from_url(kpi_env.redis_url)
        keys = sorted(k for k, v in expected.history.items() if v)

        def complete() -> bool:
            got = redis_history(r, keys)
            return all(len(got[k]) == len(expected.history[k]) for k in keys)

        wait_until(complete, timeout_s=180, interval_s=1.0)
        got = redis_history(r, keys)
        mismatches = []
        for key in keys:
            mismatches += window_mismatches(key, got[key], expected.records(key))
        total = sum(len(v) for v in expected.history.values())
        assert not mismatches, describe(mismatches, total)

        def dead_letters() -> list[dict[str, Any]]:
            found = read_topic(kpi_env, kpi_env.dead_letter_topic)
            return found if len(found) >= len(expected.dead_letters) else []

        letters = wait_until(dead_letters, timeout_s=60)
        logical = {kpi_env.topic(t): t for t in partitions}
        assert sorted(
            (logical[d["topic"]], d["partition"], d["offset"], d["reason"]) for d in letters
        ) == sorted(expected.dead_letters)
    finally:
        worker.stop()
