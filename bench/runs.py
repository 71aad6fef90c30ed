"""One timed run of each contender: the raw consumer, ``kpi worker``, the Quix peer."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench import procs
from bench.config import REPO, BenchConfig
from streams.config import Settings
from streams.stack import stack_paths

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, list[tuple[str, float]]]:
    """Prometheus text -> name -> [(labels, value)]."""
    out: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out


def metric_sum(metrics: dict[str, list[tuple[str, float]]], name: str) -> float:
    """Sum of every sample of ``name``."""
    return sum(v for _labels, v in metrics.get(name, []))


def histogram(metrics: dict[str, list[tuple[str, float]]], name: str) -> list[tuple[float, float]]:
    """Cumulative buckets ``[(le, count)]`` of a histogram, ``+Inf`` last."""
    buckets = []
    for labels, value in metrics.get(f"{name}_bucket", []):
        m = re.search(r'le="([^"]+)"', labels)
        if m:
            buckets.append((float(m.group(1)), value))
    return sorted(buckets)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding rank ``q``."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            frac = (rank - prev_count) / span if span else 1.0
            return prev_le + (le - prev_le) * frac
        prev_le, prev_count = le, count
    return prev_le


def kpi_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a product subprocess for ``settings`` (every KPI_ variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    env.update({f"KPI_{k.upper()}": str(v) for k, v in settings.model_dump().items()})
    env.update(extra or {})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def redis_kpis(url: str) -> dict[str, set[str]]:
    """KPI name -> windows that have a newest-window hash in Redis."""
    client = redis.Redis.from_url(url)
    try:
        out: dict[str, set[str]] = {}
        for raw in client.scan_iter("kpi:*", count=1000):
            key = raw.decode()
            parts = key.split(":")
            if len(parts) == 4:
                out.setdefault(parts[1], set()).add(parts[2])
        return out
    finally:
        client.close()


def redis_digests(url: str) -> dict[str, str]:
    """Fingerprints of the KPI values in Redis.

    ``history``: every closed-window member, which must be equal across repetitions and
    across changes that must not change results. ``hashes``: every newest-window hash less
    its ``updated_at``; a hash holds the newest window as of its last write, so it may
    legitimately depend on where batches were cut. Values are rounded to 10 significant
    digits: balances are sums whose association (base absorbing pruned panes) follows the
    batch cuts, so their last bits may differ (the reference test allows 1e-9 relative).
    """
    client = redis.Redis.from_url(url)
    try:
        history, hashes = hashlib.sha256(), hashlib.sha256()
        for raw in sorted(client.scan_iter("kpi:*", count=1000)):
            kind = client.type(raw)
            if kind == b"hash" and raw != b"kpi:catalog":
                fields = client.hgetall(raw)
                fields.pop(b"updated_at", None)
                if fields.get(b"value"):
                    fields[b"value"] = _round(float(fields[b"value"])).encode()
                hashes.update(raw + repr(sorted(fields.items())).encode())
            elif kind == b"zset":
                for member, score in client.zrange(raw, 0, -1, withscores=True):
                    entry = json.loads(member)
                    if isinstance(entry.get("value"), float):
                        entry["value"] = _round(entry["value"])
                    history.update(raw + repr((sorted(entry.items()), score)).encode())
        return {"history": history.hexdigest()[:16], "hashes": hashes.hexdigest()[:16]}
    finally:
        client.close()


def _round(value: float) -> str:
    return f"{value:.10g}"


def flush_redis(url: str) -> None:
    """Empty one Redis database."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def kafka_pid(settings: Settings) -> int | None:
    """The bench stack's Kafka broker pid (for its CPU use during a run)."""
    try:
        return int(stack_paths(settings).kafka_pid.read_text().strip())
    except (OSError, ValueError):
        return None


def log_dirs_size(settings: Settings, match: Any, suffix: str = "") -> int:
    """Bytes on disk of the Kafka partition directories whose name satisfies ``match(name)``.

    ``suffix=".log"`` counts the record segments only (not indexes, snapshots, checkpoints).
    """
    data = stack_paths(settings).kafka_data
    total = 0
    if data.is_dir():
        for entry in data.iterdir():
            if entry.is_dir() and match(entry.name):
                total += procs.dir_size(entry, suffix)
    return total


def run_raw(
    cfg: BenchConfig, settings: Settings, topics: list[str], expected: int, workdir: Path
) -> dict[str, Any]:
    """The limit: decode every message with orjson in a bare aiokafka consumer."""
    out = workdir / f"raw-{time.monotonic_ns()}.json"
    spawned = time.time()
    proc = procs.spawn(
        [
            sys.executable,
            "-m",
            "bench.raw_consumer",
            "--bootstrap",
            settings.kafka_bootstrap,
            "--topics",
            ",".join(topics),
            "--partitions",
            str(settings.partitions),
            "--expected",
            str(expected),
            "--out",
            str(out),
            "--timeout-s",
            str(cfg.run_timeout_s),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        log=workdir / "raw.log",
    )
    hwm = _wait_exit(proc, cfg.run_timeout_s + 60)
    result = json.loads(out.read_text())
    if result["messages"] < expected or result["first"] is None:
        msg = f"raw consumer read {result['messages']} of {expected} messages"
        raise RuntimeError(msg)
    seconds = result["done"] - result["first"]
    return {
        "eps": expected / seconds,
        "seconds": seconds,
        "startup_s": result["first"] - spawned,
        "messages": result["messages"],
        "rss_hwm_mb": hwm / 1024,
    }


def _wait_exit(proc: Any, timeout_s: float) -> int:
    """Wait for ``proc`` to exit, sampling its peak RSS (kB); raise if it failed."""
    deadline = time.monotonic() + timeout_s
    hwm = 0
    while proc.poll() is None:
        hwm = max(hwm, procs.proc_status(proc.pid).get("VmHWM", 0))
        if time.monotonic() > deadline:
            procs.stop(proc)
            msg = f"pid {proc.pid} ({' '.join(proc.args[:3])}) did not finish in {timeout_s:.0f} s"
            raise TimeoutError(msg)
        time.sleep(0.2)
    procs.stop(proc)
    if proc.returncode != 0:
        msg = f"{' '.join(proc.args[:3])} exited with {proc.returncode}"
        raise RuntimeError(msg)
    return hwm


def run_worker(
    cfg: BenchConfig,
    settings: Settings,
    expected: int,
    workdir: Path,
    scratch: Path,
    *,
    extra_env: dict[str, str] | None = None,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """``kpi worker`` from start until every message is reflected in its state and Redis.

    Throughput counts from the first processed batch (``/health`` ``events_processed`` > 0)
    to the moment it equals ``expected`` (incremented after Redis was written and the state
    committed), over the messages after that first batch.
    """
    flush_redis(settings.redis_url)
    log = workdir / f"{settings.app_id}.log"
    spawned = time.time()
    proc = procs.spawn(
        [sys.executable, "-m", "streams", "worker"],
        env=kpi_env(settings, extra_env),
        cwd=scratch / settings.app_id,  # faust writes <app id>-data/ into its cwd
        log=log,
    )
    base = f"http://127.0.0.1:{settings.web_port}"
    spy = None
    kpid = kafka_pid(settings)

    def alive_health() -> Any:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            msg = f"worker exited with {proc.returncode}; log {log}:\n{tail}"
            raise RuntimeError(msg)
        return procs.http_json(base + "/health", timeout_s=5.0)

    try:
        procs.wait_for(alive_health, 120, 0.1, "the worker's web server")
        web_up = time.time()
        if profile_to is not None:
            spy = procs.spawn(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    "100",
                    "--format",
                    "raw",
                    "--output",
                    str(profile_to),
                ],
                env=dict(os.environ),
                cwd=workdir,
                log=workdir / "py-spy.log",
            )
        t0 = n0 = None
        cpu0 = kcpu0 = None
        deadline = time.monotonic() + cfg.run_timeout_s
        n = 0
        while True:
            health = alive_health()
            now = time.time()
            n = int(health.get("events_processed", 0)) if isinstance(health, dict) else n
            if t0 is None and n > 0:
                t0, n0 = now, n
                cpu0 = procs.cpu_seconds(proc.pid)
                kcpu0 = procs.cpu_seconds(kpid) if kpid else None
            if n >= expected:
                done = now
                break
            if time.monotonic() > deadline:
                msg = f"worker processed {n} of {expected} messages in {cfg.run_timeout_s:.0f} s"
                raise TimeoutError(msg)
            time.sleep(cfg.poll_interval_s)
        cpu1 = procs.cpu_seconds(proc.pid)
        kcpu1 = procs.cpu_seconds(kpid) if kpid else None
        status = procs.proc_status(proc.pid)
        metrics_text = procs.http_get(base + "/metrics", timeout_s=30.0) or b""
        metrics = parse_metrics(metrics_text.decode(errors="replace"))
    finally:
        if spy is not None:
            procs.stop(spy, signal.SIGINT, timeout_s=60.0)
        procs.stop(proc)
    assert t0 is not None and n0 is not None
    seconds = done - t0
    events_in = metric_sum(metrics, "backoffice_events_in_total")
    dead = metric_sum(metrics, "backoffice_dead_letters_total")
    dups = metric_sum(metrics, "backoffice_duplicates_total")
    wall = seconds or 1e-9
    prefix = f"{settings.topic_prefix}{settings.app_id}-"

    def is_changelog(name: str) -> bool:
        return name.startswith(prefix) and "-changelog-" in name

    return {
        "app_id": settings.app_id,
        "eps": (expected - n0) / seconds if seconds > 0 else float("nan"),
        "seconds": seconds,
        "first_batch_messages": n0,
        "startup_s": t0 - spawned,
        "web_up_s": web_up - spawned,
        "rss_hwm_mb": status.get("VmHWM", 0) / 1024,
        "rss_end_mb": status.get("VmRSS", 0) / 1024,
        "worker_cpu_util": (cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else None,
        "kafka_cpu_util": (kcpu1 - kcpu0) / wall if kcpu0 is not None and kcpu1 else None,
        "metrics": {
            "events_in_total": events_in,
            "dead_letters_total": dead,
            "duplicates_total": dups,
            # Dead letters are also counted in events_in (type "invalid").
            "accounted": events_in + dups,
            "batches": metric_sum(metrics, "backoffice_batch_messages_count"),
            "mean_batch": (
                metric_sum(metrics, "backoffice_batch_messages_sum")
                / max(1.0, metric_sum(metrics, "backoffice_batch_messages_count"))
            ),
        },
        "redis_kpis": {k: sorted(v) for k, v in sorted(redis_kpis(settings.redis_url).items())},
        "redis_digest": redis_digests(settings.redis_url),
        "changelog_bytes": log_dirs_size(settings, is_changelog),
        "changelog_segment_bytes": log_dirs_size(settings, is_changelog, ".log"),
        "log": str(log),
    }


def run_quix(
    cfg: BenchConfig,
    settings: Settings,
    topic: str,
    expected_in: int,
    expected_decisions: int,
    group: str,
    workdir: Path,
    scratch: Path,
) -> dict[str, Any]:
    """The Quix Streams peer until every invoice message has been through its pipeline."""
    out = workdir / f"{group}.json"
    state_dir = scratch / group / "state"
    spawned = time.time()
    proc = procs.spawn(
        [
            str(cfg.quix_python),
            str(REPO / "bench" / "quix_app.py"),
            "--bootstrap",
            settings.kafka_bootstrap,
            "--topic",
            topic,
            "--group",
            group,
            "--state-dir",
            str(state_dir),
            "--expected-in",
            str(expected_in),
            "--expected-decisions",
            str(expected_decisions),
            "--out",
            str(out),
            "--timeout-s",
            str(cfg.run_timeout_s),
            "--grace-s",
            str(cfg.quix_grace_s),
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
        cwd=scratch / group,
        log=workdir / f"{group}.log",
    )
    hwm = _wait_exit(proc, cfg.run_timeout_s + 120)
    result = json.loads(out.read_text())
    seconds = result["done"] - result["first"]
    return {
        "group": group,
        "eps": expected_in / seconds,
        "seconds": seconds,
        "startup_s": result["first"] - spawned,
        "rss_hwm_mb": hwm / 1024,
        "decisions": result["decisions"],
        "late": result["late"],
        "unmatched": result["unmatched"],
        "windows_emitted": result["windows"],
        "state_dir_bytes": procs.dir_size(state_dir),
        "changelog_bytes": log_dirs_size(
            settings, lambda name: group in name and name.startswith("changelog__")
        ),
        "repartition_bytes": log_dirs_size(
            settings, lambda name: group in name and name.startswith("repartition__")
        ),
        "quixstreams": result.get("quixstreams"),
    }
