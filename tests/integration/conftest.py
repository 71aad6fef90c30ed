"""Integration fixtures: one real local stack per test session, an isolated namespace per test.

The stack runs on free loopback ports with its own stack dir under pytest's tmp dir, so a
session never touches a developer's `kpi stack up` (or another session running beside it).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest
import redis

from streams.config import Settings
from tooling.stack import StackInfo, free_port, stack_down, stack_up

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only those below this directory.
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class Stack:
    """The session's running stack."""

    bootstrap: str
    redis_url: str
    stack_dir: Path
    info: StackInfo

    def settings(self) -> Settings:
        """Settings that point `kpi stack ...` (and everything else) at this stack."""
        return Settings(
            kafka_bootstrap=self.bootstrap, redis_url=self.redis_url, stack_dir=str(self.stack_dir)
        )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real Kafka + Redis for the whole session, stopped at the end whatever happened."""
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=str(tmp_path_factory.mktemp("stack")),
    )
    try:
        # Inside the try: when Kafka fails to start, stack_down still stops a started Redis.
        info = stack_up(settings)
        yield Stack(settings.kafka_bootstrap, settings.redis_url, Path(settings.stack_dir), info)
    finally:
        stack_down(settings)


# Redis keys are fixed by the contract, so tests cannot share a database: each gets the next
# of 1..15 (0 is left to whoever inspects the stack by hand), flushed before use.
_redis_dbs = itertools.cycle(range(1, 16))


@pytest.fixture
def kpi_env(stack: Stack) -> Settings:
    """Settings for one test: its own topic prefix, app id, Redis database and web port."""
    tag = uuid4().hex[:8]
    db = next(_redis_dbs)
    redis_url = stack.redis_url.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return Settings(
        kafka_bootstrap=stack.bootstrap,
        redis_url=redis_url,
        topic_prefix=f"t{tag}.",
        app_id=f"kpi-test-{tag}",
        partitions=4,
        web_port=free_port(),
    )


@pytest.fixture
def kpi_process_env(kpi_env: Settings, stack: Stack) -> dict[str, str]:
    """The environment for a `kpi ...` subprocess that must see ``kpi_env``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    # Every field, so a setting added to Settings later reaches subprocesses too.
    env.update(kpi_env.environment())
    env["KPI_STACK_DIR"] = str(stack.stack_dir)
    return env
