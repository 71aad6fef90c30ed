"""Fault injection for the reliability tests: live logs, Redis and Kafka outages, checks.

Everything here drives real processes: a ``redis-server`` of a test's own (persistent or
not), a Kafka broker of a dedicated stack stopped and started again by pid file, and the
worker (``helpers.Worker``) killed with SIGKILL. The checks compare Redis and the dead-letter
topic with ``tests/reference.py`` exactly, and look for the traces a non-idempotent replay
would leave (two members of one window, a message dead-lettered twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from uuid import uuid4

import httpx
import orjson
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.config import Settings
from streams.kafka import client_options
from streams.redis_keys import DEFAULT_PREFIX, RedisKeys
from tests import comparison, reference
from tests.eventgen import log_now, random_log
from tests.integration.helpers import REPO, Worker, process_env, publish, read_topic, wait_until
from tests.reference import DAY, TOPICS, Message
from tooling.stack import free_port, pid_alive, stack_down, stack_paths, stack_up

T = TypeVar("T")

Key = tuple[str, str, str]


# --- logs whose "future" is the real future -------------------------------------------------


@dataclass(frozen=True)
class LiveLog:
    """A seeded multi-day log for the wall clock of now, and what the reference makes of it."""

    settings: Settings
    messages: list[Message]
    partitions: dict[str, int]
    expected: reference.RefResult
    now: float
    start: float

    @property
    def history_keys(self) -> list[Key]:
        """Every (KPI, window, scope) with at least one closed window."""
        return sorted(k for k, v in self.expected.history.items() if v)

    @property
    def n_windows(self) -> int:
        return sum(len(v) for v in self.expected.history.values())


def live_start(days: int, grace: float = 3600, now: float | None = None) -> int:
    """The latest log start whose regular events are past and flush events about now.

    Like ``recent_start`` of test_worker_reference.py, but the log's "future" faults are dated
    from the real clock (``random_log(now=...)``), so they are a day ahead of the worker's
    clock whenever it runs, and the flush events (``log_now - 60`` <= ``now + 60``) are never
    ``future`` (300 s of tolerance), whatever the time of day.
    """
    now = time.time() if now is None else now
    start = int(now) - (days + 3) * DAY
    while log_now(start + DAY, days, grace) <= now + 120:
        start += DAY
    assert log_now(start, days, grace) <= now + 120
    return start


def reference_for(
    settings: Settings,
    messages: Sequence[Message],
    partitions: Mapping[str, int],
    now: float,
) -> reference.RefResult:
    """What the reference makes of ``messages`` under the settings a worker runs with: grace,
    currency, business calendar and SLAs."""
    return reference.compute(
        messages,
        partitions=partitions,
        grace_seconds=settings.grace_seconds,
        currency=settings.currency,
        now=now,
        timezone=settings.timezone,
        fiscal_year_start=settings.fiscal_year_start,
        ticket_sla=settings.ticket_sla,
        incident_sla=settings.incident_sla,
    )


def live_log(settings: Settings, *, seed: int, n_events: int, days: int) -> LiveLog:
    """``random_log`` with faults, ending with the flush events, for the worker of ``settings``."""
    partitions = dict.fromkeys(TOPICS, settings.partitions)
    now = time.time()
    start = live_start(days, settings.grace_seconds, now)
    messages = random_log(
        seed=seed,
        n_events=n_events,
        days=days,
        partitions=partitions,
        start=start,
        grace=settings.grace_seconds,
        now=now,
    )
    expected = reference_for(settings, messages, partitions, now)
    return LiveLog(settings, messages, partitions, expected, now, start)


def as_published(messages: Sequence[Message]) -> list[tuple[str, int, Any]]:
    """The ``publish`` helper's (logical topic, partition, raw bytes) triples."""
    return [(m.topic, m.partition, m.value) for m in messages]


class StreamPublisher(threading.Thread):
    """Publishes messages in chunks, one after the other, in the background.

    Per-partition order is kept (one producer call at a time), so the offsets in Kafka are
    the reference's. ``publish`` uses an idempotent producer, so a chunk is never doubled.
    """

    def __init__(
        self,
        settings: Settings,
        messages: Sequence[Message],
        *,
        chunk: int = 100,
        pause_s: float = 0.2,
    ) -> None:
        super().__init__(daemon=True, name="stream-publisher")
        self.settings = settings
        self.messages = list(messages)
        self.chunk = chunk
        self.pause_s = pause_s
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(0, len(self.messages), self.chunk):
                part = self.messages[i : i + self.chunk]
                publish(self.settings, as_published(part))
                self.sent += len(part)
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - re-raised in finish()
            self.error = exc

    def finish(self, timeout_s: float = 120.0) -> None:
        """Wait until every message is published; re-raise a publishing error."""
        self.join(timeout_s)
        if self.is_alive():
            raise AssertionError(f"publisher still running after {timeout_s} s ({self.sent})")
        if self.error is not None:
            raise self.error


# --- what Redis and the dead-letter topic hold ------------------------------------------------


def history_total(r: redis.Redis, keys: Sequence[Key], prefix: str = DEFAULT_PREFIX) -> int:
    """The number of history members over ``keys`` (one round trip)."""
    names = RedisKeys(prefix)
    pipe = r.pipeline(transaction=False)
    for kpi, window, scope in keys:
        pipe.zcard(names.history(kpi, window, scope))
    return sum(pipe.execute())


def history_keys_in_redis(r: redis.Redis, prefix: str = DEFAULT_PREFIX) -> list[str]:
    match = f"{prefix}:*:history"
    return sorted(k.decode() for k in r.scan_iter(match=match, count=1000))


def history_mismatches(r: redis.Redis, log: LiveLog) -> list[Any]:
    """Every difference between Redis history and the reference, empty when they are equal.

    Compares every closed window of every (KPI, window, scope) as tests/comparison.py does
    (window end, label and count exactly, value within 1e-9 relative, percentiles within 1%,
    worst entities exactly), and reports members or history keys the reference does not have.
    """
    expected = log.expected.history
    prefix = log.settings.redis_prefix
    names = RedisKeys(prefix)
    mismatches: list[Any] = []
    wanted = {names.history(*key): key for key, v in expected.items() if v}
    for extra in sorted(set(history_keys_in_redis(r, prefix)) - set(wanted)):
        mismatches.append(("unexpected history key", extra, r.zcard(extra)))
    pipe = r.pipeline(transaction=False)
    names = sorted(wanted)
    for name in names:
        pipe.zrange(name, 0, -1)
    for name, members in zip(names, pipe.execute(), strict=True):
        key = wanted[name]
        got: dict[str, dict[str, Any]] = {}
        for raw in members:
            doc = orjson.loads(raw)
            if doc["window_start"] in got:
                mismatches.append((key, "two members", doc["window_start"]))
            got[doc["window_start"]] = doc
        mismatches += window_mismatches(key, got, log.expected.records(key))
    return mismatches


def window_mismatches(
    key: Key, got: dict[str, dict[str, Any]], want: dict[int, reference.HistoryRecord]
) -> list[Any]:
    """Windows of one history (``got``: members by RFC 3339 start) that differ from ``want``
    (by start seconds), or that ``want`` does not have (tests/comparison.py)."""
    members = {}
    for doc in got.values():
        record = comparison.from_member(doc)
        members[record.window_start] = record
    return comparison.window_mismatches(key, members, want)


def split_tenths(messages: Sequence[Message], *tenths: int) -> list[list[Message]]:
    """``messages`` cut after the given tenths of its length, e.g. ``(4, 6)``: 40/20/40 %."""
    n = len(messages)
    cuts = [0, *(n * t // 10 for t in tenths), n]
    return [list(messages[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]


def wait_converged(
    r: redis.Redis, log: LiveLog, timeout_s: float = 180.0, settle_s: float = 15.0
) -> list[Any]:
    """Wait until Redis history equals the reference; the differences left (empty if none).

    Gives up early when the worker has committed all its input and the differences have
    not changed for ``settle_s``: nothing is left that could still correct them.
    """
    deadline = time.monotonic() + timeout_s
    last: list[Any] | None = None
    since = time.monotonic()
    while True:
        mismatches = history_mismatches(r, log)
        now = time.monotonic()
        if not mismatches or now > deadline:
            return mismatches
        if mismatches != last:
            last, since = mismatches, now
        elif now - since > settle_s and caught_up(log.settings):
            return mismatches
        time.sleep(1.0)


def duplicate_scores(r: redis.Redis, prefix: str = DEFAULT_PREFIX) -> list[tuple[str, float, int]]:
    """(history key, score, members) for every score held by more than one member."""
    out: list[tuple[str, float, int]] = []
    for name in history_keys_in_redis(r, prefix):
        members = cast(list[tuple[bytes, float]], r.zrange(name, 0, -1, withscores=True))
        scores = Counter(score for _m, score in members)
        out.extend((name, score, n) for score, n in sorted(scores.items()) if n > 1)
    return out


def dead_letter_problems(log: LiveLog, timeout_s: float = 60.0) -> list[Any]:
    """Differences between the dead-letter topic and the reference; duplicates first."""
    settings = log.settings
    want = len(log.expected.dead_letters)

    def enough() -> list[dict[str, Any]]:
        found = read_topic(settings, settings.dead_letter_topic)
        return found if len(found) >= want else []

    try:
        letters = wait_until(enough, timeout_s=timeout_s, interval_s=1.0)
    except AssertionError:
        letters = read_topic(settings, settings.dead_letter_topic)
    logical = {settings.topic(t): t for t in TOPICS}
    got = [(logical[d["topic"]], d["partition"], d["offset"], d["reason"]) for d in letters]
    problems: list[Any] = []
    twice = Counter((t, p, o) for t, p, o, _ in got)
    problems.extend(("dead-lettered more than once", tpo, n) for tpo, n in twice.items() if n > 1)
    expected = Counter(log.expected.dead_letters)
    found = Counter(got)
    details = {
        (logical[d["topic"]], d["partition"], d["offset"], d["reason"]): d.get("detail")
        for d in letters
    }
    problems.extend(("unexpected", d, n, details[d]) for d, n in (found - expected).items())
    problems.extend(("missing", d, n) for d, n in (expected - found).items())
    return problems


def assert_exact(r: redis.Redis, log: LiveLog, timeout_s: float = 180.0) -> None:
    """Redis history converges to the reference, one member per window, dead letters once.

    On failure, every kind of difference is reported together: extra or missing dead
    letters often tell why windows hold the wrong values.
    """
    mismatches = wait_converged(r, log, timeout_s)
    twice = duplicate_scores(r, log.settings.redis_prefix)
    letters = dead_letter_problems(log, timeout_s=30 if mismatches else 60)
    problems = []
    if mismatches:
        problems.append(
            f"Redis history differs from the reference in {len(mismatches)} of "
            f"{log.n_windows} windows, e.g. {mismatches[:6]}"
        )
    if twice:
        problems.append(f"windows with two history members: {twice[:10]}")
    if letters:
        by_kind = Counter(kind for kind, *_ in letters)
        problems.append(f"dead letters differ ({dict(by_kind)}), e.g. {letters[:10]}")
    assert not problems, "\n".join(problems)


# --- the worker from outside: health, metrics, progress ---------------------------------------


def health(worker: Worker) -> tuple[int, dict[str, Any]]:
    """``/health``: (HTTP status, body); (0, {}) when the worker does not answer."""
    try:
        resp = httpx.get(worker.url("/health"), timeout=3)
    except httpx.HTTPError:
        return 0, {}
    return resp.status_code, resp.json()


def metric(worker: Worker, name: str) -> float | None:
    """The value of an unlabelled sample of ``/metrics`` (``backoffice_redis_up``), or None."""
    text = httpx.get(worker.url("/metrics"), timeout=5).text
    for line in text.splitlines():
        sample, _, value = line.partition(" ")
        if sample == name:
            return float(value)
    return None


def batched_messages(worker: Worker) -> float:
    """Input messages in the batches the worker processed (counted before their writes)."""
    return metric(worker, "backoffice_batch_messages_sum") or 0.0


def events_processed(worker: Worker) -> int:
    return int(health(worker)[1].get("events_processed") or 0)


async def end_offsets(
    settings: Settings, tps: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """The end offset of each partition (where its next message will be written)."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


def group_lag(settings: Settings) -> int:
    """Input messages not yet committed by the worker's consumer group (all partitions).

    Faust commits an offset only after the batch holding it was handled (and acked), so 0
    means the worker is done with everything published so far.
    """

    async def run() -> int:
        tps = [
            TopicPartition(t, p) for t in settings.input_topics for p in range(settings.partitions)
        ]
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(settings.app_id)
        finally:
            await admin.close()
        ends = await end_offsets(settings, tps)
        done = {tp: meta.offset for tp, meta in committed.items() if meta is not None}
        return sum(max(0, ends[tp] - max(0, done.get(tp, 0))) for tp in tps)

    return asyncio.run(run())


def topic_end(settings: Settings, topic: str) -> int:
    """Messages written to ``topic`` so far (the sum of its partitions' end offsets)."""
    # The worker creates its topics with KPI_PARTITIONS partitions.
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    return sum(asyncio.run(end_offsets(settings, tps)).values())


def wait_unchanged(read: Callable[[], T], quiet_s: float, timeout_s: float = 60.0) -> T:
    """Poll ``read`` until its value has not changed for ``quiet_s``; return that value."""
    deadline = time.monotonic() + timeout_s
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            msg = f"still changing after {timeout_s} s (last: {value!r})"
            raise AssertionError(msg)
        time.sleep(0.1)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


def caught_up(settings: Settings) -> bool:
    """Whether the worker's group has committed every input message published so far."""
    try:
        return group_lag(settings) == 0
    except KafkaError:  # no coordinator yet (a fresh broker), a broker restarting
        return False


def wait_caught_up(settings: Settings, timeout_s: float = 120.0) -> None:
    """Wait until the worker's group has committed every input message published so far."""
    wait_until(lambda: caught_up(settings), timeout_s=timeout_s, interval_s=0.5)


def assert_alive(worker: Worker) -> None:
    assert worker.proc is not None
    code = worker.proc.poll()
    assert code is None, f"worker exited with {code}: {worker.log()[-4000:]}"


class EnvWorker(Worker):
    """``helpers.Worker`` with extra environment variables (settings the product may lack)."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str]) -> None:
        super().__init__(settings, log_path)
        self.extra_env = extra_env

    def start(self) -> EnvWorker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kpi", "worker"],
            cwd=REPO,
            env={**process_env(self.settings), **self.extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._web_up, timeout_s=60)
        return self


# --- a Redis of the test's own ---------------------------------------------------------------


@dataclass
class RedisServer:
    """A ``redis-server`` on a free loopback port, with its own directory.

    ``persistent``: append-only file fsynced on every write, as a production Redis that must
    keep what it acknowledged across a crash. ``kill`` and ``start`` again reuse the port and
    the directory, so a restarted server serves the same URL and data.
    """

    directory: Path
    persistent: bool = True
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self, timeout_s: float = 30.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server")
        assert server is not None, "redis-server not on PATH"
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        argv = [
            server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persistence,
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            "",
        ]
        with (self.directory / "redis.log").open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}")
            client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
            finally:
                client.close()

        wait_until(answers, timeout_s=timeout_s, interval_s=0.1)
        self.paused = False
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Crash it (SIGKILL) or stop it (SIGTERM) and wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, then nothing is ever answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@contextlib.contextmanager
def redis_server(directory: Path, *, persistent: bool = True) -> Iterator[RedisServer]:
    server = RedisServer(directory, persistent=persistent).start()
    try:
        yield server
    finally:
        server.stop()


# --- a Kafka of the test's own ----------------------------------------------------------------


@contextlib.contextmanager
def dedicated_stack(root: Path) -> Iterator[Settings]:
    """A Kafka + Redis stack for one test, on free ports; stopped whatever happens."""
    stack = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=str(root),
    )
    try:
        stack_up(stack)
        yield stack
    finally:
        stack_down(stack)


def worker_settings(stack: Settings, **update: Any) -> Settings:
    """Settings for a worker on ``stack``, like the ``kpi_env`` fixture makes them."""
    tag = uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap": stack.kafka_bootstrap,
        "redis_url": stack.redis_url,
        "topic_prefix": f"t{tag}.",
        "app_id": f"kpi-test-{tag}",
        "partitions": 4,
        "web_port": free_port(),
    }
    values.update(update)
    return Settings(**values)


def kafka_pid(stack: Settings) -> int:
    text = stack_paths(stack).kafka_pid.read_text().strip()
    return int(text)


def stop_kafka(stack: Settings, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
    """Stop the stack's broker by its pid file (SIGTERM: a controlled shutdown); its pid."""
    pid = kafka_pid(stack)
    os.kill(pid, sig)
    wait_until(lambda: not pid_alive(pid), timeout_s=timeout_s, interval_s=0.1)
    return pid


def start_kafka(stack: Settings) -> None:
    """``stack_up`` again: starts what does not run (the broker), on the same port and data."""
    info = stack_up(stack)
    assert "kafka" in info.started, info
