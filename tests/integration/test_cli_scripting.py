"""``kpi get/watch --json`` and the exit codes against a real redis-server (README, "Scripting").

Only Redis is needed: the windows are written by the worker's own Redis sink.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.core.records import WindowValue
from streams.progress import ProgressStore
from streams.redis_client import RedisConnection
from streams.redis_keys import RedisKeys
from streams.sinks.base import SinkBatch
from streams.sinks.redis_sink import RedisSink
from tests.cli import interruptible, run_kpi_in
from tests.integration.chaos import redis_server

T0 = 1_772_323_200  # 2026-03-01T00:00:00Z
MONTH_END = 1_775_001_600  # 2026-04-01T00:00:00Z
FEB = 1_769_904_000  # 2026-02-01T00:00:00Z
DSO = 45 + 1 / 3  # misses its target (at most 45 days); not a short decimal


def write(url: str) -> None:
    """dso 1mo: February closed, March open, as the worker writes them."""

    async def run() -> None:
        redis = RedisConnection(url)
        keys = RedisKeys()
        sink = RedisSink(redis, ProgressStore(redis, keys), keys, catalog=(), currency="USD")
        try:
            closed = WindowValue("dso", "1mo", "all", FEB, T0, "2026-02", 39.25, 101, True)
            current = WindowValue("dso", "1mo", "all", T0, MONTH_END, "2026-03", DSO, 118, False)
            await sink.write(SinkBatch([closed], [current]))
        finally:
            await sink.close()
            await redis.close()

    asyncio.run(run())


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with redis_server(tmp_path / "redis", persistent=False) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        write(url)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
        environment.update(KPI_REDIS_URL=url, KPI_STACK_DIR=str(tmp_path / "stack"))
        yield environment


def test_get_json_pipes_into_a_json_tool(env: dict[str, str]) -> None:
    done = run_kpi_in(env, "get", "--all", "--json")
    assert done.returncode == 0, done.stderr
    # The done-when: `kpi get --all --json | python -m json.tool` works.
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"],
        input=done.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tool.returncode == 0, tool.stderr
    document = json.loads(tool.stdout)
    month = next(v for v in document["values"] if (v["name"], v["window"]) == ("dso", "1mo"))
    assert (month["value"], month["verdict"], month["label"]) == (DSO, "misses", "2026-03")
    assert month["window_start"] == "2026-03-01T00:00:00Z"

    done = run_kpi_in(env, "get", "dso", "-w", "1mo", "--history", "5", "--json")
    assert done.returncode == 0, done.stderr
    one = json.loads(done.stdout)
    assert one["value"] == DSO and one["count"] == 118 and one["final"] is False
    assert [(h["label"], h["value"], h["verdict"]) for h in one["history"]] == [
        ("2026-02", 39.25, "meets")
    ]


@pytest.mark.parametrize("as_json", [False, True])
def test_no_value_yet_is_exit_1_and_one_line(env: dict[str, str], as_json: bool) -> None:
    done = run_kpi_in(env, "get", "dso", "-w", "1d", *(["--json"] if as_json else []))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"kpi: no value yet for dso 1d all in {env['KPI_REDIS_URL']}\n"


def test_watch_json_prints_a_line_per_redraw_and_ctrl_c_is_130(env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpi", "watch", "--json", "-n", "0.2", "-w", "1mo"],
        env=env,
        preexec_fn=interruptible,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    documents = [json.loads(line) for line in lines + rest.splitlines()]
    assert len(documents) >= 3
    for document in documents:
        (month,) = (v for v in document["values"] if v["name"] == "dso")
        assert month["value"] == DSO
    stamps = [document["read_at"] for document in documents]
    assert stamps == sorted(stamps)
