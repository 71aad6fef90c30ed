"""Outages around a running worker: Redis down, the Kafka broker restarted, a stalled sink.

Each test streams a multi-day log with faults (tests/eventgen.py) through the real worker
while a dependency fails, then checks that the worker never exited and that Redis history
converges to exactly tests/reference.py (every closed window of every KPI, window and scope,
one member per window) and the dead-letter topic holds every invalid message once.

* Redis: a persistent Redis of the test's own (AOF, fsync always, as a production Redis
  that must keep what it acknowledged) is SIGKILLed for 30 s while events keep arriving.
  ``/health`` says 503 "redis unreachable", ``backoffice_redis_up`` is 0 and the write
  errors count; after the restart on the same port and directory the worker catches up.
* Kafka: a stack of the test's own (so the session's broker stays up for other tests); its
  broker is stopped with SIGTERM right after the first half of the log was published,
  started again with ``stack_up``, and the second half follows.
* Stall: with ``KPI_STALL_SECONDS=5``, a Redis that stops answering (SIGSTOP: connections
  are accepted, nothing is ever answered) while input waits makes ``/health`` 503 with a
  "stalled" problem; an idle worker without lag is not stalled.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from streams.config import Settings
from tests.integration.chaos import (
    EnvWorker,
    StreamPublisher,
    as_published,
    assert_alive,
    assert_exact,
    dedicated_stack,
    events_processed,
    health,
    history_total,
    live_log,
    metric,
    redis_server,
    split_tenths,
    start_kafka,
    stop_kafka,
    wait_caught_up,
    worker_settings,
)
from tests.integration.helpers import Worker, publish, wait_until

OUTAGE_S = 30.0


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_redis_outage_then_exact_results(kpi_env: Settings, tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis", persistent=True) as server:
        settings = kpi_env.model_copy(update={"redis_url": server.url})
        log = live_log(settings, seed=202, n_events=3000, days=4)
        before, during, after = split_tenths(log.messages, 3, 8)
        keys = log.history_keys
        r = server.client()
        worker = Worker(settings, tmp_path / "worker.log").start()
        try:
            publish(settings, as_published(before))
            wait_caught_up(settings)
            written = history_total(r, keys)
            assert written > 0
            assert health(worker)[0] == 200
            assert metric(worker, "backoffice_redis_up") == 1

            server.kill()  # a crash: SIGKILL
            down_at = time.monotonic()
            # Events keep arriving for the whole outage.
            streaming = StreamPublisher(
                settings, during, chunk=max(1, len(during) // 40), pause_s=0.5
            )
            streaming.start()

            def unhealthy() -> dict[str, Any] | None:
                status, body = health(worker)
                return body if status == 503 else None

            body = wait_until(unhealthy, timeout_s=OUTAGE_S - 5, interval_s=0.25)
            assert body is not None and "redis unreachable" in body["problems"], body
            assert metric(worker, "backoffice_redis_up") == 0
            errors = metric(worker, "backoffice_redis_write_errors_total")
            assert errors is not None and errors > 0
            while time.monotonic() - down_at < OUTAGE_S:
                assert_alive(worker)
                time.sleep(1.0)
            status, body = health(worker)
            assert status == 503 and "redis unreachable" in body["problems"], (status, body)
            assert (metric(worker, "backoffice_redis_write_errors_total") or 0) > errors
            assert_alive(worker)

            server.start()  # same port, same directory: the AOF brings back what was acked
            assert history_total(r, keys) >= written
            streaming.finish()
            publish(settings, as_published(after))
            assert_exact(r, log)
            wait_until(lambda: health(worker)[0] == 200, timeout_s=30)
            assert metric(worker, "backoffice_redis_up") == 1
            assert_alive(worker)
        finally:
            worker.stop()
            r.close()


def newest_windows(r: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    """Every ``kpi:{name}:{window}:{scope}`` hash, less ``updated_at``."""
    out = {}
    for key in r.scan_iter(match="kpi:*"):
        if key.count(b":") == 3 and key != b"kpi:catalog" and not key.startswith(b"kpi:_"):
            fields = r.hgetall(key)
            fields.pop(b"updated_at", None)
            out[key] = fields
    return out


@pytest.mark.timeout(300)
def test_redis_restarted_empty_gets_catalog_newest_windows_and_new_history(
    kpi_env: Settings, tmp_path: Path
) -> None:
    # A Redis without persistence, restarted: every key is gone while the worker runs on.
    with redis_server(tmp_path / "redis", persistent=False) as server:
        settings = kpi_env.model_copy(update={"redis_url": server.url})
        log = live_log(settings, seed=203, n_events=2000, days=4)
        before, after = (
            log.messages[: len(log.messages) // 2],
            log.messages[len(log.messages) // 2 :],
        )
        r = server.client()
        worker = Worker(settings, tmp_path / "worker.log").start()
        try:
            publish(settings, as_published(before))
            wait_caught_up(settings)
            wait_until(lambda: history_total(r, log.history_keys) > 0, timeout_s=30)
            catalog = r.hgetall("kpi:catalog")
            newest = newest_windows(r)
            assert catalog and newest

            server.kill()
            server.start()  # same port, nothing kept
            wait_until(lambda: r.hgetall("kpi:catalog") == catalog, timeout_s=30)
            wait_until(lambda: newest_windows(r) == newest, timeout_s=30)
            wait_until(lambda: r.exists("kpi:_progress"), timeout_s=30)
            assert metric(worker, "backoffice_redis_data_lost_total") == 1

            lost = history_total(r, log.history_keys)
            publish(settings, as_published(after))
            wait_caught_up(settings)
            wait_until(lambda: history_total(r, log.history_keys) > lost, timeout_s=30)
            assert_alive(worker)
            assert metric(worker, "backoffice_redis_data_lost_total") == 1
        finally:
            worker.stop()
            r.close()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_kafka_broker_restart_then_exact_results(tmp_path: Path) -> None:
    with dedicated_stack(tmp_path / "stack") as stack:
        settings = worker_settings(stack)
        log = live_log(settings, seed=303, n_events=3000, days=4)
        half = len(log.messages) // 2
        r = redis.Redis.from_url(settings.redis_url)
        worker = Worker(settings, tmp_path / "worker.log").start()
        try:
            publish(settings, as_published(log.messages[:half]))
            # Mid-stream: the worker has started on the first half, then the broker goes.
            wait_until(lambda: events_processed(worker) > 0, timeout_s=90, interval_s=0.05)
            stop_kafka(stack)
            down_at = time.monotonic()
            while time.monotonic() - down_at < 20:
                assert_alive(worker)
                time.sleep(1.0)
            start_kafka(stack)
            assert_alive(worker)
            publish(settings, as_published(log.messages[half:]))
            assert_exact(r, log, timeout_s=240)
            assert_alive(worker)
            wait_until(lambda: health(worker)[0] == 200, timeout_s=30)
        finally:
            worker.stop()
            r.close()


@pytest.mark.timeout(300)
def test_stalled_worker_is_reported_unhealthy(kpi_env: Settings, tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis", persistent=False) as server:
        settings = kpi_env.model_copy(update={"redis_url": server.url})
        log = live_log(settings, seed=404, n_events=1500, days=3)
        first, second, rest = split_tenths(log.messages, 4, 7)
        r = server.client()
        worker = EnvWorker(settings, tmp_path / "worker.log", {"KPI_STALL_SECONDS": "5"}).start()
        try:
            publish(settings, as_published(first))
            wait_caught_up(settings)
            # Idle without lag for longer than the stall limit is healthy.
            time.sleep(7)
            status, body = health(worker)
            assert status == 200, body

            server.pause()  # Redis accepts connections and never answers
            publish(settings, as_published(second))

            def stalled() -> dict[str, Any] | None:
                status, body = health(worker)
                problems = body.get("problems") or []
                return body if status == 503 and any("stalled" in p for p in problems) else None

            wait_until(stalled, timeout_s=30, interval_s=0.25)
            assert_alive(worker)
            # The log says it once, with what each loop waits for: here the Redis write.
            time.sleep(3)
            reports = [line for line in worker.log().splitlines() if "stalled:" in line]
            assert len(reports) == 1, reports
            assert "writes: writing Redis for" in reports[0], reports[0]
            assert "input: waiting for the previous batch's writes" in reports[0], reports[0]

            server.resume()
            wait_until(lambda: health(worker)[0] == 200, timeout_s=60)
            publish(settings, as_published(rest))
            assert_exact(r, log)
            assert health(worker)[0] == 200
        finally:
            if server.paused:
                server.resume()
            worker.stop()
            r.close()
