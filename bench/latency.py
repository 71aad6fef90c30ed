"""Latency at a fixed publish rate: publish time -> value visible in Redis.

The load is the workload's invoice messages with ``occurred_at`` rewritten to the wall clock
when sent (so every event is current, none late), paced at a fixed rate. Alongside, every
``marker_interval_s`` one marker is published to the hiring topic, which carries nothing
else: a ``survey.submitted`` event. Markers start first; the load starts once the first
marker is visible (the worker has joined its group and restored), then a warm-up, then the
measured interval. The k-th marker is visible when the ``count`` of
``kpi:employee_satisfaction:30d:all`` reaches k; the bench polls that hash every 2 ms, so a
marker's latency is the time from just before its ``send()`` to the poll that sees it. The
worker's own histogram ``backoffice_event_to_kpi_latency_seconds`` (Kafka timestamp of each
message to its Redis write) is read before and after the measured interval, and its
quantiles are interpolated within buckets like Prometheus' ``histogram_quantile``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from bench import procs
from bench.config import BenchConfig
from bench.runs import flush_redis, histogram, histogram_quantile, kpi_env, parse_metrics
from bench.workload import Workload, with_occurred_at
from producers.simulator import rfc3339
from streams.config import Settings
from streams.redis_keys import RedisKeys
from streams.topics import create_published_topics

#: The marker's KPI, window and scope: ``<prefix>:employee_satisfaction:30d:all``.
MARKER = ("employee_satisfaction", "30d", "all")
HISTOGRAM = "backoffice_event_to_kpi_latency_seconds"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _invoice_source(workload: Workload) -> Any:
    """Invoice messages forever; each pass after the first gets fresh ids."""
    invoices = [(k, v) for t, k, v in workload.messages if t == "invoices"]
    tag = workload.run_tag
    round_ = 0
    while True:
        if round_ == 0:
            yield from invoices
        else:
            fresh = tag[:-1] + f"r{round_}-".encode()
            for key, value in invoices:
                yield key.replace(tag, fresh), value.replace(tag, fresh)
        round_ += 1


async def measure(
    cfg: BenchConfig,
    settings: Settings,
    workload: Workload,
    rate: float,
    workdir: Path,
    scratch: Path,
) -> dict[str, Any]:
    """Run a fresh worker under ``rate`` events/s and measure (see module docstring)."""
    flush_redis(settings.redis_url)
    await create_published_topics(settings)
    log = workdir / f"{settings.app_id}.log"
    proc = procs.spawn(
        [sys.executable, "-m", "kpi", "worker"],
        env=kpi_env(settings),
        cwd=scratch / settings.app_id,
        log=log,
    )
    base = f"http://127.0.0.1:{settings.web_port}"
    rds = aioredis.from_url(settings.redis_url)
    marker_key = RedisKeys(settings.redis_prefix).newest(*MARKER)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        client_id="kpi-bench-latency",
    )
    marker_rate = 1.0 / cfg.marker_interval_s
    load_rate = max(1.0, rate - marker_rate)
    invoices_topic = settings.topic("invoices")
    hiring_topic = settings.topic("hiring")
    marker_sent: list[float] = []  # publish time of marker k (k = index)
    marker_seen: dict[int, float] = {}
    futures: list[asyncio.Future[Any]] = []
    failures: list[BaseException] = []
    state = {"stop": False, "sent": 0, "count": 0}

    async def health() -> Any:
        return await asyncio.to_thread(procs.http_json, base + "/health", 5.0)

    async def metrics() -> dict[str, list[tuple[str, float]]]:
        body = await asyncio.to_thread(procs.http_get, base + "/metrics", 30.0)
        return parse_metrics((body or b"").decode(errors="replace"))

    async def load() -> None:
        source = _invoice_source(workload)
        began = time.monotonic()
        sent = 0
        while not state["stop"]:
            due = int((time.monotonic() - began) * load_rate)
            if sent < due:
                stamp = rfc3339(time.time()).encode()
                while sent < due:
                    key, value = next(source)
                    futures.append(
                        await producer.send(invoices_topic, with_occurred_at(value, stamp), key=key)
                    )
                    sent += 1
                state["sent"] = sent
            await asyncio.sleep(0.002)

    async def markers() -> None:
        k = 0
        began = time.monotonic()
        while not state["stop"]:
            at = time.time()
            rid = f"bench-marker-{settings.app_id}-{k}"
            payload = {
                "event_id": rid,
                "type": "survey.submitted",
                "occurred_at": rfc3339(at),
                "response_id": rid,
                "department": "finance",
                "score": k % 11,
            }
            marker_sent.append(time.time())
            futures.append(
                await producer.send(hiring_topic, orjson.dumps(payload), key=rid.encode())
            )
            k += 1
            await asyncio.sleep(max(0.0, began + k * cfg.marker_interval_s - time.monotonic()))

    async def watch() -> None:
        while True:
            raw = await rds.hget(marker_key, "count")
            now = time.time()
            count = int(raw) if raw else 0
            for i in range(state["count"], min(count, len(marker_sent))):
                marker_seen[i] = now
            state["count"] = max(state["count"], count)
            await asyncio.sleep(0.002)

    async def deliveries() -> None:
        while True:
            await asyncio.sleep(1.0)
            done, futures[:] = futures[:], []
            for result in await asyncio.gather(*done, return_exceptions=True):
                if isinstance(result, BaseException):
                    failures.append(result)

    tasks: list[asyncio.Task[Any]] = []
    try:
        deadline = time.monotonic() + 120
        while not isinstance(await health(), dict):
            if proc.poll() is not None:
                msg = f"latency worker exited with {proc.returncode}; see {log}"
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                msg = "latency worker did not start in 120 s"
                raise TimeoutError(msg)
            await asyncio.sleep(0.1)
        await producer.start()
        # Markers first: once one is visible the worker has joined, restored and written
        # Redis; only then the load starts, so no start-up backlog is measured.
        tasks = [asyncio.create_task(c()) for c in (watch, deliveries, markers)]
        deadline = time.monotonic() + 120
        while state["count"] == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                msg = f"no marker became visible in Redis (worker log {log})"
                raise RuntimeError(msg)
            await asyncio.sleep(0.05)
        tasks.append(asyncio.create_task(load()))
        await asyncio.sleep(cfg.latency_warmup_seconds)
        before = await metrics()
        first_marker = len(marker_sent)
        sent0, t_measure = state["sent"], time.monotonic()
        await asyncio.sleep(cfg.latency_seconds)
        last_marker = len(marker_sent)
        sent1, measured_s = state["sent"], time.monotonic() - t_measure
        after = await metrics()
        state["stop"] = True
        deadline = time.monotonic() + 60
        while state["count"] < last_marker and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Did the worker keep up? Everything published is processed soon after.
        total = state["sent"] + len(marker_sent)
        drained = None
        drain_began = time.monotonic()
        while time.monotonic() - drain_began < 60:
            h = await health()
            if isinstance(h, dict) and h.get("events_processed", 0) >= total:
                drained = time.monotonic() - drain_began
                break
            await asyncio.sleep(0.1)
    finally:
        state["stop"] = True
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await producer.stop()
        await rds.aclose()
        procs.stop(proc)

    lat = [
        (marker_seen[i] - marker_sent[i]) * 1000
        for i in range(first_marker, last_marker)
        if i in marker_seen
    ]
    b0 = dict(histogram(before, HISTOGRAM))
    buckets = [(le, n - b0.get(le, 0.0)) for le, n in histogram(after, HISTOGRAM)]

    def hq(q: float) -> float | None:
        v = histogram_quantile(q, buckets)
        return None if v is None else v * 1000

    return {
        "rate_target": rate,
        "rate_achieved": (sent1 - sent0) / measured_s + marker_rate,
        "measured_s": measured_s,
        "markers": last_marker - first_marker,
        "markers_unseen": (last_marker - first_marker) - len(lat),
        "marker_p50_ms": percentile(lat, 0.50),
        "marker_p99_ms": percentile(lat, 0.99),
        "marker_max_ms": max(lat) if lat else None,
        "histogram_events": buckets[-1][1] if buckets else 0,
        "histogram_p50_ms": hq(0.50),
        "histogram_p99_ms": hq(0.99),
        "drained_after_s": drained,
        "delivery_failures": len(failures),
        "log": str(log),
    }
