"""Two workers share the partitions; one is killed mid-stream; the results stay exact.

Each topic is led (windows closed and published) by the worker owning its partition 0;
the other worker follows the changelogs. Exactly one worker exports a topic's KPI series.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from streams.catalog import CATALOG
from streams.config import Settings
from streams.core.windows import rfc3339
from streams.stack import free_port
from tests import reference
from tests.eventgen import random_log
from tests.integration.helpers import Worker, publish, read_topic, wait_until
from tests.integration.test_worker_reference import DAYS, recent_start


def health(worker: Worker) -> dict[str, Any]:
    try:
        return httpx.get(worker.url("/health"), timeout=2).json()
    except httpx.HTTPError:
        return {}


def kpi_series(worker: Worker) -> set[str]:
    """Names of KPI gauge families with at least one sample in the worker's /metrics."""
    text = httpx.get(worker.url("/metrics"), timeout=5).text
    names = {k.metric for k in CATALOG}
    return {line.split("{")[0] for line in text.splitlines() if line.split("{")[0] in names}


def test_two_workers_then_one_killed_stay_exact(kpi_env: Settings, tmp_path: Path) -> None:
    partitions = {t: kpi_env.partitions for t in ("invoices", "hiring", "incidents")}
    start = recent_start()
    messages = random_log(seed=5, n_events=3000, days=DAYS, partitions=partitions, start=start)
    expected = reference.compute(
        messages, partitions=partitions, grace_seconds=3600, now=time.time()
    )
    half = len(messages) // 2
    first, second = messages[:half], messages[half:]

    a = Worker(kpi_env, tmp_path / "a.log").start()
    b_env = kpi_env.model_copy(update={"web_port": free_port()})
    b = Worker(b_env, tmp_path / "b.log").start()
    try:
        # faust assigns partition p of every topic to one worker: wait until both have some.
        wait_until(lambda: health(a).get("assigned") and health(b).get("assigned"), timeout_s=90)
        publish(kpi_env, [(m.topic, m.partition, m.value) for m in first])
        wait_until(
            lambda: (
                health(a).get("events_processed", 0) + health(b).get("events_processed", 0)
                >= len(first)
            ),
            timeout_s=120,
        )
        owners = {w: set(health(w)["partitions"]) for w in (a, b)}
        leader = a if "invoices-0" in owners[a] else b
        follower = b if leader is a else a
        # Exactly one worker exports each topic's KPI series: the owner of its partition 0.
        for kpi in CATALOG:
            leads = f"{kpi.topic}-0" in owners[follower]
            got = kpi.metric in kpi_series(follower)
            assert got == leads, (kpi.name, owners)

        leader.kill()  # the leader of (at least) the invoices topic dies mid-stream
        publish(kpi_env, [(m.topic, m.partition, m.value) for m in second])
        r = redis.Redis.from_url(kpi_env.redis_url)
        keys = sorted(k for k, v in expected.history.items() if v)

        def history() -> dict[tuple[str, str, str], dict[str, Any]]:
            out = {}
            for kpi, window, scope in keys:
                members = r.zrange(f"kpi:{kpi}:{window}:{scope}:history", 0, -1, withscores=True)
                scores = [s for _m, s in members]
                assert len(scores) == len(set(scores)), f"two versions in {kpi} {window} {scope}"
                out[(kpi, window, scope)] = {
                    d["window_start"]: (d["value"], d["count"])
                    for d in (orjson.loads(m) for m, _s in members)
                }
            return out

        def complete() -> bool:
            got = history()
            return all(len(got[k]) == len(expected.history[k]) for k in keys)

        try:
            wait_until(complete, timeout_s=180, interval_s=1.0)
        except AssertionError:
            got = history()
            short = [
                (k, len(got[k]), len(expected.history[k]))
                for k in keys
                if len(got[k]) != len(expected.history[k])
            ]
            raise AssertionError(f"history incomplete: {short[:12]}") from None
        got = history()
        bad = []
        for key in keys:
            for ws, (value, count) in expected.history[key].items():
                found = got[key].get(rfc3339(ws))
                ok = (
                    found is not None
                    and found[1] == count
                    and (
                        found[0] == value
                        if value is None or found[0] is None
                        else math.isclose(found[0], value, rel_tol=1e-9, abs_tol=1e-12)
                    )
                )
                if not ok:
                    bad.append((key, ws, found, (value, count)))
        assert not bad, bad[:10]
        # The survivor took every partition and now exports every KPI family.
        assert len(health(follower)["partitions"]) == 3 * kpi_env.partitions
        assert kpi_series(follower) == {k.metric for k in CATALOG}

        letters = read_topic(kpi_env, kpi_env.dead_letter_topic)
        logical = {kpi_env.topic(t): t for t in partitions}
        seen = [(logical[d["topic"]], d["partition"], d["offset"], d["reason"]) for d in letters]
        assert len(seen) == len(set(seen)), "a message was dead-lettered twice"
        assert sorted(seen) == sorted(expected.dead_letters)
    finally:
        a.stop()
        b.stop()
