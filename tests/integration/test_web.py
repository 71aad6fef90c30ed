"""The worker's HTTP server: bound to loopback by default, ``/kpis`` behind KPI_WEB_TOKEN.

And the Kubernetes probes on the real stack: ``/readyz`` 503 while the worker restores and
works off a backlog, 200 once caught up, 503 while Redis is down; ``/livez`` 200 all along,
also once the outage has stalled the input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from streams.config import Settings
from tests.eventgen import random_log
from tests.integration.chaos import StreamPublisher, as_published, live_start, redis_server
from tests.integration.helpers import Worker, publish, wait_until

TOKEN = "tok-3f9a1c77"


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            octets = [str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)]
            found.add(".".join(octets))
    return found


def test_kpis_need_the_token_and_the_server_listens_on_loopback_only(
    kpi_env: Settings, tmp_path: Path
) -> None:
    settings = kpi_env.model_copy(update={"web_token": SecretStr(TOKEN)})
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        assert _listening_addresses(settings.web_port) == {"127.0.0.1"}
        url = worker.url("/kpis")
        assert httpx.get(url, timeout=5).status_code == 401
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        ok = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert ok.status_code == 200 and "kpis" in ok.json()
        # Scrapers and probes need no token.
        assert httpx.get(worker.url("/metrics"), timeout=5).status_code == 200
        health = httpx.get(worker.url("/health"), timeout=5)
        assert health.status_code in (200, 503)
        assert TOKEN not in health.text
    finally:
        worker.stop()
    assert TOKEN not in worker.log()


def test_an_open_kpis_page_without_a_token(kpi_env: Settings, tmp_path: Path) -> None:
    worker = Worker(kpi_env, tmp_path / "worker.log").start()
    try:
        assert httpx.get(worker.url("/kpis"), timeout=5).status_code == 200
    finally:
        worker.stop()


def probe(worker: Worker, path: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of a probe; (0, {}) when the worker does not answer."""
    try:
        resp = httpx.get(worker.url(path), timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return resp.status_code, resp.json()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_readyz_follows_restore_backlog_and_redis_while_livez_stays_200(
    kpi_env: Settings, tmp_path: Path
) -> None:
    with redis_server(tmp_path / "redis", persistent=True) as server:
        settings = kpi_env.model_copy(
            update={"redis_url": server.url, "stall_seconds": 3.0, "ready_max_lag": 50}
        )
        partitions = dict.fromkeys(("invoices", "hiring", "incidents"), settings.partitions)
        messages = random_log(
            seed=17, n_events=30_000, days=3, partitions=partitions, start=live_start(3)
        )
        backlog, later = messages[:-3000], messages[-3000:]
        # A first run creates the topics and state; the backlog waits for the second.
        first = Worker(settings, tmp_path / "first.log").start()
        wait_until(lambda: probe(first, "/readyz")[0] == 200, timeout_s=60)
        first.stop()
        publish(settings, as_published(backlog))

        worker = Worker(settings, tmp_path / "worker.log").start()
        try:
            status, body = probe(worker, "/readyz")
            # Just up: restoring its partitions, or working off the backlog.
            assert status == 503, body
            assert set(body["failed"]) & {"restored", "caught_up"}, body
            assert probe(worker, "/livez")[0] == 200
            wait_until(lambda: probe(worker, "/readyz")[0] == 200, timeout_s=120)
            status, body = probe(worker, "/readyz")
            assert body["failed"] == [] and all(c["ok"] for c in body["checks"].values())

            server.kill()
            # Input keeps arriving, so the worker waits with work in hand: a stall.
            streaming = StreamPublisher(settings, later, chunk=100, pause_s=0.3)
            streaming.start()
            excused = False
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                status, body = probe(worker, "/livez")
                assert status == 200, body
                excused |= "waiting out the Redis outage" in body["checks"]["progress"]["detail"]
                time.sleep(0.5)
            assert excused, "the outage never stalled the input: the test proves nothing"
            status, body = probe(worker, "/readyz")
            assert status == 503 and "redis" in body["failed"], body
            assert body["checks"]["redis"]["detail"].startswith("Redis: "), body
            # /health, unchanged, is 503 as well: why it must not be the liveness probe.
            assert probe(worker, "/health")[0] == 503

            server.start()
            streaming.finish()
            wait_until(lambda: probe(worker, "/readyz")[0] == 200, timeout_s=120)
            assert probe(worker, "/livez")[0] == 200
        finally:
            worker.stop()


def test_json_logs_are_one_object_a_line(kpi_env: Settings, tmp_path: Path) -> None:
    settings = kpi_env.model_copy(update={"log_format": "json"})
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: probe(worker, "/readyz")[0] == 200, timeout_s=60)
    finally:
        worker.stop()
    lines = worker.log().splitlines()
    assert len(lines) >= 3, lines
    entries = [orjson.loads(line) for line in lines]  # each line one JSON object
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        assert entry["time"].endswith("Z")
    assert any("backoffice-kpi worker" in e["message"] for e in entries)


def test_state_counts_what_the_worker_holds(kpi_env: Settings, tmp_path: Path) -> None:
    partitions = dict.fromkeys(("invoices", "hiring", "incidents"), kpi_env.partitions)
    messages = random_log(
        seed=5, n_events=3000, days=2, partitions=partitions, start=live_start(2), faults=False
    )
    worker = Worker(kpi_env, tmp_path / "worker.log").start()
    try:
        publish(kpi_env, as_published(messages))

        def processed() -> int:
            return int(httpx.get(worker.url("/health"), timeout=5).json()["events_processed"])

        wait_until(lambda: processed() >= len(messages), timeout_s=120)
        state = httpx.get(worker.url("/state"), timeout=5)
        assert state.status_code == 200
        body = state.json()
        metrics = httpx.get(worker.url("/metrics"), timeout=5).text
    finally:
        worker.stop()
    own = body["own"]
    # One worker owns every input partition and follows no changelog.
    assert own["partitions"] == 3 * kpi_env.partitions
    assert body["replicas"]["partitions"] == 0
    assert body["events_processed"] == len(messages)
    # Every applied event's id is kept for duplicate detection (a 2-day log: none expired).
    applied = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("backoffice_events_in_total{") and 'type="invalid"' not in line
    )
    assert applied > 0 and own["dedup_ids"] == applied
    assert own["entities"] > 0 and own["panes"] > 0 and own["distributions"] > 0
    # Every key is of one kind counted, but for each partition's calendar mark.
    kinds = ("entities", "panes", "distributions", "balances", "timelines", "dimensions")
    assert sum(own[k] for k in kinds) + own["dedup_groups"] == own["keys"] - own["partitions"]
