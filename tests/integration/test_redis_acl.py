"""Redis least privilege (SPEC section 6) and KPI_REDIS_PREFIX (section 5), on a real redis-server.

The worker runs as a Redis ACL user made with exactly ``redis_acl_rule(prefix, "worker")``,
``kpi get`` as one with the reader's rule: ACL LOG shows no refusal, and neither can touch a
key outside its prefix. Each command of a rule is needed: without it, ACL LOG names it.
Two instances with their own prefixes and application ids share one database unmixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
import redis
from redis.exceptions import NoPermissionError, RedisError

from schemas.errors import UnavailableError
from streams.catalog import CATALOG
from streams.config import Settings
from streams.core.records import WindowValue
from streams.progress import ProgressStore
from streams.reader import KpiReader
from streams.redis_client import RedisConnection, check_reachable
from streams.redis_keys import RedisKeys
from streams.sinks.base import SinkBatch
from streams.sinks.redis_sink import RedisSink
from tests.integration.chaos import as_published, assert_exact, live_log
from tests.integration.helpers import Worker, hour_label, process_env, publish, wait_until
from tests.integration.test_worker_invoices import FIRST, FLUSH
from tooling.redis_access import COMMANDS, ROLES, Role, redis_acl_rule
from tooling.stack import free_port

HOUR = 3600
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
#: What the in-process calls write: two closed hours and the newest of two scopes.
CLOSED = [
    WindowValue(
        "invoice_processing_time", "1h", "all", T0, T0 + HOUR, hour_label(T0), 1950.0, 2, True
    ),
    WindowValue(
        "invoice_processing_time", "1h", "finance", T0, T0 + HOUR, hour_label(T0), 1950.0, 2, True
    ),
]
CURRENT = [
    WindowValue(
        "invoice_processing_time",
        "1h",
        "all",
        T0 + HOUR,
        T0 + 2 * HOUR,
        hour_label(T0 + HOUR),
        600.0,
        1,
        False,
    ),
    WindowValue(
        "invoice_processing_time",
        "1h",
        "finance",
        T0 + HOUR,
        T0 + 2 * HOUR,
        hour_label(T0 + HOUR),
        None,
        0,
        False,
    ),
]


@dataclass(frozen=True)
class AclUser:
    """A Redis ACL user of the test: its name and the KPI_REDIS_URL that logs in as it."""

    name: str
    url: str


@pytest.fixture
def admin(kpi_env: Settings) -> Iterator[redis.Redis]:
    """The test's database as Redis' default user (all rights)."""
    client = redis.Redis.from_url(kpi_env.redis_url)
    yield client
    client.close()


@pytest.fixture
def make_user(kpi_env: Settings, admin: redis.Redis) -> Iterator[Callable[[str], AclUser]]:
    """Creates users with a rule (``ACL SETUSER name reset on >password RULE``); deletes them."""
    made: list[str] = []

    def make(rule: str) -> AclUser:
        name, password = f"kpi-{uuid4().hex[:8]}", uuid4().hex
        admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rule.split())
        made.append(name)
        scheme, rest = kpi_env.redis_url.split("://", 1)
        return AclUser(name, f"{scheme}://{name}:{password}@{rest}")

    yield make
    for name in made:
        admin.execute_command("ACL", "DELUSER", name)


def refused(admin: redis.Redis, user: AclUser) -> set[str]:
    """What Redis refused ``user`` (ACL LOG, server-wide, so by user name): commands and keys."""
    return {e["object"] for e in admin.acl_log(count=1000) if e["username"] == user.name}


def without(rule: str, command: str) -> str:
    """``rule`` less one of its commands."""
    less = rule.replace(f" +{command}", "")
    assert less != rule
    return less


async def _step(call: Awaitable[Any], timeout_s: float = 1.0) -> Any:
    """One call, given up after ``timeout_s`` or a Redis error (a refused call is retried)."""
    with contextlib.suppress(TimeoutError, RedisError, UnavailableError):
        return await asyncio.wait_for(call, timeout_s)
    return None


async def worker_calls(url: str, keys: RedisKeys, admin: redis.Redis) -> None:
    """Every kind of Redis call a worker makes, through its own classes, in process.

    The start's check that Redis answers, the script flushed (so it is loaded again), the
    catalog written at start, a batch with closed and newest windows, the closing progress
    written and read, then the database flushed: the data-loss check finds the catalog gone
    and writes it again.
    """
    await _step(check_reachable(url, timeout_s=1.0))
    admin.script_flush()
    connection = RedisConnection(url)
    progress = ProgressStore(connection, keys)
    sink = RedisSink(connection, progress, keys, catalog=CATALOG, currency="USD", loss_check_s=0.05)
    try:
        await sink.start()
        await _step(sink.write(SinkBatch(CLOSED, CURRENT)))
        await _step(progress.write({"invoices": float(T0)}))
        await _step(progress.read())
        await asyncio.sleep(0.2)  # the data-loss check runs every 0.05 s
        admin.flushdb()
        for _ in range(20):
            if admin.exists(keys.catalog):
                break
            await asyncio.sleep(0.05)
    finally:
        await sink.close()
        await connection.close()


async def reader_calls(url: str, prefix: str) -> list[Any]:
    """Every call of ``streams.reader.KpiReader`` (``kpi get`` uses the first four)."""
    async with KpiReader(url, prefix=prefix) as reader:

        async def first_change() -> Any:
            async for change in reader.follow_changes("0", block_ms=100):
                return change
            return None

        return [
            await _step(reader.current("invoice_processing_time", "1h", "finance")),
            await _step(reader.history("invoice_processing_time", "1h", "finance")),
            await _step(reader.catalog()),
            # kpi get --all / kpi watch: every window's hash in one pipeline.
            await _step(reader.currents([("invoice_processing_time", "1h", "all")])),
            await _step(reader.scopes("invoice_processing_time", "1h")),
            await _step(first_change()),
        ]


def fill(url: str, keys: RedisKeys) -> None:
    """Write the catalog, CLOSED and CURRENT under ``keys`` (as the worker would).

    Within 30 s: a refused write is retried, as in the worker, and would never end.
    """

    async def write() -> None:
        connection = RedisConnection(url)
        progress = ProgressStore(connection, keys)
        sink = RedisSink(connection, progress, keys, catalog=CATALOG, currency="USD")
        try:
            await sink.write_catalog()
            await sink.write(SinkBatch(CLOSED, CURRENT))
        finally:
            await connection.close()

    async def run() -> None:
        await asyncio.wait_for(write(), 30)

    asyncio.run(run())


@pytest.mark.parametrize(
    ("role", "command"), [(role, command) for role in ROLES for command in COMMANDS[role]]
)
def test_each_command_of_a_rule_is_needed(
    role: Role,
    command: str,
    kpi_env: Settings,
    admin: redis.Redis,
    make_user: Callable[[str], AclUser],
) -> None:
    keys = RedisKeys(f"t{uuid4().hex[:8]}")
    full = make_user(redis_acl_rule(keys.prefix, role))
    less = make_user(without(redis_acl_rule(keys.prefix, role), command))
    if role == "worker":
        asyncio.run(worker_calls(full.url, keys, admin))
        assert admin.exists(keys.catalog), "the catalog was not written again after the flush"
        asyncio.run(worker_calls(less.url, keys, admin))
    else:
        fill(kpi_env.redis_url, keys)
        found = asyncio.run(reader_calls(full.url, keys.prefix))
        assert all(found), found
        asyncio.run(reader_calls(less.url, keys.prefix))
    assert refused(admin, full) == set()
    assert command in refused(admin, less)


def kpi_get(settings: Settings, *args: str) -> str:
    """``kpi get ARGS`` for ``settings``; its output (it must succeed)."""
    env = process_env(settings) | {"COLUMNS": "200"}  # rich: the whole table on one line each
    done = subprocess.run(
        [sys.executable, "-m", "kpi", "get", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_worker_as_a_least_privilege_user_gives_the_reference_values(
    kpi_env: Settings, admin: redis.Redis, make_user: Callable[[str], AclUser], tmp_path: Path
) -> None:
    prefix = f"t{uuid4().hex[:8]}"
    user = make_user(redis_acl_rule(prefix, "worker"))
    settings = kpi_env.model_copy(update={"redis_url": user.url, "redis_prefix": prefix})
    log = live_log(settings, seed=5, n_events=600, days=3)
    half = len(log.messages) // 2
    admin.script_flush()  # the worker loads its script (SCRIPT LOAD) itself
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        publish(settings, as_published(log.messages[:half]))
        wait_until(lambda: admin.exists(f"{prefix}:_progress"), timeout_s=90)
        admin.script_flush()  # and again while running
        publish(settings, as_published(log.messages[half:]))
        assert_exact(admin, log)
    finally:
        worker.stop()
    assert refused(admin, user) == set()
    assert "Redis lost" not in worker.log()
    assert all(key.startswith(f"{prefix}:".encode()) for key in admin.keys("*"))

    # Outside its prefix (another instance's keys, anything else) and its commands: refused.
    client = redis.Redis.from_url(user.url)
    try:
        for call in (
            lambda: client.hset("kpi:catalog", "dso", "{}"),
            lambda: client.hgetall("other:thing"),
            lambda: client.zadd("kpi:dso:1h:all:history", {"x": 1}),
            lambda: client.publish(f"{prefix}:news", "x"),
            lambda: client.flushdb(),
            lambda: client.keys("*"),
            lambda: client.get(f"{prefix}:catalog"),
        ):
            with pytest.raises(NoPermissionError):
                call()
    finally:
        client.close()
    assert {"kpi:catalog", "other:thing", "kpi:dso:1h:all:history", "publish"} <= refused(
        admin, user
    )


def test_kpi_get_as_a_reader_user(
    kpi_env: Settings, admin: redis.Redis, make_user: Callable[[str], AclUser]
) -> None:
    prefix = f"t{uuid4().hex[:8]}"
    fill(make_user(redis_acl_rule(prefix, "worker")).url, RedisKeys(prefix))
    user = make_user(redis_acl_rule(prefix, "reader"))
    settings = kpi_env.model_copy(update={"redis_url": user.url, "redis_prefix": prefix})

    one = kpi_get(
        settings, "invoice_processing_time", "-w", "1h", "-s", "finance", "--history", "3"
    )
    assert one.splitlines()[0].startswith("invoice_processing_time 1h finance: - [")
    assert "[2026-01-01T01: 2026-01-01 01:00 .. 2026-01-01 02:00 UTC," in one.splitlines()[0]
    assert "32.5 min" in one.splitlines()[1]  # the closed hour: 1950 s
    assert one.splitlines()[1].startswith("  2026-01-01T00  ")
    table = kpi_get(settings, "--all")
    assert "10.0 min" in next(line for line in table.splitlines() if "invoice_processing_t" in line)
    assert refused(admin, user) == set()

    # Read-only, on its prefix only.
    client = redis.Redis.from_url(user.url)
    try:
        with pytest.raises(NoPermissionError):
            client.hset(f"{prefix}:catalog", "dso", "{}")
        with pytest.raises(NoPermissionError):
            client.hgetall("kpi:catalog")
    finally:
        client.close()
    assert refused(admin, user) == {"hset", "kpi:catalog"}


def test_two_instances_share_one_database_without_mixing(
    kpi_env: Settings, admin: redis.Redis, tmp_path: Path
) -> None:
    """The default instance's keys are the version 1 keys; the other's are all under ``eu:``.

    Instance ``kpi`` (the default) gets test_worker_invoices' log: [T0, T0+1h) processing
    time finance 1950 s, all 2200 s. Instance ``eu`` gets its partitions 0 and 1 only:
    finance 1800 s (a), all (1800 + 2700) / 2 = 2250 s.
    """
    default = kpi_env
    assert default.redis_prefix == "kpi"
    eu = kpi_env.model_copy(
        update={
            "redis_prefix": "eu",
            "topic_prefix": f"{kpi_env.topic_prefix}eu.",
            "app_id": f"{kpi_env.app_id}-eu",
            "web_port": free_port(),
        }
    )
    workers = [
        Worker(default, tmp_path / "default.log").start(),
        Worker(eu, tmp_path / "eu.log").start(),
    ]
    try:
        publish(default, FIRST + FLUSH)
        publish(eu, [m for m in FIRST if m[1] in (0, 1)] + FLUSH)

        def closed_hour(prefix: str, scope: str) -> list[tuple[float, int]]:
            members = admin.zrange(f"{prefix}:invoice_processing_time:1h:{scope}:history", 0, -1)
            return [(d["value"], d["count"]) for d in map(orjson.loads, members)]

        wait_until(lambda: closed_hour("kpi", "all") and closed_hour("eu", "all"), timeout_s=90)
    finally:
        for worker in workers:
            worker.stop()
    # The version 1 keys hold the default instance's values, the eu: keys the other's.
    assert closed_hour("kpi", "all") == [(2200.0, 3)]
    assert closed_hour("kpi", "finance") == [(1950.0, 2)]
    assert closed_hour("eu", "all") == [(2250.0, 2)]
    assert closed_hour("eu", "finance") == [(1800.0, 1)]
    names = [key.decode() for key in admin.keys("*")]
    assert all(name.startswith(("kpi:", "eu:")) for name in names), names
    for prefix in ("kpi", "eu"):
        assert {f"{prefix}:catalog", f"{prefix}:changes", f"{prefix}:_progress"} <= set(names)
    assert set(admin.hkeys("kpi:catalog")) == set(admin.hkeys("eu:catalog"))

    def closed_hour_shown(settings: Settings, scope: str) -> str:
        args = ("invoice_processing_time", "-w", "1h", "-s", scope, "--history", "1")
        return kpi_get(settings, *args).splitlines()[1]

    assert "32.5 min" in closed_hour_shown(default, "finance")
    assert "30.0 min" in closed_hour_shown(eu, "finance")
    assert "36.7 min" in closed_hour_shown(default, "all")
    assert "37.5 min" in closed_hour_shown(eu, "all")
