"""The Faust application: the worker's parts, put together once, its services and web pages.

faust runs the worker (service tree, signals, logging, the web server). Its Kafka consumer
and stream path are switched off: the input is consumed by ``InputConsumer``
(``streams/consumer.py``), which hands whole fetches to ``Runtime.handle``. Its windowed
tables are not used (they close windows by wall clock and forget pending expiry on restart),
nor its exactly-once mode (see docs/ARCHITECTURE.md).

``create_app`` is the one place the parts are made and wired: each gets what it uses, and
each service is started and stopped by ``WorkerServices``.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.app.base import BootStrategy
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams import engine_build
from streams.changelog import ChangelogWriter
from streams.checkpoint import Checkpoint
from streams.config import INPUT_TOPICS, Settings, bearer_allowed, shown_url
from streams.consumer import GroupMember, InputConsumer
from streams.core.engine import Engine
from streams.core.records import WindowValue
from streams.core.windows import rfc3339
from streams.dead_letters import DeadLetters
from streams.follower import ReplicaFollower
from streams.kafka import Producer, make_output_producer
from streams.probes import Verdict, liveness, readiness
from streams.progress import ProgressStore
from streams.redis_client import RedisConnection
from streams.redis_keys import RedisKeys
from streams.restore import Restorer
from streams.runtime import Runtime
from streams.selection import selected_catalog
from streams.sinks import make_sinks
from streams.sinks.metrics import Metrics, register_process_metrics
from streams.sinks.redis_sink import distribution_fields, format_value
from streams.targets import configured_catalog
from streams.watchdog import Steps, Watchdog

log = logging.getLogger(__name__)

#: How long ``/readyz`` waits for Redis's and Kafka's answers (a probe's own timeout is
#: 1 s by default in Kubernetes: set ``timeoutSeconds`` above this, docs/OPERATIONS.md).
PROBE_TIMEOUT_S = 2.0
#: ``/livez`` fails when the 1 s heartbeat timer has not run for KPI_STALL_SECONDS, and at
#: least this long: a busy loop (a large batch, a garbage collection) is not a dead one.
HEARTBEAT_MIN_S = 10.0


class WorkerBoot(BootStrategy):
    """faust's services minus its Kafka clients: ``InputConsumer`` owns the Kafka traffic."""

    enable_kafka = False


class WorkerApp(faust.App):
    """The faust app of a worker (see ``WorkerBoot``)."""

    BootStrategy = WorkerBoot


def broker_urls(bootstrap: str) -> list[str]:
    """``host:port,host:port`` -> faust broker URLs."""
    return [f"kafka://{hp.strip()}" for hp in bootstrap.split(",") if hp.strip()]


def make_engine(settings: Settings, partitions: Mapping[str, int]) -> Engine:
    """The engine for the topics' partition counts (``partitions``: by real topic name)."""
    return Engine(
        partitions={t: partitions[settings.topic(t)] for t in INPUT_TOPICS},
        grace_s=settings.grace_seconds,
        currency=settings.currency,
        clock=time.time,
        catalog=selected_catalog(settings),
        max_dimension_values=settings.max_dimension_values,
        idle_partition_s=settings.idle_partition_seconds,
        timezone=settings.timezone,
        fiscal_year_start=settings.fiscal_year_start,
    )


@dataclass(frozen=True)
class WorkerParts:
    """The parts of a worker that its pages and timers look at."""

    engine: Engine
    runtime: Runtime
    member: GroupMember
    checkpoint: Checkpoint
    watchdog: Watchdog
    redis: RedisConnection


class WorkerServices(Service):
    """The worker's services and timers.

    Started in order, stopped in reverse: the producer, the group member (the input
    consumer's client), the checkpoint (the sinks), the replica follower, the input
    consumer. So the input stops first, drains the writes and commits, and the clients
    the writes need stop after it; the Redis connection closes last.
    """

    def __init__(
        self,
        worker: WorkerParts,
        services: Sequence[Service],
        settings: Settings,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._worker = worker
        self._services = services
        self._settings = settings
        # Windows also close without input of our own: other workers' partitions advance
        # through the replicas, and idle partitions drop out by the wall clock.
        idle_s = settings.idle_partition_seconds
        self._tick_s = max(0.25, min(1.0, idle_s / 4) if idle_s else 1.0)

    def on_init_dependencies(self) -> Sequence[Service]:
        """The services, in start order."""
        return self._services

    async def on_started(self) -> None:
        """Say what runs."""
        settings = self._settings
        log.info(
            "backoffice-kpi worker %s: inputs %s, Redis %s, http://localhost:%d/metrics, engine %s",
            settings.app_id,
            ", ".join(settings.input_topics),
            shown_url(settings.redis_url),
            settings.web_port,
            "compiled (mypyc)" if engine_build.current() == "compiled" else "pure Python",
        )

    async def on_shutdown(self) -> None:
        """Close the Redis connection, once everything that writes to it has stopped."""
        await self._worker.redis.close()

    @Service.task
    async def _close_without_input(self) -> None:
        async for _ in self.itertimer(self._tick_s, name="close_without_input"):
            # Not right after a batch (it did the same work), nor much later than one tick.
            await self._worker.runtime.tick(quiet_s=self._tick_s / 2)

    @Service.task
    async def _heartbeat(self) -> None:
        # /livez: the event loop still runs the worker's timers.
        async for _ in self.itertimer(1.0, name="heartbeat"):
            self._worker.watchdog.beat()

    @Service.task
    async def _watch_for_stalls(self) -> None:
        async for _ in self.itertimer(1.0, name="watch_for_stalls"):
            await self._worker.watchdog.watch()


def create_app(
    settings: Settings, partitions: Mapping[str, int], registry: CollectorRegistry | None = None
) -> tuple[Any, WorkerParts]:
    """Build the faust app and the worker it runs (``partitions``: every topic's count)."""
    registry = registry or CollectorRegistry()
    # faust wants a data directory even with in-memory stores; keep it out of the cwd.
    datadir = Path(tempfile.gettempdir()) / "backoffice-kpi" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        settings.app_id,
        broker=broker_urls(settings.kafka_bootstrap),
        store="memory://",
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_in_thread=False,
        autodiscover=False,
        topic_disable_leader=True,
        logging_config=None,
    )
    metrics = Metrics(registry, configured_catalog(settings))
    register_process_metrics(
        registry,
        version=package_version(),
        python=platform.python_version(),
        engine=engine_build.current(),
    )
    steps = Steps()

    def redis_failed(exc: Exception) -> None:
        metrics.redis_errors.inc()
        metrics.redis_up.set(0)

    redis = RedisConnection(
        settings.redis_url,
        on_error=redis_failed,
        on_ok=lambda: metrics.redis_up.set(1),
        **settings.redis_options(),
    )
    progress = ProgressStore(redis, RedisKeys(settings.redis_prefix))
    engine = make_engine(settings, partitions)
    lock = asyncio.Lock()
    producer = Producer(lambda: make_output_producer(settings))
    member = GroupMember(settings, metrics, steps)
    dead_letters = DeadLetters(settings, producer, engine, partitions[settings.dead_letter_topic])
    checkpoint = Checkpoint(
        dead_letters=dead_letters,
        sinks=make_sinks(settings, metrics, redis, progress),
        changelog=ChangelogWriter(settings, producer),
        progress=progress,
        offsets=member,
        metrics=metrics,
        steps=steps,
    )
    replicas = ReplicaFollower(settings, engine, lock, steps)
    restorer = Restorer(settings, dead_letters)
    runtime = Runtime(
        settings,
        engine,
        lock=lock,
        assignment=member,
        restorer=restorer,
        checkpoint=checkpoint,
        progress=progress,
        replicas=replicas,
        metrics=metrics,
        steps=steps,
    )
    watchdog = Watchdog(
        member,
        runtime,
        # Input batches completed, or changelog records read by a restore under way.
        lambda: max(checkpoint.stats.last_input_at, restorer.progress_at),
        steps,
        settings.stall_seconds,
        runtime.logical,
        on_verdict=lambda stalled: metrics.stalled.set(1 if stalled else 0),
    )
    worker = WorkerParts(engine, runtime, member, checkpoint, watchdog, redis)
    services = [
        producer,
        member,
        checkpoint,
        replicas,
        InputConsumer(settings, member, runtime, steps),
    ]
    # faust starts an instance as given (its annotation only names classes).
    app.service(WorkerServices(worker, services, settings))  # type: ignore[arg-type]

    web_token = settings.web_token.get_secret_value()

    # faust's Prometheus sensors are not installed: they count its stream path and Kafka
    # clients, which the worker does not use (all ~25 faust_* families stayed at zero).
    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # As a header: aiohttp refuses a content_type argument with a charset in it.
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        return web.bytes(generate_latest(registry), headers=headers)

    @app.page("/kpis")
    async def kpis(web: Any, request: Any) -> Any:
        # The company's KPIs are not for anyone who can reach the port (KPI_WEB_TOKEN).
        if not bearer_allowed(request.headers.get("Authorization"), web_token):
            body = orjson.dumps({"error": "unauthorized: send Authorization: Bearer <token>"})
            headers = {"WWW-Authenticate": "Bearer"}
            return web.bytes(body, content_type="application/json", status=401, headers=headers)
        values = [kpi_json(wv) for _key, wv in sorted(runtime.current.items())]
        return web.bytes(orjson.dumps({"kpis": values}), content_type="application/json")

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        body = worker_health(worker)
        status = 200 if body["status"] == "ok" else 503
        return web.bytes(orjson.dumps(body), content_type="application/json", status=status)

    # How much state the worker holds (counts only, no value): open like /health.
    @app.page("/state")
    async def state(web: Any, request: Any) -> Any:
        body = {"events_processed": worker.checkpoint.stats.events, **engine.state_sizes()}
        return web.bytes(orjson.dumps(body), content_type="application/json")

    # The probes, open like /health (SPEC section 5): they show no value and no secret.
    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        verdict = worker_liveness(worker, settings)
        body = orjson.dumps(verdict.body())
        return web.bytes(body, content_type="application/json", status=verdict.status)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        verdict = await worker_readiness(worker, settings)
        body = orjson.dumps(verdict.body())
        return web.bytes(body, content_type="application/json", status=verdict.status)

    return app, worker


def package_version() -> str:
    """The installed package's version (``0+unknown`` when run from an uninstalled tree)."""
    try:
        return version("backoffice-kpi")
    except PackageNotFoundError:
        return "0+unknown"


def worker_liveness(worker: WorkerParts, settings: Settings) -> Verdict:
    """``/livez`` (``streams/probes.py``): a recent heartbeat, and no stall of our own."""
    return liveness(
        heartbeat_age_s=worker.watchdog.heartbeat_age(),
        heartbeat_max_s=max(settings.stall_seconds, HEARTBEAT_MIN_S),
        stall=worker.watchdog.stall(),
        redis_healthy=worker.redis.healthy,
        kafka_error=worker.member.kafka_error,
    )


async def worker_readiness(worker: WorkerParts, settings: Settings) -> Verdict:
    """``/readyz``: restored and caught up, and Redis and Kafka answer now (both asked at once)."""
    redis_error, kafka_error = await asyncio.gather(
        worker.redis.ping(PROBE_TIMEOUT_S), worker.member.check_kafka(PROBE_TIMEOUT_S)
    )
    return readiness(
        rejoining=worker.member.rejoining,
        unrestored=len(worker.runtime.unrestored()),
        lag=worker.member.lag(),
        max_lag=settings.ready_max_lag,
        redis_error=redis_error,
        kafka_error=kafka_error,
    )


def kpi_json(wv: WindowValue) -> dict[str, Any]:
    """One newest window as ``/kpis`` lists it (docs/CONTRACT.md, section 5).

    A duration KPI's (``worst`` not None) adds ``p50``, ``p90``, ``p99`` (null when
    undefined) and ``worst`` (``[{"id", "seconds"}]``), as its Redis hash does.
    """
    record: dict[str, Any] = {
        "name": wv.kpi,
        "window": wv.window,
        "scope": wv.scope,
        "value": wv.value,
        "value_text": format_value(wv.value),
        "window_start": rfc3339(wv.start),
        "window_end": rfc3339(wv.end),
        "label": wv.label,
        "count": wv.count,
        "final": wv.final,
        **distribution_fields(wv),
    }
    return record


def worker_health(worker: WorkerParts) -> dict[str, Any]:
    """``/health``, kept for compatibility: Redis's last call succeeded, and not stalled.

    It mixes liveness and readiness (a Redis outage makes it 503, as does a stall): for
    Kubernetes use ``/livez`` and ``/readyz`` instead (docs/OPERATIONS.md).
    """
    problems = []
    if not worker.redis.healthy:
        problems.append("redis unreachable")
    now = time.time()
    lag = worker.member.lag()
    stall = worker.watchdog.stall()
    if stall is not None:
        problems.append(stall)
    engine, stats = worker.engine, worker.checkpoint.stats
    return {
        "status": "ok" if not problems else "unhealthy",
        "problems": problems,
        "events_processed": stats.events,
        "lag": lag,
        "partitions": sorted(f"{t}-{p}" for t, p in engine.held()),
        "assigned": sorted(f"{t}-{p}" for t, p in worker.runtime.assigned_inputs()),
        "leading": sorted(engine.leading()),
        "engine": engine_build.current(),
        "seconds_since_last_batch": now - stats.last_batch_at if stats.last_batch_at else None,
    }
