"""Process configuration: one frozen settings object, read from ``KPI_*`` environment variables."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Names of the input topics, before the prefix is applied (SPEC section 1).
INPUT_TOPICS: tuple[str, ...] = ("invoices", "hiring", "incidents")
DEAD_LETTER_TOPIC = "kpi.dead-letter"


class Settings(BaseSettings):
    """Everything a process of the product can be configured with (SPEC section 5)."""

    model_config = SettingsConfigDict(env_prefix="KPI_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    topic_prefix: str = ""
    app_id: str = "backoffice-kpi"
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    grace_seconds: int = Field(default=3600, ge=0)
    partitions: int = Field(default=8, ge=1, le=1024)
    web_port: int = Field(default=6066, ge=0, le=65535)
    #: The address the worker's HTTP server binds (``0.0.0.0`` for every interface, as
    #: in a container).
    web_host: str = "127.0.0.1"
    #: When set, ``/kpis`` requires ``Authorization: Bearer <token>``; ``/metrics`` and
    #: ``/health`` stay open.
    web_token: SecretStr = SecretStr("")
    #: Where ``kpi stack`` keeps its data, logs and pid files.
    stack_dir: str = ".stack"
    #: ``/health`` turns unhealthy when input is waiting (lag > 0) but no batch has completed
    #: for this many seconds.
    stall_seconds: float = Field(default=60.0, gt=0)
    #: Cardinality guard: at most this many distinct values per dimension (per input
    #: partition); events bringing more are dead-lettered with reason ``cardinality``.
    max_dimension_values: int = Field(default=1000, ge=1)
    #: Close windows without partitions that received nothing for this many wall-clock
    #: seconds (0 = off, the default: exact, a quiet partition holds windows open).
    idle_partition_seconds: float = Field(default=0.0, ge=0)
    #: Restrict the worker to some KPIs / windows (comma-separated; empty = all). For
    #: benchmarks and focused deployments.
    only_kpis: str = ""
    only_windows: str = ""

    def environment(self) -> dict[str, str]:
        """Every setting as the ``KPI_*`` variables that give it, secrets included.

        For starting another process of the product with the same settings.
        """
        env = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"KPI_{name.upper()}"] = str(value)
        return env

    def topic(self, name: str) -> str:
        """The full name of one of the product's topics, with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    @property
    def input_topics(self) -> tuple[str, ...]:
        """The three input topics, prefixed."""
        return tuple(self.topic(t) for t in INPUT_TOPICS)

    @property
    def dead_letter_topic(self) -> str:
        """The dead-letter topic, prefixed."""
        return self.topic(DEAD_LETTER_TOPIC)


def shown_url(url: str) -> str:
    """A URL as logs and messages may show it: the password, if any, as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def bearer_allowed(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries the bearer ``token`` (no token: yes)."""
    if not token:
        return True
    if authorization is None or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[len("Bearer ") :].encode(), token.encode())
