"""Dead letters carry their key, and ``kpi dlq`` replays them once the cause is fixed.

Real Kafka and Redis, the worker and ``kpi dlq`` as subprocesses (T0 = 2026-01-01T00:00Z):
  invoices/0: an approval of inv-a (T0+40m) before inv-a's receipt   -> unknown_entity
              then inv-a received (T0+20m, USD)                      -> the source is fixed
  invoices/1: eur-1 received in EUR without reporting_amount         -> currency (the worker
              runs with KPI_CURRENCY=USD; the fix: KPI_CURRENCY=EUR, the company's own)
  invoices/2: garbage without a key                                   -> invalid_json, key null
  hiring/0:   a survey at T0+5h, then one at T0+1h                    -> late
Replays: the approval (applied: one processing time of 1200 s), then the EUR invoice after
the worker restarts with KPI_CURRENCY=EUR (applied once), the late survey (late again); a
second replay of the first two sends nothing.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.config import Settings
from streams.kafka import client_options, seek_to_start
from tests.cli import interruptible, run_kpi_in
from tests.integration.helpers import REPO, Worker, process_env, wait_until
from tests.integration.test_worker_invoices import T0, M, decided, received, ts

H = 3600


def survey(eid: str, t: float) -> dict[str, Any]:
    return {
        "event_id": eid,
        "type": "survey.submitted",
        "occurred_at": ts(t),
        "response_id": eid,
        "department": "hr",
        "score": 8,
    }


def publish_keyed(settings: Settings, messages: list[tuple[str, int, bytes | None, Any]]) -> None:
    """Send (logical topic, partition, key, payload) in order, acks=all."""

    async def run() -> None:
        producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for topic, partition, key, payload in messages:
                raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                await producer.send(settings.topic(topic), raw, key=key, partition=partition)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


def read_keyed(settings: Settings, topic: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    """(message key, decoded value) of every message of a (prefixed) topic now."""

    async def run() -> list[tuple[bytes | None, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
        await consumer.start()
        try:
            cluster = await consumer._client.fetch_all_metadata()
            tps = [TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()]
            if not tps:
                return []
            consumer.assign(tps)
            await seek_to_start(consumer, tps)
            ends = await consumer.end_offsets(tps)
            out = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    break
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend((r.key, orjson.loads(r.value)) for r in records)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(run())


def current(r: redis.Redis, key: str) -> tuple[float | None, int | None]:
    """A KPI hash's value and count (None, None before it exists)."""
    found = r.hgetall(key)
    if not found:
        return None, None
    value = found[b"value"]
    return (float(value) if value else None), int(found[b"count"])


def dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = run_kpi_in(env, "dlq", *args, timeout=90)
    assert done.returncode == 0, done.stderr
    return done


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip().splitlines()[-1]


def test_dead_letters_are_replayed_once_the_cause_is_fixed(
    kpi_env: Settings, tmp_path: Path
) -> None:
    env = process_env(kpi_env)
    r = redis.Redis.from_url(kpi_env.redis_url)
    worker = Worker(kpi_env, tmp_path / "worker-usd.log").start()
    try:
        publish_keyed(
            kpi_env,
            [
                ("invoices", 0, b"inv-a", decided("a2", "inv-a", T0 + 40 * M)),
                ("invoices", 1, b"eur-1", received("e1", "eur-1", T0 + 30 * M, "eu", "EUR")),
                ("invoices", 2, None, b"{not json"),
                ("hiring", 0, b"s1", survey("s1", T0 + 5 * H)),
                ("hiring", 0, b"s2", survey("s2", T0 + 1 * H)),
            ],
        )

        def four_dead_letters() -> list[tuple[bytes | None, dict[str, Any]]]:
            found = read_keyed(kpi_env, kpi_env.dead_letter_topic)
            return found if len(found) >= 4 else []

        letters = wait_until(four_dead_letters, timeout_s=60)
        by_reason = {v["reason"]: (k, v) for k, v in letters}
        assert sorted(by_reason) == ["currency", "invalid_json", "late", "unknown_entity"]
        # The original key, in the record and as the dead letter's own message key.
        for reason, key in (("unknown_entity", b"inv-a"), ("currency", b"eur-1"), ("late", b"s2")):
            message_key, record = by_reason[reason]
            assert (message_key, record["key"]) == (key, key.decode()), reason
        assert by_reason["invalid_json"][0] is None
        assert by_reason["invalid_json"][1]["key"] is None

        # The source system sends the missing receipt; the approval is replayed and applied.
        publish_keyed(
            kpi_env, [("invoices", 0, b"inv-a", received("a1", "inv-a", T0 + 20 * M, "ap"))]
        )
        dry = dlq(env, "replay", "--reason", "unknown_entity", "--dry-run")
        assert last_line(dry).startswith(
            "dry run: would replay 1 dead letter (unknown_entity: 1; to"
        )
        assert "key=inv-a" in dry.stdout
        done = dlq(env, "replay", "--reason", "unknown_entity")
        assert last_line(done) == (
            f"replayed 1 dead letter (unknown_entity: 1; to {kpi_env.topic('invoices')}: 1),"
            " 0 already replayed, 3 not selected"
        )
        wait_until(
            lambda: current(r, "kpi:invoice_processing_time:1d:ap") == (1200.0, 1),
            timeout_s=30,
        )
    finally:
        worker.stop()

    # The setting is fixed: the company reports in EUR. The same application restarts.
    fixed = {**env, "KPI_CURRENCY": "EUR"}
    worker = Worker(kpi_env, tmp_path / "worker-eur.log", env=fixed).start()
    try:
        nothing = dlq(fixed, "replay", "--reason", "currency", "--until", "2000-01-01")
        assert last_line(nothing) == (
            "replayed 0 dead letters (nothing new), 0 already replayed, 4 not selected"
        )
        done = dlq(fixed, "replay", "--reason", "currency", "--topic", "invoices")
        assert last_line(done) == (
            f"replayed 1 dead letter (currency: 1; to {kpi_env.topic('invoices')}: 1),"
            " 0 already replayed, 3 not selected"
        )
        wait_until(lambda: current(r, "kpi:ap_turnover:1d:eu")[1] == 1, timeout_s=30)

        # A late event is still late: dead-lettered again, counted once more.
        done = dlq(fixed, "replay", "--reason", "late")
        assert last_line(done).startswith("replayed 1 dead letter (late: 1;")

        def late_twice() -> dict[str, Any] | None:
            stats = orjson.loads(dlq(fixed, "stats", "--json").stdout)
            return stats if stats["by_reason"].get("late") == 2 else None

        stats = wait_until(late_twice, timeout_s=30)
        assert stats["by_reason"] == {
            "currency": 1,
            "invalid_json": 1,
            "late": 2,
            "unknown_entity": 1,
        }
        # A second run sends nothing it sent before.
        again = dlq(fixed, "replay", "--reason", "currency", "--reason", "unknown_entity")
        assert last_line(again) == (
            "replayed 0 dead letters (nothing new), 2 already replayed, 3 not selected"
        )
        # What is left: the garbage. The late copy's dead letter (a dead letter of the replay)
        # is not sent again: it would only be late again, run after run.
        left = orjson.loads(dlq(fixed, "replay", "--dry-run", "--json").stdout)
        assert (left["replayed"], left["by_reason"]) == (1, {"invalid_json": 1})
        assert (left["already_replayed"], left["dead_lettered_again"]) == (4, 1)
        late_again = dlq(fixed, "replay", "--reason", "late")
        assert last_line(late_again) == (
            "replayed 0 dead letters (nothing new), 2 already replayed (1 of them"
            " dead-lettered again after the replay), 3 not selected"
        )
        # Counted once: the approval's duration and the EUR receipt, after every replay.
        time.sleep(2)
        assert current(r, "kpi:invoice_processing_time:1d:ap") == (1200.0, 1)
        assert current(r, "kpi:ap_turnover:1d:eu")[1] == 1
    finally:
        worker.stop()

    # The ledger is a compacted topic keyed by the original message's position.
    ledger = read_keyed(kpi_env, kpi_env.replayed_topic)
    assert sorted(k.decode() for k, _v in ledger if k) == sorted(
        [
            f"{kpi_env.topic('invoices')}:0:0",
            f"{kpi_env.topic('invoices')}:1:0",
            f"{kpi_env.topic('hiring')}:0:1",
        ]
    )


def test_tail_prints_dead_letters_as_they_arrive_until_interrupted(
    kpi_env: Settings, tmp_path: Path
) -> None:
    env = process_env(kpi_env)
    worker = Worker(kpi_env, tmp_path / "worker.log").start()
    guard = threading.Timer(120, lambda: tail.kill())  # a hung read fails, not hangs
    tail = subprocess.Popen(
        [sys.executable, "-m", "kpi", "dlq", "tail", "--json", "--reason", "unknown_entity"],
        cwd=REPO,
        env=env,
        preexec_fn=interruptible,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    guard.start()
    try:
        # Positioned at the end (it says so on stderr): what arrives from now on.
        assert tail.stderr is not None
        assert "from now on" in tail.stderr.readline()
        publish_keyed(
            kpi_env,
            [
                ("invoices", 0, None, b"{garbage"),
                ("invoices", 1, b"inv-z", decided("z2", "inv-z", T0 + 40 * M)),
            ],
        )
        assert tail.stdout is not None
        line = tail.stdout.readline()
        shown = orjson.loads(line)
        assert (shown["reason"], shown["key"], shown["partition"]) == ("unknown_entity", "inv-z", 1)
        tail.send_signal(signal.SIGINT)
        assert tail.wait(30) == 130
        assert tail.stdout.read() == ""
    finally:
        guard.cancel()
        if tail.poll() is None:
            tail.kill()
        worker.stop()
