"""Two or three workers share the partitions; one is killed mid-stream; results stay exact.

Each topic is led (windows closed and published) by the worker owning its partition 0,
which follows the other partitions' changelogs; the group's assignor puts the partition 0s
on different workers. Exactly one worker exports a topic's KPI series.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from streams.catalog import CATALOG
from streams.config import Settings
from tests.comparison import describe
from tests.eventgen import random_log
from tests.integration.chaos import reference_for, window_mismatches
from tests.integration.helpers import Worker, publish, read_topic, wait_until
from tests.integration.test_worker_reference import DAYS, recent_start
from tooling.stack import free_port


def health(worker: Worker) -> dict[str, Any]:
    """``/health``, or {} while the worker does not answer (busy restoring, or starting)."""
    try:
        return httpx.get(worker.url("/health"), timeout=5).json()
    except httpx.HTTPError:
        return {}


def partitions_of(workers: list[Worker]) -> dict[Worker, set[str]]:
    """The input partitions each worker holds, once every one of them answers."""

    def answered() -> list[dict[str, Any]] | None:
        bodies = [health(w) for w in workers]
        return bodies if all("partitions" in b for b in bodies) else None

    bodies = wait_until(answered, timeout_s=60)
    return {w: set(b["partitions"]) for w, b in zip(workers, bodies, strict=True)}


def kpi_series(worker: Worker) -> set[str]:
    """Names of KPI gauge families with at least one sample in the worker's /metrics."""
    text = httpx.get(worker.url("/metrics"), timeout=5).text
    names = {k.metric for k in CATALOG}
    return {line.split("{")[0] for line in text.splitlines() if line.split("{")[0] in names}


@pytest.mark.parametrize("n_workers", [2, 3])
def test_workers_then_the_invoices_leader_killed_stay_exact(
    kpi_env: Settings, tmp_path: Path, n_workers: int
) -> None:
    partitions = {t: kpi_env.partitions for t in ("invoices", "hiring", "incidents")}
    start = recent_start()
    messages = random_log(seed=5, n_events=3000, days=DAYS, partitions=partitions, start=start)
    expected = reference_for(kpi_env, messages, partitions, time.time())
    half = len(messages) // 2
    first, second = messages[:half], messages[half:]

    workers = [Worker(kpi_env, tmp_path / "w0.log").start()]
    for i in range(1, n_workers):
        env = kpi_env.model_copy(update={"web_port": free_port()})
        workers.append(Worker(env, tmp_path / f"w{i}.log").start())
    try:
        # Wait until the group has given every worker some partitions.
        wait_until(lambda: all(health(w).get("assigned") for w in workers), timeout_s=90)
        publish(kpi_env, [(m.topic, m.partition, m.value) for m in first])
        wait_until(
            lambda: sum(health(w).get("events_processed", 0) for w in workers) >= len(first),
            timeout_s=120,
        )
        owners = partitions_of(workers)
        leaders = {t: w for w in workers for t in partitions if f"{t}-0" in owners[w]}
        # The assignor spread the leaders: with three workers, one topic each.
        assert len(set(leaders.values())) == min(n_workers, len(partitions)), owners

        # Exactly one worker exports each topic's KPI series: the owner of its partition 0
        # (once it has read the other partitions' changelogs up to their end).
        def exporters() -> dict[str, list[int]]:
            exported = [kpi_series(w) for w in workers]
            return {k.name: [i for i, e in enumerate(exported) if k.metric in e] for k in CATALOG}

        exporting = {k.name: [workers.index(leaders[k.topic])] for k in CATALOG}
        try:
            wait_until(lambda: exporters() == exporting, timeout_s=90, interval_s=0.5)
        except AssertionError:
            raise AssertionError(f"exporters {exporters()} != leaders {exporting}") from None

        leader = leaders["invoices"]
        leader.kill()  # the leader of (at least) the invoices topic dies mid-stream
        survivors = [w for w in workers if w is not leader]
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
                    d["window_start"]: d for d in (orjson.loads(m) for m, _s in members)
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
            bad += window_mismatches(key, got[key], expected.records(key))
        assert not bad, describe(bad, sum(len(v) for v in expected.history.values()))
        # The survivors took every partition and now export every KPI family between them.
        held = partitions_of(survivors)
        assert sum(len(p) for p in held.values()) == 3 * kpi_env.partitions, held
        assert set().union(*(kpi_series(w) for w in survivors)) == {k.metric for k in CATALOG}

        assert expected.dead_letters

        def dead_letters() -> list[dict[str, Any]]:
            found = read_topic(kpi_env, kpi_env.dead_letter_topic)
            return found if len(found) >= len(expected.dead_letters) else []

        letters = wait_until(dead_letters, timeout_s=60)
        logical = {kpi_env.topic(t): t for t in partitions}
        seen = [(logical[d["topic"]], d["partition"], d["offset"], d["reason"]) for d in letters]
        assert len(seen) == len(set(seen)), "a message was dead-lettered twice"
        assert sorted(seen) == sorted(expected.dead_letters)
    finally:
        for w in workers:
            w.stop()
