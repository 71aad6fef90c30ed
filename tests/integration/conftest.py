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
from tooling.stack import (
    StackInfo,
    free_port,
    provision,
    role_settings,
    stack_down,
    stack_environment,
    stack_up,
)
from tooling.stack_secure import ClientRole

from .helpers import logs_holding, stack_passwords

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


# --- the secure stack -------------------------------------------------------------------------

#: The variables that say how to reach Kafka and Redis: a role's own replace them.
_CONNECTION_VARIABLES = (
    "KPI_KAFKA_BOOTSTRAP",
    "KPI_KAFKA_SECURITY_PROTOCOL",
    "KPI_KAFKA_SASL_MECHANISM",
    "KPI_KAFKA_SASL_USERNAME",
    "KPI_KAFKA_SASL_PASSWORD",
    "KPI_KAFKA_SSL_CAFILE",
    "KPI_KAFKA_SSL_CERTFILE",
    "KPI_KAFKA_SSL_KEYFILE",
    "KPI_REDIS_URL",
    "KPI_REDIS_SSL_CAFILE",
)


@dataclass(frozen=True)
class SecureStack:
    """The session's running secure stack (``kpi stack up --secure``)."""

    #: The settings it was started with (its ports and stack dir; no namespace).
    base: Settings
    info: StackInfo

    @property
    def stack_dir(self) -> Path:
        """Its stack directory (certificates in ``tls/``, passwords in ``secrets/``)."""
        return Path(self.base.stack_dir)

    def namespace(self, db: int, **overrides: object) -> Settings:
        """A fresh namespace (topic prefix, app id, Redis database ``db``), provisioned.

        Its topics exist and the worker and the publisher have their ACLs on them, as
        ``kpi stack up --secure`` leaves them for the configured namespace. The settings
        themselves are the administrator's connection-less view: give them to
        ``as_role`` or ``process_env``.
        """
        tag = uuid4().hex[:8]
        redis_url = self.base.redis_url.rsplit("/", 1)[0] + f"/{db}"
        values: dict[str, object] = {
            "kafka_bootstrap": self.base.kafka_bootstrap,
            "redis_url": redis_url,
            "stack_dir": self.base.stack_dir,
            "topic_prefix": f"s{tag}.",
            "app_id": f"kpi-secure-{tag}",
            "partitions": 4,
            "web_port": free_port(),
            **overrides,
        }
        settings = Settings(**values)  # type: ignore[arg-type]
        provision(settings, echo=lambda _: None)
        admin = redis.Redis.from_url(**_redis_kwargs(self.as_role(settings, "admin")))
        try:
            admin.flushdb()
        finally:
            admin.close()
        return settings

    def as_role(self, settings: Settings, role: ClientRole, *, mtls: bool = False) -> Settings:
        """``settings`` connecting as ``role`` (in-process clients)."""
        return role_settings(settings, role, mtls=mtls)

    def process_env(
        self, settings: Settings, role: ClientRole, *, mtls: bool = False
    ) -> dict[str, str]:
        """The environment of a `kpi ...` subprocess running as ``role`` in ``settings``.

        The role's connection variables come from `kpi stack env` (secrets as ``*_FILE``).
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
        env.update(settings.environment())
        for name in _CONNECTION_VARIABLES:
            env.pop(name, None)
        env.update(stack_environment(settings, role, mtls=mtls))
        env["KPI_STACK_DIR"] = str(self.stack_dir)
        return env


def _redis_kwargs(settings: Settings) -> dict[str, object]:
    return {"url": settings.redis_url, **settings.redis_options()}


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    """A real secure Kafka + Redis (TLS, SASL, mTLS, ACLs) for the session, stopped at the end."""
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=str(tmp_path_factory.mktemp("secure-stack")),
    )
    try:
        info = stack_up(settings, secure=True)
        yield SecureStack(settings, info)
    finally:
        stack_down(settings)
    # Last: every log this test session wrote (the stack's, the workers', the commands')
    # holds none of the secure stack's passwords.
    leaks = logs_holding(stack_passwords(Path(settings.stack_dir)), tmp_path_factory.getbasetemp())
    assert not leaks, f"passwords in logs: {leaks}"


_secure_dbs = itertools.cycle(range(1, 16))


@pytest.fixture
def secure_env(secure_stack: SecureStack) -> Settings:
    """A provisioned namespace of the secure stack for one test (see ``SecureStack.namespace``)."""
    return secure_stack.namespace(next(_secure_dbs))
