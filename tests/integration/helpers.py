"""Helpers for integration tests: a worker subprocess, publishing, polling."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.config import Settings
from streams.kafka import client_options, seek_to_start
from tooling.stack_secure import SecureFiles, read_secret

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def wait_until(check: Callable[[], T], timeout_s: float = 60.0, interval_s: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout_s
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last: {last!r})")
        time.sleep(interval_s)
        last = check()
    return last


def process_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    env.update(settings.environment())
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Worker:
    """``kpi worker`` as a real subprocess, with its log in a file."""

    def __init__(
        self, settings: Settings, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        # The process's environment (default: every field of ``settings``).
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kpi", "worker"],
            cwd=REPO,
            env=self.env if self.env is not None else process_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._web_up, timeout_s=60)
        return self

    def _web_up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}: {self.log()[-3000:]}")
        try:
            return httpx.get(self.url("/health"), timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def publish(settings: Settings, messages: Sequence[tuple[str, int, Any]]) -> None:
    """Send (logical topic, partition, payload dict or raw bytes) in order, acks=all."""

    async def run() -> None:
        producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for topic, partition, payload in messages:
                raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                await producer.send(settings.topic(topic), raw, key=b"k", partition=partition)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


def read_topic(settings: Settings, topic: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every message of a (prefixed) topic, decoded from JSON."""

    async def run() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(
            **client_options(settings), group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
            consumer.assign(tps)
            await seek_to_start(consumer, tps)
            ends = await consumer.end_offsets(tps)
            out: list[dict[str, Any]] = []
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    break
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    out.extend(orjson.loads(r.value) for r in records)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(run())


def stack_passwords(stack_dir: Path) -> list[str]:
    """Every password of the secure stack in ``stack_dir`` (Kafka and Redis users)."""
    secrets = SecureFiles.at(stack_dir).secrets
    return [read_secret(p) for p in sorted(secrets.glob("*.password"))]


def logs_holding(passwords: list[str], root: Path) -> list[str]:
    """The log files under ``root`` that contain one of ``passwords``.

    Logs: files named ``*.log`` or ``*.log.<n>`` or in a ``logs`` directory, but not Kafka's
    partition segments (``*.log`` in its data directory, the messages themselves).
    """
    assert passwords
    leaks = []
    for path in root.rglob("*"):
        is_log = path.suffix == ".log" or ".log." in path.name or path.parent.name == "logs"
        if not path.is_file() or not is_log or "data" in path.relative_to(root).parts:
            continue
        text = path.read_text(errors="replace")
        leaks += [f"{path} holds password #{i}" for i, p in enumerate(passwords) if p in text]
    return leaks


def hour_label(t: float) -> str:
    """The label of the UTC ``1h`` window starting at ``t`` (default calendar)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H")


def day_label(t: float) -> str:
    """The label of the UTC ``1d`` window starting at ``t`` (default calendar)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")
