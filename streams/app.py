"""The Faust application: the worker's services, timers and web endpoints.

faust runs the worker (service tree, signals, logging, the web server, timers). Its Kafka
consumer and stream path are switched off: the input is consumed by ``InputConsumer``
(``streams/consumer.py``), which hands whole fetches to ``Runtime.handle``. Its windowed
tables are not used (they close windows by wall clock and forget pending expiry on restart),
nor its exactly-once mode (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.app.base import BootStrategy
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams import engine_build
from streams.config import Settings
from streams.consumer import InputConsumer
from streams.core.windows import rfc3339
from streams.runtime import Runtime
from streams.sinks.metrics import Metrics
from streams.sinks.redis_sink import RedisSink, format_value

log = logging.getLogger(__name__)


class WorkerBoot(BootStrategy):
    """faust's services minus its Kafka clients: ``InputConsumer`` owns the Kafka traffic."""

    enable_kafka = False


class WorkerApp(faust.App):
    """The faust app of a worker (see ``WorkerBoot``)."""

    BootStrategy = WorkerBoot


def broker_urls(bootstrap: str) -> list[str]:
    """``host:port,host:port`` -> faust broker URLs."""
    return [f"kafka://{hp.strip()}" for hp in bootstrap.split(",") if hp.strip()]


def create_app(
    settings: Settings, registry: CollectorRegistry | None = None
) -> tuple[Any, Runtime]:
    """Build the faust app and the runtime it drives."""
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
        web_in_thread=False,
        autodiscover=False,
        topic_disable_leader=True,
        logging_config=None,
    )
    metrics = Metrics(registry)

    def redis_failed(exc: Exception) -> None:
        metrics.redis_errors.inc()
        metrics.redis_up.set(0)

    sink = RedisSink(
        settings.redis_url, on_error=redis_failed, on_ok=lambda: metrics.redis_up.set(1)
    )
    runtime = Runtime(settings, metrics, sink)
    # faust starts an instance as given (its annotation only names classes).
    app.service(InputConsumer(settings, runtime))  # type: ignore[arg-type]

    # Windows also close without input of our own: other workers' partitions advance
    # through the replicas, and idle partitions drop out by the wall clock.
    tick_s = (
        min(1.0, settings.idle_partition_seconds / 4) if settings.idle_partition_seconds else 1.0
    )

    @app.timer(max(0.25, tick_s))  # type: ignore[untyped-decorator]
    async def close_without_input() -> None:
        await runtime.tick()

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def watch_for_stalls() -> None:
        await runtime.watch()

    @app.task  # type: ignore[untyped-decorator]
    async def follow_changelogs() -> None:
        await runtime.replicate()

    # faust's Prometheus sensors are not installed: they count its stream path and Kafka
    # clients, which the worker does not use (all ~25 faust_* families stayed at zero).
    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # As a header: aiohttp refuses a content_type argument with a charset in it.
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        return web.bytes(generate_latest(registry), headers=headers)

    @app.page("/kpis")
    async def kpis(web: Any, request: Any) -> Any:
        values = [
            {
                "name": wv.kpi,
                "window": wv.window,
                "scope": wv.scope,
                "value": wv.value,
                "value_text": format_value(wv.value),
                "window_start": rfc3339(wv.start),
                "window_end": rfc3339(wv.end),
                "count": wv.count,
                "final": wv.final,
            }
            for _key, wv in sorted(runtime.current.items())
        ]
        return web.bytes(orjson.dumps({"kpis": values}), content_type="application/json")

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        body = runtime_health(runtime)
        status = 200 if body["status"] == "ok" else 503
        return web.bytes(orjson.dumps(body), content_type="application/json", status=status)

    return app, runtime


def runtime_health(runtime: Runtime) -> dict[str, Any]:
    """Health of the worker: Redis reachable, and not stalled (lag but no progress)."""
    problems = []
    if not runtime.sink.healthy:
        problems.append("redis unreachable")
    now = time.time()
    lag = runtime.lag()
    stall = runtime.stall()
    if stall is not None:
        problems.append(stall)
    engine = runtime.engine
    return {
        "status": "ok" if not problems else "unhealthy",
        "problems": problems,
        "events_processed": runtime.events_processed,
        "lag": lag,
        "partitions": sorted(f"{t}-{p}" for t, p in engine.held()) if engine else [],
        "assigned": sorted(f"{t}-{p}" for t, p in runtime.assigned_inputs()),
        "leading": sorted(engine.leading()) if engine else [],
        "engine": engine_build.current(),
        "seconds_since_last_batch": now - runtime.last_batch_at if runtime.last_batch_at else None,
    }
