"""``/livez`` and ``/readyz``: the checks' rules, and the worker's parts feeding them."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from streams import engine_build, kafka
from streams.app import WorkerParts, create_app, package_version, worker_liveness
from streams.config import Settings
from streams.probes import liveness, readiness

STALL = "stalled: 3 messages waiting, no batch completed for 70 s"


def live(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "heartbeat_age_s": 0.5,
        "heartbeat_max_s": 60.0,
        "stall": None,
        "redis_healthy": True,
        "kafka_error": None,
    }
    args.update(overrides)
    return liveness(**args).body()  # type: ignore[arg-type]


def ready(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "rejoining": False,
        "unrestored": 0,
        "lag": 0,
        "max_lag": 100,
        "redis_error": None,
        "kafka_error": None,
    }
    args.update(overrides)
    return readiness(**args).body()  # type: ignore[arg-type]


# -- liveness -------------------------------------------------------------------------


def test_a_running_worker_with_no_stall_is_alive() -> None:
    body = live()
    assert body["status"] == "ok" and body["failed"] == []
    assert set(body["checks"]) == {"event_loop", "progress"}  # type: ignore[arg-type]


def test_a_heartbeat_older_than_the_limit_fails_the_event_loop_check() -> None:
    assert live(heartbeat_age_s=60.0)["failed"] == []
    body = live(heartbeat_age_s=61.0)
    assert body["failed"] == ["event_loop"]
    assert "61.0 s ago (limit 60 s)" in body["checks"]["event_loop"]["detail"]  # type: ignore[index]


def test_a_stall_of_our_own_fails_liveness() -> None:
    body = live(stall=STALL)
    assert body["status"] == "failed" and body["failed"] == ["progress"]
    assert body["checks"]["progress"]["detail"] == STALL  # type: ignore[index]


@pytest.mark.parametrize(
    ("redis_healthy", "kafka_error", "outage"),
    [
        (False, None, "Redis"),
        (True, "Kafka did not answer in time", "Kafka"),
        (False, "Kafka: connection refused", "Redis and Kafka"),
    ],
)
def test_a_stall_during_an_outage_is_waiting_it_out_not_death(
    redis_healthy: bool, kafka_error: str | None, outage: str
) -> None:
    body = live(stall=STALL, redis_healthy=redis_healthy, kafka_error=kafka_error)
    assert body["status"] == "ok"
    assert body["checks"]["progress"]["detail"] == (  # type: ignore[index]
        f"{STALL}; waiting out the {outage} outage"
    )


def test_an_outage_without_a_stall_is_alive_too() -> None:
    assert live(redis_healthy=False, kafka_error="Kafka: down")["status"] == "ok"


# -- readiness ------------------------------------------------------------------------


def test_restored_caught_up_and_both_answering_is_ready() -> None:
    body = ready()
    assert body["status"] == "ok"
    assert list(body["checks"]) == ["restored", "caught_up", "redis", "kafka"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "failed", "detail"),
    [
        ({"rejoining": True}, "restored", "waiting for the consumer group to assign partitions"),
        ({"unrestored": 3}, "restored", "3 assigned partitions not restored yet"),
        ({"lag": 101}, "caught_up", "101 input messages waiting (limit 100, KPI_READY_MAX_LAG)"),
        ({"redis_error": "Redis: timed out"}, "redis", "Redis: timed out"),
        ({"kafka_error": "Kafka did not answer in time"}, "kafka", "Kafka did not answer in time"),
    ],
)
def test_each_failed_readiness_check_is_named(
    overrides: dict[str, object], failed: str, detail: str
) -> None:
    body = ready(**overrides)
    assert body["status"] == "failed" and body["failed"] == [failed]
    assert body["checks"][failed] == {"ok": False, "detail": detail}  # type: ignore[index]


def test_a_lag_at_the_limit_is_caught_up() -> None:
    assert ready(lag=100)["failed"] == []


def test_several_failures_are_all_named() -> None:
    body = ready(rejoining=True, redis_error="Redis: x", kafka_error="Kafka: y")
    assert body["failed"] == ["restored", "redis", "kafka"]


# -- the worker's parts ---------------------------------------------------------------


def worker(registry: CollectorRegistry | None = None) -> WorkerParts:
    settings = Settings(topic_prefix="t.", stall_seconds=5)
    counts = {t: 2 for t in settings.input_topics} | {settings.dead_letter_topic: 2}
    _app, parts = create_app(settings, counts, registry)
    return parts


def test_the_worker_stalled_by_a_redis_outage_stays_alive() -> None:
    w = worker()
    settings = Settings(stall_seconds=5)
    w.member.assign([TopicPartition("t.incidents", 1)])
    # Work waiting (a partition to restore) and no progress for longer than the limit.
    w.checkpoint.stats.last_input_at -= 10
    w.watchdog._settled_at -= 10
    assert w.watchdog.stall() is not None
    assert worker_liveness(w, settings).body()["failed"] == ["progress"]
    w.redis._healthy = False  # as after a failed call
    verdict = worker_liveness(w, settings)
    assert verdict.ok, verdict.body()
    assert "waiting out the Redis outage" in verdict.body()["checks"]["progress"]["detail"]


def test_the_heartbeat_ages_until_the_timer_beats() -> None:
    w = worker()
    w.watchdog._beat_at -= 9
    assert worker_liveness(w, Settings(stall_seconds=5)).ok
    # Older than KPI_STALL_SECONDS (5) and than the 10 s the limit never goes below.
    w.watchdog._beat_at -= 11
    assert w.watchdog.heartbeat_age() >= 11
    assert worker_liveness(w, Settings(stall_seconds=5)).body()["failed"] == ["event_loop"]
    w.watchdog.beat()
    assert w.watchdog.heartbeat_age() < 1


async def test_kafka_is_not_reachable_before_the_consumer_starts() -> None:
    w = worker()
    assert await w.member.check_kafka(0.1) == "the Kafka consumer is not started yet"


# -- process metrics --------------------------------------------------------------------


def test_process_gc_platform_and_build_info_are_on_the_worker_registry() -> None:
    registry = CollectorRegistry()
    worker(registry)
    text = generate_latest(registry).decode()
    for family in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "python_gc_objects_collected_total",
        "python_info",
        "backoffice_stalled",
    ):
        assert f"\n{family}" in text, family
    python = ".".join(str(p) for p in __import__("sys").version_info[:3])
    labels = {"version": package_version(), "python": python, "engine": engine_build.current()}
    assert registry.get_sample_value("backoffice_build_info", labels) == 1
    assert package_version() not in ("", "0+unknown")  # the tests run installed (-e)
    assert registry.get_sample_value("process_resident_memory_bytes", {}) > 1e6  # type: ignore[operator]
    assert time.time() - registry.get_sample_value("process_start_time_seconds", {}) > 0  # type: ignore[operator]


async def test_the_stall_watchdog_sets_the_stalled_gauge() -> None:
    registry = CollectorRegistry()
    w = worker(registry)
    await w.watchdog.watch()
    assert registry.get_sample_value("backoffice_stalled", {}) == 0
    w.member.assign([TopicPartition("t.hiring", 0)])
    w.checkpoint.stats.last_input_at -= 10
    w.watchdog._settled_at -= 10
    await w.watchdog.watch()
    assert registry.get_sample_value("backoffice_stalled", {}) == 1


def test_a_restore_that_keeps_reading_is_no_stall() -> None:
    # A large state restores for longer than KPI_STALL_SECONDS: while the restore reads
    # changelog records, /livez must not have Kubernetes restart the pod (and restore again).
    w = worker()
    w.member.assign([TopicPartition("t.incidents", 1)])
    w.checkpoint.stats.last_input_at -= 10
    w.watchdog._settled_at -= 10
    assert w.watchdog.stall() is not None
    w.runtime._restorer._progressed()  # the restore read a batch of records just now
    assert w.watchdog.stall() is None
    assert worker_liveness(w, Settings(stall_seconds=5)).ok


class _Reader:
    """A ``pairs`` reader that hands out one partition's (key, value) records in twos."""

    def __init__(self, records: list[tuple[bytes, bytes]]) -> None:
        self._records = records
        self._position = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, tps: list[TopicPartition]) -> None: ...

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, len(self._records))

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._position = offset

    async def position(self, tp: TopicPartition) -> int:
        return self._position

    async def getmany(self, *tps: TopicPartition, **_: object) -> dict[TopicPartition, list[Any]]:
        batch = self._records[self._position : self._position + 2]
        self._position += len(batch)
        return {tps[0]: batch} if batch else {}


async def test_reading_partitions_reports_each_fetch_that_brought_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [(b"k%d" % i, b"v%d" % i) for i in range(5)]

    def make_reader(_settings: Settings, *, pairs: bool = False) -> _Reader:
        assert pairs
        return _Reader(records)

    monkeypatch.setattr(kafka, "make_reader", make_reader)
    tp = TopicPartition("t.kpi-changelog", 0)
    calls = []
    out = await kafka.read_partitions(Settings(), [tp], on_records=lambda: calls.append(1))
    assert out[tp] == records
    assert len(calls) == 3  # batches of 2, 2 and 1
