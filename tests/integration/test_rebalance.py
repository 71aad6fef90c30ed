"""Rebalances always settle (issue 12): a member dies while another joins; a seeded soak.

The scenario: workers A and B share the group; the first third of a twelve-day log is
published; A is killed; the rest is published and B works off its share; then C joins
while A's session has not expired yet, so one rebalance removes A and adds C. One of B
and C is then given only partitions with nothing new to read. Before the fix that worker
never restored them (a restore waited for records), so the topics it led never closed a
window again. Afterwards every closed window equals the reference.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import redis

from streams.config import Settings
from tests.integration.chaos import (
    as_published,
    assert_exact,
    health,
    live_log,
    split_tenths,
    wait_caught_up,
)
from tests.integration.conftest import Stack
from tests.integration.helpers import Worker, publish, wait_until
from tests.integration.soak import soak
from tooling.stack import free_port


def generations(worker: Worker) -> list[int]:
    """The generations the worker joined, from its log."""
    return [
        int(g) for g in re.findall(r"Joined group '[^']+' \(generation (-?\d+)\)", worker.log())
    ]


def assert_no_stall(workers: list[Worker]) -> None:
    for w in workers:
        status, body = health(w)
        assert not body.get("problems"), (w.log_path.name, body)
        assert "stalled" not in w.log(), w.log_path.name


def test_a_member_dies_while_another_joins(kpi_env: Settings, tmp_path: Path) -> None:
    settings = kpi_env.model_copy(update={"stall_seconds": 20.0})
    log = live_log(settings, seed=12, n_events=6000, days=12)
    first, rest = split_tenths(log.messages, 3)
    a = Worker(settings, tmp_path / "A.log").start()
    b = Worker(settings.model_copy(update={"web_port": free_port()}), tmp_path / "B.log").start()
    c = Worker(settings.model_copy(update={"web_port": free_port()}), tmp_path / "C.log")
    try:
        wait_until(lambda: all(health(w)[1].get("partitions") for w in (a, b)), timeout_s=90)
        # Two workers started together settle in one rebalance each: before the fix every
        # join took two generations (aiokafka sent one JoinGroup per assignment strategy).
        assert max(generations(a) + generations(b)) <= 3, (generations(a), generations(b))

        publish(settings, as_published(first))
        wait_until(lambda: health(b)[1].get("lag") == 0, timeout_s=60)
        a.kill()
        killed_at = time.monotonic()
        publish(settings, as_published(rest))
        # B works off its own partitions; A's wait for the rebalance.
        wait_until(lambda: health(b)[1].get("lag") == 0, timeout_s=60)
        c.start()
        # C's join and A's expiry (10 s session) fall into one rebalance.
        assert time.monotonic() - killed_at < 10.0, "C joined after A's session expired"

        wait_caught_up(settings, timeout_s=120)
        assert_exact(redis.Redis.from_url(settings.redis_url), log, timeout_s=120)
        held = [set(health(w)[1]["partitions"]) for w in (b, c)]
        assert len(held[0] | held[1]) == 3 * settings.partitions, held
        assert_no_stall([b, c])
    finally:
        for w in (a, b, c):
            w.stop()


def test_rebalance_soak_short(stack: Stack, tmp_path: Path) -> None:
    """Ten random membership changes (kill, stop, start, restart; some within the session
    timeout of each other) while an eight-day log streams in: exact, no stall."""
    report = soak(stack.settings(), tmp_path, seed=4, changes=10)
    print(report.line())
    assert sum(report.changes.values()) >= 10
    assert report.quick_pairs >= 1
