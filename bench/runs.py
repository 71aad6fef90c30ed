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
from bench.offsets import GroupOffsets
from streams.config import Settings
from streams.redis_keys import RedisKeys
from tooling.stack import stack_paths

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
    env.update(settings.environment())
    env.update(extra or {})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def redis_kpis(settings: Settings) -> dict[str, set[str]]:
    """KPI name -> windows that have a newest-window hash in Redis."""
    keys = RedisKeys(settings.redis_prefix)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        out: dict[str, set[str]] = {}
        for raw in client.scan_iter(keys.pattern, count=1000):
            parts = raw.decode()[len(keys.prefix) + 1 :].split(":")
            if len(parts) == 3:
                out.setdefault(parts[0], set()).add(parts[1])
        return out
    finally:
        client.close()


def redis_digests(settings: Settings) -> dict[str, str]:
    """Fingerprints of the KPI values in Redis.

    ``history``: every closed-window member, which must be equal across repetitions and
    across changes that must not change results. ``hashes``: every newest-window hash less
    its ``updated_at``; a hash holds the newest window as of its last write, so it may
    legitimately depend on where batches were cut. Values are rounded to 10 significant
    digits: balances are sums whose association (base absorbing pruned panes) follows the
    batch cuts, so their last bits may differ (the reference test allows 1e-9 relative).
    """
    keys = RedisKeys(settings.redis_prefix)
    catalog = keys.catalog.encode()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        history, hashes = hashlib.sha256(), hashlib.sha256()
        for raw in sorted(client.scan_iter(keys.pattern, count=1000)):
            kind = client.type(raw)
            if kind == b"hash" and raw != catalog:
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
    processes: int = 1,
    extra_env: dict[str, str] | None = None,
    profile_to: Path | None = None,
    expect_history: str | None = None,
    slices: int = 0,
) -> dict[str, Any]:
    """``processes`` x ``kpi worker`` (one group) until every message is reflected.

    ``slices``: sample the run at that many equal slices (``_Slicer``: each sample asks every
    worker's ``/state``, which holds its loop for a few tens of ms); 0 for the runs that
    are compared with other programs (single KPI against Quix) or profiled.

    The workers are started together with the same ``settings`` (app id, so one consumer
    group, and Redis database), each with its own web port. Every ``poll_interval_s`` the
    bench reads each worker's ``/health``; ``events_processed`` grows after a batch's Redis
    pipeline and state commit. A worker counts every message it handled, so after a
    rebalance a message replayed by its new owner counts twice: the sum is no "done" signal
    with more than one worker. Done is when the group's committed offsets reach the end of
    every input partition (checked once the sum reaches ``expected``; offsets are committed
    only after the batch, so this holds exactly when every message is reflected), and the
    end time is the last poll that saw the sum grow before that, i.e. the last batch.
    Throughput counts from the first poll that saw a batch (sum > 0) to that end, over the
    messages after that first poll. CPU is sampled at both ends.

    With several workers the topics' leader closes the last windows only after it has read
    the other workers' final commits from their changelogs, a little after their offsets
    were committed. With ``expect_history`` (the history digest of a one-worker run over
    the same messages) the run is done only when Redis holds exactly that history, and the
    end time is the poll that saw it (``settled_s``); if it never does within
    ``_SETTLE_TIMEOUT_S`` the run reports ``history_matches`` False.
    """
    if processes < 1:
        msg = f"processes must be >= 1, not {processes}"
        raise ValueError(msg)
    flush_redis(settings.redis_url)
    many = processes > 1
    group = GroupOffsets(settings.kafka_bootstrap, settings.app_id, list(settings.input_topics))
    if group.total != expected:
        group.close()
        msg = f"the input topics hold {group.total} messages, {expected} expected"
        raise RuntimeError(msg)
    workers = []
    spawned = time.time()
    for i in range(processes):
        s = settings if i == 0 else settings.model_copy(update={"web_port": procs.free_port()})
        name = f"{settings.app_id}-w{i}" if many else settings.app_id
        log = workdir / f"{name}.log"
        proc = procs.spawn(
            [sys.executable, "-m", "kpi", "worker"],
            env=kpi_env(s, extra_env),
            cwd=scratch / name,
            log=log,
        )
        workers.append(_Worker(proc, f"http://127.0.0.1:{s.web_port}", log))
    spy = None
    kpid = kafka_pid(settings)

    def kafka_cpu() -> float | None:
        return procs.cpu_seconds(kpid) if kpid else None

    try:
        procs.wait_for(lambda: all(w.health() for w in workers), 120, 0.1, "the web servers")
        web_up = time.time()
        if profile_to is not None:
            spy = procs.spawn(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(workers[0].proc.pid),
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
        slicer: _Slicer | None = None
        t_all = n_all = None  # the first poll at which every worker had completed a batch
        kcpu0 = kcpu1 = None
        last, last_at = 0, 0.0
        reached_at = None  # first poll with the sum >= expected
        assigned_at = None  # last poll that saw any worker's assignment change
        deadline = time.monotonic() + cfg.run_timeout_s
        next_offsets = 0.0
        remaining = group.total
        while True:
            for w in workers:
                w.poll()
            now = time.time()
            total = sum(w.processed for w in workers)
            if any(w.assignment_changed for w in workers):
                assigned_at = now
            if t0 is None and total > 0:
                t0, n0 = now, total
                kcpu0 = kafka_cpu()
                for w in workers:
                    w.cpu0 = procs.cpu_seconds(w.proc.pid)
                if slices:
                    slicer = _Slicer(workers, n0, expected, slices)
                    slicer.sample(now, total)
            if t_all is None and all(w.first_batch_at for w in workers):
                t_all, n_all = now, total
            if total > last:
                last, last_at = total, now
                kcpu1 = kafka_cpu()
                for w in workers:
                    w.cpu1 = procs.cpu_seconds(w.proc.pid)
                if slicer is not None and slicer.due(total):
                    slicer.sample(now, total)
            if total >= expected:
                reached_at = reached_at or now
                if time.monotonic() >= next_offsets:
                    next_offsets = time.monotonic() + 0.2
                    remaining = group.remaining()
                    if remaining == 0:
                        break
            if time.monotonic() > deadline:
                msg = (
                    f"workers processed {total} messages, {expected} expected, committed "
                    f"offsets {remaining} behind the end, in {cfg.run_timeout_s:.0f} s"
                )
                raise TimeoutError(msg)
            if last_at and now - last_at > _STALL_S and total >= expected:
                msg = (
                    f"no batch for {_STALL_S:.0f} s with {total} of {expected} messages "
                    f"processed and the committed offsets of group {group.group} "
                    f"{group.remaining()} behind the end"
                )
                raise RuntimeError(msg)
            time.sleep(cfg.poll_interval_s)
        committed_at = time.time()
        settled_at = None
        if expect_history is not None:
            settle_deadline = time.monotonic() + _SETTLE_TIMEOUT_S
            while time.monotonic() < settle_deadline:
                if redis_digests(settings)["history"] == expect_history:
                    settled_at = time.time()
                    break
                time.sleep(cfg.poll_interval_s)
        for w in workers:
            w.finish()
    finally:
        group.close()
        if spy is not None:
            procs.stop(spy, signal.SIGINT, timeout_s=60.0)
        for w in workers:
            procs.stop(w.proc)
    assert t0 is not None and n0 is not None
    done = max(last_at, settled_at) if settled_at is not None else last_at
    seconds = done - t0
    wall = seconds or 1e-9
    metrics = [w.metrics for w in workers]

    def msum(name: str) -> float:
        return sum(metric_sum(m, name) for m in metrics)

    events_in = msum("backoffice_events_in_total")
    dups = msum("backoffice_duplicates_total")
    batches = msum("backoffice_batch_messages_count")
    prefix = f"{settings.topic_prefix}{settings.app_id}-"

    def is_changelog(name: str) -> bool:
        return name.startswith(prefix) and "-changelog-" in name

    per_worker = [w.report(t0, wall) for w in workers]
    cpus = [p["cpu_util"] for p in per_worker]
    cpu_s = [p["cpu_s"] for p in per_worker]
    counted = expected - n0
    cpu_us = (
        sum(c for c in cpu_s if c is not None) / counted * 1e6
        if None not in cpu_s and counted > 0
        else None
    )
    return {
        "app_id": settings.app_id,
        "processes": processes,
        "eps": (expected - n0) / seconds if seconds > 0 else float("nan"),
        "seconds": seconds,
        "first_batch_messages": n0,
        # With several workers: from the first poll at which every one had completed a
        # batch (the rebalance that gave the later ones partitions is over) to the end.
        "eps_all_active": (
            (expected - n_all) / (done - t_all)
            if many and t_all is not None and n_all is not None and done > t_all
            else None
        ),
        "all_active_s": t_all - t0 if many and t_all is not None else None,
        "startup_s": t0 - spawned,
        "web_up_s": web_up - spawned,
        # From the first batch: the sum reaching the count, the offsets reaching the end.
        "count_reached_s": (reached_at or done) - t0,
        "committed_s": committed_at - t0,
        "assignment_settled_s": assigned_at - t0 if assigned_at else None,
        "settled_s": settled_at - t0 if settled_at is not None else None,
        "history_matches": (None if expect_history is None else settled_at is not None),
        # Messages handled twice (a replay after a rebalance): the sum of events_processed
        # less the messages.
        "replayed": last - expected,
        "rss_hwm_mb": max(p["rss_hwm_mb"] for p in per_worker),
        "rss_end_mb": max(p["rss_end_mb"] for p in per_worker),
        "worker_cpu_util": None if None in cpus else sum(cpus),
        # Every worker's CPU from the first batch to the last, per message after the first
        # batch (scale_cpu compares two workers' with one's).
        "worker_cpu_us_per_event": cpu_us,
        "slices": slicer.slices() if slicer is not None else [],
        "kafka_cpu_util": (kcpu1 - kcpu0) / wall if kcpu0 is not None and kcpu1 else None,
        "workers": per_worker if many else None,
        "metrics": {
            "events_in_total": events_in,
            "dead_letters_total": msum("backoffice_dead_letters_total"),
            "duplicates_total": dups,
            # Dead letters are also counted in events_in (type "invalid").
            "accounted": events_in + dups,
            "batches": batches,
            "mean_batch": msum("backoffice_batch_messages_sum") / max(1.0, batches),
        },
        "redis_kpis": {k: sorted(v) for k, v in sorted(redis_kpis(settings).items())},
        "redis_digest": redis_digests(settings),
        "changelog_bytes": log_dirs_size(settings, is_changelog),
        "changelog_segment_bytes": log_dirs_size(settings, is_changelog, ".log"),
        "log": str(workers[0].log) if not many else [str(w.log) for w in workers],
    }


_STALL_S = 60.0
_SETTLE_TIMEOUT_S = 60.0


class _Worker:
    """One ``kpi worker`` process of a run and what the bench saw of it."""

    def __init__(self, proc: Any, base: str, log: Path) -> None:
        self.proc, self.base, self.log = proc, base, log
        self.processed = 0
        self.first_batch_at: float | None = None
        self.assigned: list[str] = []
        self.partitions: list[str] = []
        self.lag: int | None = None
        self.assignment_changed = False
        self.cpu0: float | None = None
        self.cpu1: float | None = None
        self.status: dict[str, int] = {}
        self.metrics: dict[str, list[tuple[str, float]]] = {}

    def health(self) -> Any:
        """``/health`` as JSON (None when it does not answer); raises when it exited."""
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            msg = f"worker exited with {self.proc.returncode}; log {self.log}:\n{tail}"
            raise RuntimeError(msg)
        return procs.http_json(self.base + "/health", timeout_s=5.0)

    def poll(self) -> None:
        """Read ``/health``; a worker that does not answer keeps its last figures."""
        health = self.health()
        self.assignment_changed = False
        if not isinstance(health, dict):
            return
        self.processed = int(health.get("events_processed", 0))
        if self.first_batch_at is None and self.processed > 0:
            self.first_batch_at = time.time()
        self.lag = health.get("lag")
        assigned = list(health.get("assigned") or [])
        self.assignment_changed = assigned != self.assigned
        self.assigned = assigned
        self.partitions = list(health.get("partitions") or [])

    def finish(self) -> None:
        """Peak RSS and ``/metrics`` once the run is done (before it is stopped)."""
        self.status = procs.proc_status(self.proc.pid)
        text = procs.http_get(self.base + "/metrics", timeout_s=30.0) or b""
        self.metrics = parse_metrics(text.decode(errors="replace"))

    def report(self, t0: float, wall: float) -> dict[str, Any]:
        """The share of the run of this worker."""
        cpu_s = self.cpu1 - self.cpu0 if self.cpu0 is not None and self.cpu1 is not None else None
        cpu = cpu_s / wall if cpu_s is not None else None
        return {
            "pid": self.proc.pid,
            "cpu_s": cpu_s,
            "events_processed": self.processed,
            "first_batch_s": self.first_batch_at - t0 if self.first_batch_at else None,
            "events_in_total": metric_sum(self.metrics, "backoffice_events_in_total"),
            "assigned": self.assigned,
            "partitions": self.partitions,
            "cpu_util": cpu,
            "rss_hwm_mb": self.status.get("VmHWM", 0) / 1024,
            "rss_end_mb": self.status.get("VmRSS", 0) / 1024,
            "log": str(self.log),
        }


class _Slicer:
    """Samples a run at the first batch and at each of ``n`` equal slices of the rest.

    At each boundary (the first poll whose message sum reached it): the time, the message
    sum, the workers' CPU seconds (summed), their RSS (the largest, VmRSS) and their
    ``/state`` (the owned state, summed). A slice is what lies between two samples:
    events/s and CPU microseconds per message over it.
    """

    def __init__(self, workers: list[_Worker], first: int, expected: int, n: int) -> None:
        self._workers = workers
        step = (expected - first) / n
        self._bounds = [first + round(step * k) for k in range(1, n + 1)]
        self._samples: list[dict[str, Any]] = []

    def due(self, total: int) -> bool:
        """Whether ``total`` reached the next boundary."""
        return bool(self._bounds) and total >= self._bounds[0]

    def sample(self, now: float, total: int) -> None:
        """Record one boundary (and drop every boundary ``total`` has passed)."""
        while self._bounds and total >= self._bounds[0]:
            self._bounds.pop(0)
        cpu = [procs.cpu_seconds(w.proc.pid) for w in self._workers]
        rss = [procs.proc_status(w.proc.pid).get("VmRSS", 0) for w in self._workers]
        state: dict[str, int] = {}
        for w in self._workers:
            page = procs.http_json(w.base + "/state", timeout_s=10.0)
            own = page.get("own", {}) if isinstance(page, dict) else {}
            for name, count in own.items():
                state[name] = state.get(name, 0) + int(count)
        self._samples.append(
            {
                "t": now,
                "events": total,
                "cpu_s": None if None in cpu else sum(c for c in cpu if c is not None),
                "rss_mb": max(rss) / 1024,
                "state": state,
            }
        )

    def slices(self) -> list[dict[str, Any]]:
        """Each slice: events, seconds, events/s, CPU us per event, and RSS and state at its end."""
        out = []
        for a, b in zip(self._samples, self._samples[1:], strict=False):
            n, secs = b["events"] - a["events"], b["t"] - a["t"]
            cpu = None if a["cpu_s"] is None or b["cpu_s"] is None else b["cpu_s"] - a["cpu_s"]
            out.append(
                {
                    "events": n,
                    "seconds": secs,
                    "eps": n / secs if secs > 0 else None,
                    "cpu_us_per_event": cpu / n * 1e6 if cpu is not None and n > 0 else None,
                    "events_end": b["events"],
                    "rss_mb": b["rss_mb"],
                    "state": b["state"],
                }
            )
        return out


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
