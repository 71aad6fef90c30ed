"""``kpi publish FILE`` against the real stack: every row back on its topic, keyed, in order."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from producers.simulator import CompanySimulator
from schemas import MODEL_OF_TYPE
from streams.config import Settings
from tests.integration.helpers import REPO

pytestmark = pytest.mark.integration

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def simulated_rows(count: int) -> list[dict[str, Any]]:
    """Clean events of all three topics; a small workforce so hiring is not all hires."""
    clock = START + 30 * 86400
    sim = CompanySimulator(23, START, clock=lambda: clock, initial_headcount=5)
    rows = []
    for emission in sim:
        assert isinstance(emission.payload, dict)
        rows.append(emission.payload)
        if len(rows) == count:
            return rows
    raise AssertionError("the simulator ran dry")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> list[bytes]:
    lines = [orjson.dumps(row) for row in rows]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return lines


def kpi_publish(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kpi", "publish", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def read_back(settings: Settings) -> list[Any]:
    """Every record of the prefixed input and dead-letter topics that exist, to their end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        existing = await consumer.topics()
        topics = [t for t in (*settings.input_topics, settings.dead_letter_topic) if t in existing]
        # `kpi publish` creates the topics with KPI_PARTITIONS partitions.
        partitions = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        # The publisher waited for acks=all: the end offsets are final, no timeout to guess.
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def test_publish_file_routes_every_row_to_its_topic_and_key(
    kpi_env: Settings, kpi_process_env: dict[str, str], tmp_path: Path
) -> None:
    rows = simulated_rows(100)
    lines = write_jsonl(tmp_path / "events.jsonl", rows)
    assert {row["type"] for row in rows} >= {"employee.hired", "invoice.received", "ticket.opened"}

    done = kpi_publish(kpi_process_env, str(tmp_path / "events.jsonl"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read 100 rows" in done.stdout and "published 100" in done.stdout
    assert done.stderr == ""

    records = asyncio.run(read_back(kpi_env))
    expected = []
    for row, line in zip(rows, lines, strict=True):
        model = MODEL_OF_TYPE[row["type"]]
        expected.append((kpi_env.topic(model.topic), row[model.key_field].encode(), line))
    assert Counter((r.topic, r.key, r.value) for r in records) == Counter(expected)
    by_topic = Counter(topic for topic, _, _ in expected)
    assert f"published by topic: hiring {by_topic[kpi_env.topic('hiring')]:,}" in done.stdout
    # Each partition holds its rows in file order, so every entity's lifecycle is in order.
    received: dict[tuple[str, int], list[bytes]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.offset):
        received[r.topic, r.partition].append(r.value)
    order = {line: n for n, line in enumerate(lines)}
    for values in received.values():
        assert [order[v] for v in values] == sorted(order[v] for v in values)


def test_a_bad_row_publishes_nothing_and_exits_1(
    kpi_env: Settings, kpi_process_env: dict[str, str], tmp_path: Path
) -> None:
    rows = simulated_rows(50)
    rows[36] = {**rows[36], "occurred_at": "2026-01-01 09:00:00"}  # naive: schema
    write_jsonl(tmp_path / "events.jsonl", rows)

    done = kpi_publish(kpi_process_env, str(tmp_path / "events.jsonl"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(f"{tmp_path / 'events.jsonl'}:37: schema: occurred_at: ")
    assert "1 of 50 rows" in done.stdout and "nothing published" in done.stdout
    assert asyncio.run(read_back(kpi_env)) == []


def test_missing_file_is_one_line_exit_2(kpi_process_env: dict[str, str], tmp_path: Path) -> None:
    done = kpi_publish(kpi_process_env, str(tmp_path / "nope.csv"))
    assert done.returncode == 2
    assert done.stderr == f"kpi: error: cannot read {tmp_path / 'nope.csv'}: no such file\n"
