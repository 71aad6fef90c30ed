"""The Redis sink's batch, without Redis: what WRITE_BATCH is given, and what it makes of it.

The layout on a real redis-server is tests/integration/test_redis_sink.py; here the script's
HSET and XADD field lists are read from its text and filled from the arguments the sink
builds, so a field out of step with its argument fails without a server.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import orjson

from streams.core.records import WindowValue
from streams.core.windows import rfc3339
from streams.progress import ProgressStore
from streams.redis_client import RedisConnection
from streams.redis_keys import RedisKeys
from streams.sinks.base import SinkBatch
from streams.sinks.redis_sink import WRITE_BATCH, RedisSink, history_member

KEYS = RedisKeys()
T0 = 1_772_323_200  # 2026-03-01T00:00:00Z
DAY = 86400
MONTH = WindowValue("dso", "1mo", "all", T0, T0 + 31 * DAY, "2026-03", 41.5, 12, True)
QUARTER = WindowValue("dso", "1q", "sales", T0, T0 + 92 * DAY, "FY2027-Q1", None, 0, False)
WEEK = WindowValue("enps", "1w", "hr", T0 + DAY, T0 + 8 * DAY, "2026-W10", 25.0, 4, False)


class Recorder:
    """Stands in for the connection and the registered script: keeps every script call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[Any]]] = []

    async def transaction(self, fill: Any) -> None:
        await fill(None)

    async def script(self, *, keys: list[str], args: list[Any], client: Any) -> None:
        self.calls.append((keys, args))


def recording_sink() -> tuple[RedisSink, Recorder]:
    # Nothing connects: redis-py connects on the first command, and none is sent.
    redis = RedisConnection("redis://127.0.0.1:1/0")
    sink = RedisSink(
        redis, ProgressStore(redis, KEYS), KEYS, catalog=(), currency="USD", clock=lambda: T0
    )
    recorder = Recorder()
    sink._redis = recorder  # type: ignore[assignment]
    sink._write_batch = recorder.script  # type: ignore[assignment]
    return sink, recorder


PLAIN_LOOP = "for k = last_history + 1"
DISTRIBUTION_LOOP = "for k = last_plain + 1"


def _offsets(command: str, loop: str = PLAIN_LOOP) -> list[tuple[str, str]]:
    """``(field, what)`` pairs of one ``redis.call(COMMAND, ...)`` of a hash loop."""
    body = WRITE_BATCH[WRITE_BATCH.index(loop) :]
    body = body[: body.index("\nend\n")]
    local = {}
    for names, values in re.findall(r"local ([\w, ]+) = ([^\n]+)", body):
        local.update(zip(names.split(", "), values.split(", "), strict=True))
    call = re.search(rf"redis\.call\('{command}', (.*?)\)\n", body, re.S).group(1)  # type: ignore[union-attr]
    words = [w.strip() for w in call.replace("\n", " ").split(",")]
    start = words.index("'*'") + 1 if command == "XADD" else 1
    pairs = words[start:]
    return [(f.strip("'"), local.get(v, v)) for f, v in zip(pairs[::2], pairs[1::2], strict=True)]


def _fill(pairs: list[tuple[str, str]], args: list[Any], i: int) -> dict[str, Any]:
    """The fields a command of a hash loop writes, for the hash whose arguments start at i."""
    out = {}
    for field, what in pairs:
        if what == "updated_at":
            out[field] = args[2]
        else:
            n = re.fullmatch(r"ARGV\[i(?: \+ (\d+))?\]", what)
            assert n is not None, what
            out[field] = args[i - 1 + int(n.group(1) or 0)]  # Lua counts from 1
    return out


async def test_a_hash_holds_the_label_and_the_change_feed_keeps_version_1s_fields() -> None:
    sink, recorder = recording_sink()
    await sink.write(SinkBatch(closed=[], current=[MONTH, QUARTER, WEEK]))
    ((keys, args),) = recorder.calls
    assert keys[1:] == ["kpi:dso:1mo:all", "kpi:dso:1q:sales", "kpi:enps:1w:hr"]
    assert args[3:5] == ["0", "3"]  # no history key, three hashes without a distribution
    per_hash = (len(args) - 5) // 3
    hashes = [_fill(_offsets("HSET"), args, 6 + n * per_hash) for n in range(3)]
    feed = [_fill(_offsets("XADD"), args, 6 + n * per_hash) for n in range(3)]
    assert hashes[0] == {
        "value": "41.5",
        "window_start": "2026-03-01T00:00:00Z",
        "window_end": "2026-04-01T00:00:00Z",
        "label": "2026-03",
        "count": "12",
        "final": "1",
        "updated_at": rfc3339(T0),
    }
    assert [h["label"] for h in hashes] == ["2026-03", "FY2027-Q1", "2026-W10"]
    assert hashes[1]["value"] == ""
    # SPEC section 3: the change feed's fields, in this order, and no label.
    assert [list(f) for f in feed] == [
        ["name", "window", "scope", "value", "window_start", "window_end", "final"]
    ] * 3
    assert feed[2] == {
        "name": "enps",
        "window": "1w",
        "scope": "hr",
        "value": "25.0",
        "window_start": rfc3339(T0 + DAY),
        "window_end": rfc3339(T0 + 8 * DAY),
        "final": "0",
    }


async def test_history_members_carry_the_label_in_the_contracts_key_order() -> None:
    sink, recorder = recording_sink()
    await sink.write(SinkBatch(closed=[MONTH, QUARTER], current=[]))
    ((keys, args),) = recorder.calls
    assert keys[1:] == ["kpi:dso:1mo:all:history", "kpi:dso:1q:sales:history"]
    assert args[3:] == ["2", "0", repr(float(T0)), history_member(MONTH)] + [
        repr(float(T0)),
        history_member(QUARTER),
    ]
    assert history_member(MONTH) == (
        b'{"window_start":"2026-03-01T00:00:00Z","window_end":"2026-04-01T00:00:00Z",'
        b'"label":"2026-03","value":41.5,"count":12}'
    )
    assert list(orjson.loads(history_member(QUARTER))) == [
        "window_start",
        "window_end",
        "label",
        "value",
        "count",
    ]
    assert orjson.loads(history_member(QUARTER))["value"] is None


async def test_an_unchanged_hash_is_not_written_again() -> None:
    sink, recorder = recording_sink()
    await sink.write(SinkBatch(closed=[], current=[MONTH]))
    await sink.write(SinkBatch(closed=[], current=[MONTH]))
    assert [len(keys) for keys, _args in recorder.calls] == [2, 1]  # the feed key only


def test_a_batch_is_split_by_arguments_per_hash(monkeypatch: Any) -> None:
    from streams.sinks import redis_sink

    sink, _recorder = recording_sink()
    monkeypatch.setattr(redis_sink, "MAX_ARGS", 25)  # two hashes of ten per call
    content = ("1.0", T0, T0 + DAY, "2026-03-01", 1, 0, None, None, None, None)
    changes = [(f"kpi:dso:1d:s{n}", content, MONTH) for n in range(5)]
    calls = sink._script_calls([], changes, "t")
    assert [len(keys) - 1 for keys, _args in calls] == [2, 2, 1]
    for keys, args in calls:
        assert len(args) == 5 + 9 * (len(keys) - 1)
        assert args[5 + 3 :: 9] == ["2026-03-01"] * (len(keys) - 1)


# -- the duration KPIs: percentiles and worst entities (SPEC version 2) ---------------------

WORST = (("T-9", 86400.5), ("T-1", 3600.0), ("T-2", 3600.0))
TICKETS = WindowValue(
    "ticket_resolution_time",
    "1d",
    "helpdesk",
    T0,
    T0 + DAY,
    "2026-03-01",
    30000.25,
    3,
    False,
    p50=3600.0,
    p90=86400.5,
    p99=0.1 + 0.2,
    worst=WORST,
)
#: A duration KPI's window without any duration yet: undefined percentiles, no entity.
NO_TICKETS = WindowValue(
    "ticket_resolution_time", "1d", "desk2", T0, T0 + DAY, "2026-03-01", None, 0, True,
    worst=(),
)  # fmt: skip


async def test_a_duration_kpis_hash_adds_percentiles_and_worst_the_others_stay_as_in_v1() -> None:
    sink, recorder = recording_sink()
    await sink.write(SinkBatch(closed=[], current=[TICKETS, MONTH, NO_TICKETS]))
    ((keys, args),) = recorder.calls
    # The other KPIs' hashes first, then the duration KPIs'.
    assert keys[1:] == [
        "kpi:dso:1mo:all",
        "kpi:ticket_resolution_time:1d:helpdesk",
        "kpi:ticket_resolution_time:1d:desk2",
    ]
    assert args[3:5] == ["0", "1"]
    plain = _fill(_offsets("HSET"), args, 6)
    assert list(plain) == [
        "value",
        "window_start",
        "window_end",
        "label",
        "count",
        "final",
        "updated_at",
    ]
    assert len(args) == 5 + 9 + 13 * 2
    tickets = _fill(_offsets("HSET", DISTRIBUTION_LOOP), args, 6 + 9)
    assert tickets == {
        "value": "30000.25",
        "window_start": "2026-03-01T00:00:00Z",
        "window_end": "2026-03-02T00:00:00Z",
        "label": "2026-03-01",
        "count": "3",
        "final": "0",
        "updated_at": rfc3339(T0),
        "p50": "3600.0",
        "p90": "86400.5",
        "p99": repr(0.1 + 0.2),  # full float precision, as the value
        "worst": orjson.dumps(
            [
                {"id": "T-9", "seconds": 86400.5},
                {"id": "T-1", "seconds": 3600.0},
                {"id": "T-2", "seconds": 3600.0},
            ]
        ),
    }
    empty = _fill(_offsets("HSET", DISTRIBUTION_LOOP), args, 6 + 9 + 13)
    assert (empty["value"], empty["p50"], empty["p90"], empty["p99"]) == ("", "", "", "")
    assert empty["worst"] == b"[]"
    feed = _fill(_offsets("XADD", DISTRIBUTION_LOOP), args, 6 + 9)
    assert list(feed) == [
        "name",
        "window",
        "scope",
        "value",
        "window_start",
        "window_end",
        "final",
        "p50",
        "p90",
        "p99",
    ]
    assert (feed["name"], feed["scope"], feed["p90"]) == (
        "ticket_resolution_time",
        "helpdesk",
        "86400.5",
    )


async def test_a_duration_kpis_history_member_adds_percentiles_and_worst() -> None:
    member = orjson.loads(history_member(TICKETS))
    assert list(member) == [
        "window_start",
        "window_end",
        "label",
        "value",
        "count",
        "p50",
        "p90",
        "p99",
        "worst",
    ]
    assert (member["p50"], member["p90"], member["p99"]) == (3600.0, 86400.5, 0.1 + 0.2)
    assert member["worst"] == [{"id": i, "seconds": s} for i, s in WORST]
    empty = orjson.loads(history_member(NO_TICKETS))
    assert (empty["p50"], empty["p90"], empty["p99"], empty["worst"]) == (None, None, None, [])
    # A KPI without a distribution keeps version 1's member (checked byte for byte above).
    assert "worst" not in orjson.loads(history_member(MONTH))


async def test_a_changed_distribution_alone_is_written_again() -> None:
    sink, recorder = recording_sink()
    await sink.write(SinkBatch(closed=[], current=[TICKETS]))
    await sink.write(SinkBatch(closed=[], current=[TICKETS]))
    moved = dataclasses.replace(TICKETS, worst=(("T-9", 86400.5), ("T-3", 3600.0)))
    await sink.write(SinkBatch(closed=[], current=[moved]))
    assert [len(keys) for keys, _args in recorder.calls] == [2, 1, 2]


def test_a_batch_of_both_kinds_is_split_by_arguments_per_hash(monkeypatch: Any) -> None:
    from streams.sinks import redis_sink

    sink, _recorder = recording_sink()
    monkeypatch.setattr(redis_sink, "MAX_ARGS", 30)  # 10 per plain hash, 14 per duration hash
    plain = ("1.0", T0, T0 + DAY, "2026-03-01", 1, 0, None, None, None, None)
    dist = ("2.0", T0, T0 + DAY, "2026-03-01", 1, 0, 2.0, 2.0, 2.0, (("x", 2.0),))
    changes = [(f"kpi:dso:1d:s{n}", plain, MONTH) for n in range(3)] + [
        (f"kpi:ticket_resolution_time:1d:q{n}", dist, TICKETS) for n in range(3)
    ]
    calls = sink._script_calls([], changes, "t")
    shapes = [(args[4], len(keys) - 1) for keys, args in calls]
    # Three plain (30 args) in the first call; then two of 14, then one.
    assert shapes == [("3", 3), ("0", 2), ("0", 1)]
    written = [k for keys, _args in calls for k in keys[1:]]
    assert written == [key for key, _c, _wv in changes]
    for keys, args in calls:
        n_plain = int(args[4])
        assert len(args) == 5 + 9 * n_plain + 13 * (len(keys) - 1 - n_plain)
