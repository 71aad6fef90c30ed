"""The Redis sink against a real redis-server: the SPEC section 3 layout, written by one script."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from streams.config import Settings
from streams.core.records import WindowValue
from streams.core.windows import rfc3339
from streams.progress import ProgressStore
from streams.redis_client import RedisConnection
from streams.redis_keys import RedisKeys
from streams.sinks import redis_sink
from streams.sinks.base import SinkBatch
from streams.sinks.redis_sink import RedisSink, history_member
from tests.cli import run_kpi_in
from tests.integration.chaos import redis_server
from tests.integration.helpers import day_label, hour_label

HOUR = 3600
KEYS = RedisKeys()  # the default prefix: the version 1 keys, spelled out in the checks
PROGRESS_KEY = "kpi:_progress"
T0 = 1_736_121_600  # 2025-01-06T00:00:00Z


def wv(scope: str, start: int, value: float | None, count: int, final: bool) -> WindowValue:
    return WindowValue(
        "dso", "1h", scope, start, start + HOUR, hour_label(start), value, count, final
    )


CLOSED = [wv("all", T0 + i * HOUR, 10.0 + i, i + 1, True) for i in range(5)] + [
    wv("sales", T0, 1.5, 2, True)
]
CURRENT = [wv("all", T0 + 5 * HOUR, 0.1 + 0.2, 7, False), wv("sales", T0 + HOUR, None, 0, False)]


def make_sink(redis: RedisConnection, **sink_args: Any) -> RedisSink:
    return RedisSink(
        redis, ProgressStore(redis, KEYS), KEYS, catalog=(), currency="USD", **sink_args
    )


def write(
    settings: Settings, *batches: dict[str, Any], keys: RedisKeys = KEYS, **sink_args: Any
) -> None:
    """Each batch's windows through one sink, then its progress (as the checkpoint does)."""

    async def run() -> None:
        redis = RedisConnection(settings.redis_url)
        progress = ProgressStore(redis, keys)
        sink = RedisSink(
            redis,
            progress,
            keys,
            catalog=(),
            currency="USD",
            clock=lambda: T0 + 6 * HOUR,
            **sink_args,
        )
        try:
            for batch in batches:
                await sink.write(SinkBatch(batch["closed"], batch["current"]))
                await progress.write(batch.get("progress", {}))
        finally:
            await sink.close()
            await redis.close()

    asyncio.run(run())


def content(r: redis.Redis) -> dict[str, Any]:
    """Every key, with stream entries' fields (their ids differ between runs)."""
    out: dict[str, Any] = {}
    for key in sorted(k.decode() for k in r.keys("*")):
        kind = r.type(key).decode()
        if kind == "hash":
            out[key] = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
        elif kind == "zset":
            out[key] = [(m.decode(), s) for m, s in r.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            out[key] = [
                {k.decode(): v.decode() for k, v in fields.items()} for _id, fields in r.xrange(key)
            ]
    return out


@pytest.fixture
def r(kpi_env: Settings) -> Any:
    client = redis.Redis.from_url(kpi_env.redis_url)
    yield client
    client.close()


def test_one_batch_writes_the_contract_layout(kpi_env: Settings, r: redis.Redis) -> None:
    write(kpi_env, {"closed": CLOSED, "current": CURRENT, "progress": {"invoices": T0 + 0.5}})
    got = content(r)
    assert got["kpi:_progress"] == {"invoices": repr(T0 + 0.5)}
    assert got["kpi:dso:1h:all:history"] == [
        (history_member(w).decode(), float(w.start)) for w in CLOSED[:5]
    ]
    assert got["kpi:dso:1h:sales:history"] == [(history_member(CLOSED[5]).decode(), float(T0))]
    assert got["kpi:dso:1h:all"] == {
        "value": repr(0.1 + 0.2),
        "window_start": rfc3339(T0 + 5 * HOUR),
        "window_end": rfc3339(T0 + 6 * HOUR),
        "label": "2025-01-06T05",
        "count": "7",
        "final": "0",
        "updated_at": rfc3339(T0 + 6 * HOUR),
    }
    # An undefined value is the empty string (SPEC section 3).
    assert got["kpi:dso:1h:sales"]["value"] == ""
    assert got["kpi:dso:1h:sales"]["label"] == "2025-01-06T01"
    # History members: the contract's fields, in its order, label included.
    first = orjson.loads(got["kpi:dso:1h:all:history"][0][0])
    assert first == {
        "window_start": "2025-01-06T00:00:00Z",
        "window_end": "2025-01-06T01:00:00Z",
        "label": "2025-01-06T00",
        "value": 10.0,
        "count": 1,
    }
    assert list(first) == ["window_start", "window_end", "label", "value", "count"]
    assert got["kpi:changes"] == [
        {
            "name": "dso",
            "window": "1h",
            "scope": w.scope,
            "value": "" if w.value is None else repr(w.value),
            "window_start": rfc3339(w.start),
            "window_end": rfc3339(w.end),
            "final": "0",
        }
        for w in CURRENT
    ]


def test_the_script_declares_every_key_it_touches(kpi_env: Settings, r: redis.Redis) -> None:
    """What the Redis ACL key patterns (and a cluster-aware proxy) see is what it writes."""
    declared: set[str] = set()
    touched: set[str] = set()
    with r.monitor() as monitor:
        write(kpi_env, {"closed": CLOSED, "current": CURRENT})
        r.echo("written")
        while (seen := monitor.next_command())["command"] != "ECHO written":
            words = seen["command"].split(" ")  # keys and the words before them hold no space
            if words[0] == "EVALSHA":
                declared.update(words[3 : 3 + int(words[2])])
            elif seen["client_type"] == "lua":
                touched.add(words[1])
    assert (
        touched
        == declared
        == {
            "kpi:dso:1h:all:history",
            "kpi:dso:1h:sales:history",
            "kpi:dso:1h:all",
            "kpi:dso:1h:sales",
            "kpi:changes",
        }
    )


def test_another_prefix_renames_every_key_and_changes_nothing_else(
    kpi_env: Settings, r: redis.Redis
) -> None:
    batch = {"closed": CLOSED, "current": CURRENT, "progress": {"invoices": T0 + 0.5}}
    write(kpi_env, batch)
    default = content(r)
    r.flushdb()
    write(kpi_env, batch, keys=RedisKeys("eu:kpi"))
    assert content(r) == {"eu:" + key: value for key, value in default.items()}


def test_a_replayed_close_leaves_one_member_and_history_is_trimmed(
    kpi_env: Settings, r: redis.Redis
) -> None:
    batch = {"closed": CLOSED, "current": []}
    write(kpi_env, batch, batch, history_keep=3)
    history = content(r)["kpi:dso:1h:all:history"]
    assert [s for _m, s in history] == [float(w.start) for w in CLOSED[2:5]]
    # Unchanged newest-window hashes add no change-feed entry.
    write(kpi_env, {"closed": [], "current": CURRENT}, {"closed": [], "current": CURRENT})
    assert len(content(r)["kpi:changes"]) == len(CURRENT)


def test_a_batch_split_into_several_calls_writes_the_same(
    kpi_env: Settings, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = {"closed": CLOSED, "current": CURRENT, "progress": {"hiring": float(T0)}}
    write(kpi_env, batch)
    whole = content(r)
    r.flushdb()
    monkeypatch.setattr(redis_sink, "MAX_ARGS", 10)
    sink = make_sink(RedisConnection(kpi_env.redis_url))
    empty = ("", 0, 0, "", 0, 0, None, None, None, None)
    changes = [(f"k{i}", empty, CURRENT[0]) for i in range(len(CURRENT))]
    assert len(sink._script_calls(CLOSED, changes, "t")) > 2
    write(kpi_env, batch)
    assert content(r) == whole


def tickets(
    scope: str, start: int, final: bool, worst: tuple[tuple[str, float], ...]
) -> WindowValue:
    """A duration KPI's window: its percentiles and worst entities (SPEC version 2)."""
    seconds = [s for _id, s in worst]
    return WindowValue(
        "ticket_resolution_time",
        "1h",
        scope,
        start,
        start + HOUR,
        hour_label(start),
        sum(seconds) / len(seconds) if seconds else None,
        len(seconds),
        final,
        p50=seconds[len(seconds) // 2] if seconds else None,
        p90=seconds[0] if seconds else None,
        p99=seconds[0] if seconds else None,
        worst=worst,
    )


WORST = (("T-7", 7200.5), ("T-1", 60.0), ("T-2", 60.0))
TICKETS_CLOSED = [tickets("desk", T0, True, WORST), tickets("all", T0, True, ())]
TICKETS_CURRENT = [
    tickets("desk", T0 + HOUR, False, WORST[1:]),
    tickets("all", T0 + HOUR, False, ()),
]


def test_duration_kpis_add_percentiles_and_worst_and_the_others_stay_as_in_v1(
    kpi_env: Settings, r: redis.Redis
) -> None:
    batch = {"closed": [*CLOSED, *TICKETS_CLOSED], "current": [*CURRENT, *TICKETS_CURRENT]}
    write(kpi_env, batch)
    got = content(r)
    # The dso keys are exactly those of a batch without any duration KPI.
    r.flushdb()
    write(kpi_env, {"closed": CLOSED, "current": CURRENT})
    alone = content(r)
    assert {k: v for k, v in got.items() if "ticket" not in k and k != "kpi:changes"} == {
        k: v for k, v in alone.items() if k != "kpi:changes"
    }
    assert got["kpi:changes"][: len(CURRENT)] == alone["kpi:changes"]

    assert got["kpi:ticket_resolution_time:1h:desk"] == {
        "value": repr(60.0),
        "window_start": rfc3339(T0 + HOUR),
        "window_end": rfc3339(T0 + 2 * HOUR),
        "label": hour_label(T0 + HOUR),
        "count": "2",
        "final": "0",
        "updated_at": rfc3339(T0 + 6 * HOUR),
        "p50": "60.0",
        "p90": "60.0",
        "p99": "60.0",
        "worst": '[{"id":"T-1","seconds":60.0},{"id":"T-2","seconds":60.0}]',
    }
    empty = got["kpi:ticket_resolution_time:1h:all"]
    assert (empty["value"], empty["p50"], empty["p90"], empty["p99"], empty["worst"]) == (
        "",
        "",
        "",
        "",
        "[]",
    )
    ((member, score),) = got["kpi:ticket_resolution_time:1h:desk:history"]
    assert score == float(T0)
    assert orjson.loads(member) == {
        "window_start": rfc3339(T0),
        "window_end": rfc3339(T0 + HOUR),
        "label": hour_label(T0),
        "value": (7200.5 + 120.0) / 3,
        "count": 3,
        "p50": 60.0,
        "p90": 7200.5,
        "p99": 7200.5,
        "worst": [{"id": i, "seconds": s} for i, s in WORST],
    }
    ((member, _score),) = got["kpi:ticket_resolution_time:1h:all:history"]
    assert orjson.loads(member)["worst"] == []
    assert orjson.loads(member)["p50"] is None
    assert got["kpi:changes"][len(CURRENT) :] == [
        {
            "name": "ticket_resolution_time",
            "window": "1h",
            "scope": w.scope,
            "value": "" if w.value is None else repr(w.value),
            "window_start": rfc3339(w.start),
            "window_end": rfc3339(w.end),
            "final": "0",
            "p50": "" if w.p50 is None else repr(w.p50),
            "p90": "" if w.p90 is None else repr(w.p90),
            "p99": "" if w.p99 is None else repr(w.p99),
        }
        for w in TICKETS_CURRENT
    ]
    # Idempotent: the same batch again leaves the same keys (and no new change entries).
    r.flushdb()
    write(kpi_env, batch, batch)
    assert content(r) == got
    # Another prefix renames the keys and changes nothing else.
    r.flushdb()
    write(kpi_env, batch, keys=RedisKeys("eu:kpi"))
    assert content(r) == {"eu:" + key: value for key, value in got.items()}


def test_kpi_get_and_why_read_what_the_sink_wrote(
    kpi_env: Settings, kpi_process_env: dict[str, str]
) -> None:
    """The reader side, as a user runs it, against the real layout."""
    write(kpi_env, {"closed": TICKETS_CLOSED, "current": TICKETS_CURRENT})

    def kpi(*args: str) -> tuple[int, list[str], str]:
        done = run_kpi_in(kpi_process_env, *args)
        return done.returncode, done.stdout.splitlines(), done.stderr

    code, out, err = kpi(
        "get", "ticket_resolution_time", "-w", "1h", "-s", "desk", "--history", "1"
    )
    assert code == 0, err
    assert out[0].startswith(
        "ticket_resolution_time 1h desk: 1.0 min (p50 1.0 min, p90 1.0 min, p99 1.0 min) ["
    )
    assert out[1].endswith("(3 events) (p50 1.0 min, p90 2.0 h, p99 2.0 h)")
    code, out, err = kpi("why", "ticket_resolution_time", "-w", "1h", "-s", "desk")
    assert code == 0, err
    assert out[1:] == ["  1  T-1  1.0 min  60.000 s", "  2  T-2  1.0 min  60.000 s"]
    code, out, err = kpi(
        "why", "ticket_resolution_time", "-w", "1h", "-s", "desk", "--label", hour_label(T0)
    )
    assert code == 0, err
    assert out[0].endswith("final, 3 events]: the 3 longest")
    assert out[1:] == [
        "  1  T-7    2.0 h  7200.500 s",
        "  2  T-1  1.0 min  60.000 s",
        "  3  T-2  1.0 min  60.000 s",
    ]
    # A window without any measurement: one line, exit 1.
    code, out, err = kpi("why", "ticket_resolution_time", "-w", "1h")
    assert (code, len(out), err) == (1, 1, "")
    assert out[0].endswith("0 events]: nothing measured, no worst entities")
    # No value yet, as `kpi get`: nothing to show, exit 1, one line.
    code, out, err = kpi("why", "ticket_resolution_time", "-w", "1d")
    assert code == 1 and out == []
    assert err.startswith("kpi: no value yet for ticket_resolution_time 1d all in ")
    assert len(err.splitlines()) == 1


def test_the_script_is_loaded_again_after_redis_forgot_it(
    kpi_env: Settings, r: redis.Redis
) -> None:
    async def run() -> None:
        redis = RedisConnection(kpi_env.redis_url)
        sink = make_sink(redis)
        try:
            await sink.write(SinkBatch(closed=CLOSED[:1]))
            r.script_flush()
            await sink.write(SinkBatch(closed=CLOSED[1:2]))
        finally:
            await redis.close()

    asyncio.run(run())
    assert len(content(r)["kpi:dso:1h:all:history"]) == 2


def test_the_progress_read_waits_out_an_outage_like_the_writes(tmp_path: Path) -> None:
    """A worker that does not lead every topic reads the progress before each batch.

    With Redis down, that read is retried with backoff (the worker reports Redis unhealthy)
    and returns once Redis is back; it does not raise, which would stop the worker.
    """
    with redis_server(tmp_path / "redis") as server:
        client = server.client()
        client.hset(PROGRESS_KEY, mapping={"invoices": "1736121600.0"})
        client.close()
        server.kill(signal.SIGTERM)  # the append-only file keeps the hash
        errors: list[Exception] = []

        async def run() -> dict[str, float]:
            redis = RedisConnection(server.url, on_error=errors.append)
            try:
                reading = asyncio.ensure_future(ProgressStore(redis, KEYS).read())
                await asyncio.sleep(1.5)
                assert not reading.done()
                assert not redis.healthy
                assert errors
                await asyncio.to_thread(server.start)
                progress = await asyncio.wait_for(reading, timeout=30)
                assert redis.healthy
                return progress
            finally:
                await redis.close()

        assert asyncio.run(run()) == {"invoices": 1736121600.0}


def test_the_sink_repairs_what_redis_lost_but_not_what_it_stopped_leading(
    kpi_env: Settings, r: redis.Redis
) -> None:
    """Redis flushed: the catalog, the newest windows still led and the progress come back."""
    from streams.catalog import CATALOG

    other = WindowValue("system_uptime", "1d", "all", T0, T0 + 86400, day_label(T0), 2.0, 3, False)
    lost: list[int] = []

    async def run() -> None:
        redis = RedisConnection(kpi_env.redis_url)
        progress = ProgressStore(redis, KEYS)
        sink = RedisSink(
            redis,
            progress,
            KEYS,
            catalog=CATALOG,
            currency="EUR",
            on_lost=lambda: lost.append(1),
            loss_check_s=0.05,
        )
        try:
            await sink.start()
            for _ in range(100):
                if r.exists("kpi:catalog"):
                    break
                await asyncio.sleep(0.05)
            await sink.write(SinkBatch(CLOSED, [*CURRENT, other]))
            await progress.write({"invoices": float(T0)})
            # system_uptime is led elsewhere from now on: a repair must not write its old value.
            await sink.write(SinkBatch(retired=frozenset({"system_uptime"})))
            r.flushdb()
            for _ in range(100):
                if r.exists("kpi:catalog") and r.exists("kpi:dso:1h:all"):
                    break
                await asyncio.sleep(0.05)
            # The progress is not written again before the next one (after a commit).
            assert not r.exists(PROGRESS_KEY)
            await progress.write({"invoices": float(T0)})
        finally:
            await sink.close()
            await redis.close()

    asyncio.run(run())
    got = content(r)
    assert lost == [1]
    assert set(got["kpi:catalog"]) == {k.name for k in CATALOG}
    assert got["kpi:dso:1h:all"]["value"] == repr(0.1 + 0.2)
    assert "kpi:dso:1h:sales" in got
    assert "kpi:system_uptime:1d:all" not in got
    assert not any(key.endswith(":history") for key in got)  # history before a loss is gone
    assert got[PROGRESS_KEY] == {"invoices": repr(float(T0))}
