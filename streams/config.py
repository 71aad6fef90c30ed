"""Process configuration: one frozen settings object, read from ``KPI_*`` environment variables."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from schemas.errors import ConfigurationError
from streams.kpis.sla import (
    DEFAULT_INCIDENT_SLA,
    DEFAULT_TICKET_SLA,
    INCIDENT_SEVERITIES,
    TICKET_PRIORITIES,
    parse_slas,
)

#: Names of the input topics, before the prefix is applied (SPEC section 1).
INPUT_TOPICS: tuple[str, ...] = ("invoices", "hiring", "incidents")
DEAD_LETTER_TOPIC = "kpi.dead-letter"
#: The ledger of ``kpi dlq replay``: one compacted record per dead letter it replayed.
REPLAYED_TOPIC = "kpi.dead-letter.replayed"

#: The settings that hold secrets: each can also be given as a file, ``KPI_<NAME>_FILE``
#: holding its path (SPEC section 6), as container secrets are mounted.
SECRET_SETTINGS: tuple[str, ...] = (
    "kafka_sasl_username",
    "kafka_sasl_password",
    "redis_url",
    "web_token",
)
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class SecretFiles(PydanticBaseSettingsSource):
    """``KPI_<NAME>_FILE`` for the secret settings: the file's content, without the final newline.

    Giving both ``KPI_<NAME>`` and ``KPI_<NAME>_FILE`` is an error (which one would win is
    not obvious to whoever set them), as is a file that cannot be read.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: ``__call__`` reads every secret file at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The secrets given as files."""
        values: dict[str, Any] = {}
        for name in SECRET_SETTINGS:
            variable = f"KPI_{name.upper()}"
            path = os.environ.get(f"{variable}_FILE")
            if not path:
                continue
            if os.environ.get(variable):
                msg = f"bad setting {variable}: give {variable} or {variable}_FILE, not both"
                raise ConfigurationError(msg)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                msg = f"bad setting {variable}_FILE: cannot read {path}: {reason}"
                raise ConfigurationError(msg) from None
            values[name] = text.rstrip("\r\n")
        return values


def _is_zone(name: str) -> bool:
    """Whether ``name`` is a time zone the machine's tz database knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _readable(variable: str, path: str) -> None:
    if not path:
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        msg = f"bad setting {variable}: cannot read {path}: {exc.strerror}"
        raise ConfigurationError(msg) from None


class Settings(BaseSettings):
    """Everything a process of the product can be configured with (SPEC section 5)."""

    # An empty variable counts as unset: `export KPI_REDIS_URL=` lets KPI_REDIS_URL_FILE (or
    # the default) apply.
    model_config = SettingsConfigDict(
        env_prefix="KPI_", frozen=True, extra="ignore", env_ignore_empty=True
    )

    kafka_bootstrap: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    topic_prefix: str = ""
    app_id: str = "backoffice-kpi"
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    #: The business time zone of the calendar windows (an IANA name, SPEC section 2).
    timezone: str = "UTC"
    #: The first month of the fiscal year (``1q``, ``1y``).
    fiscal_year_start: int = Field(default=1, ge=1, le=12)
    grace_seconds: int = Field(default=3600, ge=0)
    #: Resolution SLAs by ticket priority and incident severity (``streams/kpis/sla.py``).
    ticket_sla: str = DEFAULT_TICKET_SLA
    incident_sla: str = DEFAULT_INCIDENT_SLA
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
    #: ``/readyz`` is 503 while more input messages than this wait in the worker's
    #: partitions (it has not caught up, after a restart or a backlog).
    ready_max_lag: int = Field(default=10_000, ge=0)
    #: Log format of ``kpi worker``: ``text`` (the default) or ``json`` (one object a line).
    log_format: Literal["text", "json"] = "text"
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
    #: Prefix of every Redis key the product writes (``<prefix>:catalog``, ...), so that
    #: instances can share one Redis database.
    redis_prefix: str = Field(default="kpi", pattern=r"^[^\s*?\[\]]+$")
    #: Replication of the topics the product creates; -1: the broker's
    #: ``default.replication.factor``.
    replication_factor: int = -1

    # Kafka security (SPEC section 6).
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    #: PEM files: the CA to trust (empty: the system's), and a client certificate and key
    #: for mutual TLS.
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    #: The CA (PEM) that signed the certificate of a ``rediss://`` Redis (empty: the system's).
    redis_ssl_cafile: str = ""
    #: A YAML file of KPI targets overriding the built-in ones (``streams/targets.py``);
    #: empty: the built-in targets.
    targets_file: str = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``KPI_*`` variables, then ``KPI_<SECRET>_FILE`` files."""
        return (init_settings, env_settings, SecretFiles(settings_cls))

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if not _is_zone(value):
            msg = f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Berlin)"
            raise ValueError(msg)
        return value

    @field_validator("ticket_sla")
    @classmethod
    def _ticket_sla(cls, value: str) -> str:
        parse_slas(value, TICKET_PRIORITIES, DEFAULT_TICKET_SLA)
        return value

    @field_validator("incident_sla")
    @classmethod
    def _incident_sla(cls, value: str) -> str:
        parse_slas(value, INCIDENT_SEVERITIES, DEFAULT_INCIDENT_SLA)
        return value

    @field_validator("targets_file")
    @classmethod
    def _targets_file(cls, value: str) -> str:
        if value:
            # Checked here, so a bad file stops every command at start, before any connection.
            from streams.catalog import CATALOG
            from streams.targets import load_targets

            load_targets(value, CATALOG)
        return value

    def ticket_slas(self) -> dict[str, float]:
        """Seconds allowed to resolve a ticket, per priority."""
        return parse_slas(self.ticket_sla, TICKET_PRIORITIES, DEFAULT_TICKET_SLA)

    def incident_slas(self) -> dict[str, float]:
        """Seconds allowed to resolve an incident, per severity."""
        return parse_slas(self.incident_sla, INCIDENT_SEVERITIES, DEFAULT_INCIDENT_SLA)

    @field_validator("replication_factor")
    @classmethod
    def _replication(cls, value: int) -> int:
        if value == -1 or 1 <= value <= 32767:
            return value
        msg = "-1 (the broker's default) or a number of replicas from 1"
        raise ValueError(msg)

    @field_validator("kafka_sasl_mechanism", mode="before")
    @classmethod
    def _mechanism(cls, value: Any) -> Any:
        return value or None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism is None:
                msg = (
                    f"bad setting KPI_KAFKA_SASL_MECHANISM: {protocol} needs one of"
                    " PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
                )
                raise ConfigurationError(msg)
            if not self.kafka_sasl_username or not self.kafka_sasl_password.get_secret_value():
                msg = (
                    f"bad setting KPI_KAFKA_SASL_USERNAME: {protocol} needs"
                    " KPI_KAFKA_SASL_USERNAME and KPI_KAFKA_SASL_PASSWORD (or their _FILE)"
                )
                raise ConfigurationError(msg)
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            msg = (
                "bad setting KPI_KAFKA_SSL_CERTFILE: mutual TLS needs both"
                " KPI_KAFKA_SSL_CERTFILE and KPI_KAFKA_SSL_KEYFILE"
            )
            raise ConfigurationError(msg)
        if protocol in ("SSL", "SASL_SSL"):
            _readable("KPI_KAFKA_SSL_CAFILE", self.kafka_ssl_cafile)
            _readable("KPI_KAFKA_SSL_CERTFILE", self.kafka_ssl_certfile)
            _readable("KPI_KAFKA_SSL_KEYFILE", self.kafka_ssl_keyfile)
        if self.redis_ssl_cafile:
            if not self.redis_url.startswith("rediss://"):
                msg = "bad setting KPI_REDIS_SSL_CAFILE: KPI_REDIS_URL is not a rediss:// (TLS) URL"
                raise ConfigurationError(msg)
            _readable("KPI_REDIS_SSL_CAFILE", self.redis_ssl_cafile)
        return self

    def __repr_args__(self) -> Any:
        # Settings may be logged: the Redis URL's password is shown as ***.
        for name, value in super().__repr_args__():
            yield name, shown_url(value) if name == "redis_url" else value

    def redis_options(self) -> dict[str, Any]:
        """The ``redis.asyncio.from_url`` options this deployment needs (TLS)."""
        if self.redis_ssl_cafile:
            return {"ssl_ca_certs": self.redis_ssl_cafile}
        return {}

    def environment(self) -> dict[str, str]:
        """Every setting as the ``KPI_*`` variables that give it, secrets included.

        For starting another process of the product with the same settings.
        """
        env = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"KPI_{name.upper()}"] = "" if value is None else str(value)
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

    @property
    def replayed_topic(self) -> str:
        """The replay ledger topic (``kpi dlq replay``), prefixed."""
        return self.topic(REPLAYED_TOPIC)


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


# -- the settings each command reads, for its --help ------------------------------------------


def kafka_settings() -> tuple[str, ...]:
    """The settings of a Kafka client: the ``kafka_*`` fields (address, security)."""
    return tuple(name for name in Settings.model_fields if name.startswith("kafka_"))


def redis_settings() -> tuple[str, ...]:
    """The settings of a Redis client: the ``redis_*`` fields (URL, key prefix, TLS CA)."""
    return tuple(name for name in Settings.model_fields if name.startswith("redis_"))


def setting_variables(*names: str) -> tuple[str, ...]:
    """The ``KPI_*`` variables that give the settings ``names`` (every setting without any).

    A secret's ``KPI_<NAME>_FILE`` follows its ``KPI_<NAME>``. A name that is no field of
    ``Settings`` is a ``ValueError``: a command's help cannot list a variable nothing reads.
    """
    fields = Settings.model_fields
    unknown = [name for name in names if name not in fields]
    if unknown:
        msg = f"not settings: {', '.join(unknown)}"
        raise ValueError(msg)
    variables: list[str] = []
    for name in dict.fromkeys(names or fields):
        variables.append(f"KPI_{name.upper()}")
        if name in SECRET_SETTINGS:
            variables.append(f"KPI_{name.upper()}_FILE")
    return tuple(variables)


def environment_help(*names: str) -> str:
    """A command's help epilog: the ``KPI_*`` variables it reads (``setting_variables``)."""
    return f"Environment: {', '.join(setting_variables(*names))} (README, 'Configuration')."
