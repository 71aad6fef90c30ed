"""The local stack is real: Kafka takes topics and messages, Redis answers, the CLI sees both."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import uuid4

import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.config import Settings
from tooling.stack import (
    free_port,
    parse_kafka_bootstrap,
    port_in_use,
    stack_down,
    stack_status,
    stack_up,
)

if TYPE_CHECKING:
    from .conftest import Stack


def _kpi(*args: str, stack: Stack, **overrides: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kpi ARGS`` against the session's stack, as a user would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    env.update(
        KPI_KAFKA_BOOTSTRAP=stack.bootstrap,
        KPI_REDIS_URL=stack.redis_url,
        KPI_STACK_DIR=str(stack.stack_dir),
    )
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "-m", "kpi", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_kafka_creates_a_topic_and_round_trips_a_message(kpi_env: Settings) -> None:
    topic = kpi_env.topic("stack-check")
    admin = AIOKafkaAdminClient(bootstrap_servers=kpi_env.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        # The broker's metadata follows the controller's a moment after the create returns.
        listed = False
        for _ in range(100):
            listed = topic in await admin.list_topics()
            if listed:
                break
            await asyncio.sleep(0.1)
        assert listed, f"{topic} not listed 10 s after it was created"
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kpi_env.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k", partition=1)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kpi_env.kafka_bootstrap,
        group_id=f"{kpi_env.app_id}-check",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        message = await consumer.getone()
    finally:
        await consumer.stop()
    assert (message.key, message.value, message.partition) == (b"k", b"hello", 1)


def test_redis_answers_and_kpi_env_gets_its_own_empty_database(kpi_env: Settings) -> None:
    client = redis.Redis.from_url(kpi_env.redis_url)
    try:
        assert client.ping()
        assert client.dbsize() == 0
        assert client.connection_pool.connection_kwargs["db"] != 0
    finally:
        client.close()


def test_status_command_shows_both_running(stack: Stack) -> None:
    result = _kpi("stack", "status", stack=stack)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["kafka", "running"], ["redis", "running"]]
    assert f"pid {stack.info.kafka.pid} " in lines[0]
    assert stack.bootstrap in lines[0]


def test_up_again_is_idempotent(stack: Stack) -> None:
    result = _kpi("stack", "up", stack=stack)
    assert result.returncode == 0, result.stderr
    assert f"kafka: already running (pid {stack.info.kafka.pid}" in result.stdout
    assert f"redis: already running (pid {stack.info.redis.pid}" in result.stdout
    kafka, redis_status = stack_status(stack.settings())
    assert (kafka.pid, redis_status.pid) == (stack.info.kafka.pid, stack.info.redis.pid)


def test_up_with_another_port_on_a_running_stack_is_refused(stack: Stack) -> None:
    other_port = free_port()
    result = _kpi("stack", "up", stack=stack, KPI_KAFKA_BOOTSTRAP=f"127.0.0.1:{other_port}")
    assert result.returncode == 2
    assert f"says {other_port}" in result.stderr
    assert "kpi stack down" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_down_stops_what_up_started_and_frees_the_ports(tmp_path: Path, stack: Stack) -> None:
    # A second stack beside the session's one: its own dir and ports.
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=str(tmp_path / f"stack-{uuid4().hex[:6]}"),
    )
    try:
        info = stack_up(settings, echo=lambda _: None)
        assert info.started == ("kafka", "redis")
    finally:
        stopped = stack_down(settings, echo=lambda _: None)
    assert stopped == ("kafka", "redis")
    assert not any(status.running for status in stack_status(settings))
    assert not port_in_use(parse_kafka_bootstrap(settings.kafka_bootstrap))
    # The session's stack is untouched.
    assert all(status.running for status in stack_status(stack.settings()))
