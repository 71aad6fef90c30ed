"""The product's Kafka topics: names, and creating the missing ones (worker and producers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError, for_code
from aiokafka.protocol.admin import (
    CreateTopicsRequest_v1,
    CreateTopicsRequest_v2,
    CreateTopicsRequest_v3,
    CreateTopicsResponse_v3,
)
from aiokafka.protocol.api import Request, RequestStruct, Response

from schemas.errors import ConfigurationError
from streams.config import INPUT_TOPICS, Settings
from streams.kafka import error_reason, make_admin, start_reachable
from streams.logs import quiet_logger

log = logging.getLogger(__name__)

# CreateTopics and Metadata error codes this module answers in its own words.
_TOPIC_AUTHORIZATION_FAILED = 29
_CLUSTER_AUTHORIZATION_FAILED = 31
# A topic created meanwhile by someone else: not an error here.
_TOPIC_ALREADY_EXISTS = 36
_INVALID_REPLICATION_FACTOR = 38
#: ``KPI_REPLICATION_FACTOR`` for "the broker's ``default.replication.factor``".
BROKER_DEFAULT = -1
#: Longest wait for the first answer of the brokers (an address that accepts connections
#: but never answers Kafka must not hold a command for the whole ``timeout_s``).
CONNECT_TIMEOUT_S = 12.0
# On a local KRaft broker the metadata shows a new topic's leaders a few hundred ms before
# the broker accepts writes for them (measured): the pause after they appear.
_LEADER_SETTLE_S = 0.5


# CreateTopics v4 (KIP-464, Kafka 2.4) has v3's wire format but accepts -1 for the
# replication factor (and the partition count): the broker's own defaults. aiokafka 0.14
# knows v0-v3 only, so v4 is declared here; the connection picks the highest version both
# sides support (from the broker's ApiVersions answer) when the request is sent.
class CreateTopicsResponse_v4(Response):  # type: ignore[misc]
    """CreateTopics v4 response: v3's fields."""

    API_KEY = 19
    API_VERSION = 4
    SCHEMA = CreateTopicsResponse_v3.SCHEMA


class CreateTopicsRequest_v4(RequestStruct):  # type: ignore[misc]
    """CreateTopics v4 request: v3's fields, -1 allowed as the replication factor."""

    API_KEY = 19
    API_VERSION = 4
    RESPONSE_TYPE = CreateTopicsResponse_v4
    SCHEMA = CreateTopicsRequest_v3.SCHEMA


# The versions this request may be sent as, lowest first (aiokafka reads them from the base).
_CreateTopicsStruct: TypeAlias = (
    CreateTopicsRequest_v1
    | CreateTopicsRequest_v2
    | CreateTopicsRequest_v3
    | CreateTopicsRequest_v4
)


class CreateTopics(Request[_CreateTopicsStruct]):  # type: ignore[misc]
    """CreateTopics at the highest version the broker supports, v1 to v4.

    A replication factor of -1 needs v4: on an older broker ``build`` raises
    ``IncompatibleBrokerVersion`` (aiokafka's way of refusing a request a version cannot
    carry).
    """

    API_KEY = 19

    def __init__(self, topics: list[tuple[Any, ...]], timeout_ms: int) -> None:
        self.topics = topics
        self.timeout_ms = timeout_ms

    def build(self, request_struct_class: type[Any]) -> Any:
        """The request struct of the negotiated version."""
        version = request_struct_class.API_VERSION
        if version < 4 and any(t[2] == BROKER_DEFAULT for t in self.topics):
            msg = f"a replication factor of -1 needs CreateTopics v4, not v{version}"
            raise IncompatibleBrokerVersion(msg)
        return request_struct_class(
            create_topic_requests=self.topics, timeout=self.timeout_ms, validate_only=False
        )


def changelog_topic(settings: Settings, topic: str) -> str:
    """The compacted changelog that holds the state of one input topic's partitions."""
    return settings.topic(f"{settings.app_id}-{topic}-changelog")


def published_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The topics events are published to: the inputs (all a publisher needs and may see)."""
    return {settings.topic(t): {} for t in INPUT_TOPICS}


def product_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the worker reads or writes, with its configuration."""
    topics = published_topics(settings)
    topics[settings.dead_letter_topic] = {}
    for t in INPUT_TOPICS:
        topics[changelog_topic(settings, t)] = {
            "cleanup.policy": "compact",
            "min.cleanable.dirty.ratio": "0.1",
            "segment.ms": "600000",
        }
    return topics


@dataclass(frozen=True)
class EnsuredTopics:
    """What ``ensure_topics`` found and did."""

    #: Every wanted topic's partition count.
    partitions: dict[str, int]
    #: The topics this call created (not those another process created meanwhile).
    created: list[str]


async def ensure_topics(
    settings: Settings,
    topics: Mapping[str, Mapping[str, str]] | None = None,
    *,
    timeout_s: float = 25.0,
) -> EnsuredTopics:
    """Create the missing ones of ``topics`` (name -> config; default: every product topic).

    New topics get ``KPI_PARTITIONS`` partitions and ``KPI_REPLICATION_FACTOR`` replicas
    (default: the broker's ``default.replication.factor``); ``min.insync.replicas`` and
    every other setting not in the config are the broker's. Existing topics keep their
    partition count (the worker adapts to it). A topic created meanwhile by another process
    is not an error. Returns once the metadata shows every wanted topic with a leader for
    each partition. ``ConfigurationError`` (one line) when Kafka is unreachable, refuses a
    topic, or does not show them led within ``timeout_s``.
    """
    if topics is None:
        topics = product_topics(settings)
    wanted = {name: dict(config) for name, config in topics.items()}
    connect_s = min(timeout_s, CONNECT_TIMEOUT_S)
    admin = make_admin(settings, client_id="kpi-admin", request_timeout_ms=int(timeout_s * 1000))
    # aiokafka logs each failed connection attempt; the error below says it in one line.
    await start_reachable(settings, admin, connect_s, ConfigurationError)
    with quiet_logger("aiokafka"):
        try:
            existing = set(await admin.list_topics())
            missing = {n: wanted[n] for n in wanted if n not in existing}
            created = await _create(admin, settings, missing, timeout_s)
            partitions = await _wait_for_leaders(admin, list(wanted), bool(created), timeout_s)
            return EnsuredTopics(partitions, created)
        except KafkaError as exc:
            msg = f"cannot create topics on {settings.kafka_bootstrap}: {error_reason(exc)}"
            raise ConfigurationError(msg) from exc
        finally:
            await admin.close()


async def _create(
    admin: AIOKafkaAdminClient,
    settings: Settings,
    missing: dict[str, dict[str, str]],
    timeout_s: float,
) -> list[str]:
    if not missing:
        return []
    request = CreateTopics(
        [
            (name, settings.partitions, settings.replication_factor, [], list(config.items()))
            for name, config in missing.items()
        ],
        timeout_ms=int(timeout_s * 1000),
    )
    try:
        # As AIOKafkaAdminClient.create_topics sends its (v0-v3) request: to the controller.
        response = await admin._send_to_controller(request)
    except IncompatibleBrokerVersion:
        msg = (
            f"the Kafka at {settings.kafka_bootstrap} predates CreateTopics v4 (Kafka 2.4) and"
            " cannot give new topics its default replication factor: set"
            " KPI_REPLICATION_FACTOR to the number of replicas"
        )
        raise ConfigurationError(msg) from None
    created = []
    for topic, code, message in response.topic_errors:
        if code == 0:
            created.append(topic)
        elif code != _TOPIC_ALREADY_EXISTS:
            raise ConfigurationError(create_error(topic, code, message, settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    return created


def create_error(topic: str, code: int, message: str | None, settings: Settings) -> str:
    """The one line for a topic the broker refused to create (error ``code``, ``message``)."""
    said = f" (Kafka: {message.strip()})" if message and message.strip() else ""
    if code in (_TOPIC_AUTHORIZATION_FAILED, _CLUSTER_AUTHORIZATION_FAILED):
        # The broker's own words ("Authorization failed.") add nothing.
        reason = (
            "not authorized (the user needs CREATE on the topic, or create it beforehand"
            " and grant DESCRIBE on it)"
        )
    elif code == _INVALID_REPLICATION_FACTOR:
        factor = settings.replication_factor
        given = "the broker's default" if factor == BROKER_DEFAULT else str(factor)
        reason = f"replication factor {given} (KPI_REPLICATION_FACTOR) refused{said}"
    else:
        reason = f"{for_code(code).message} (error code {code}){said}"
    return f"cannot create topic {topic}: {reason}"


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, topics: list[str], created: bool, timeout_s: float
) -> dict[str, int]:
    """Every topic's partition count, once the metadata shows each partition with a leader.

    A new topic's partitions get leaders a moment after CreateTopics returns, and an
    existing one may be without a leader for a while (its broker restarting, a topic another
    process just created): producing then works (aiokafka retries) but logs a
    NotLeaderForPartition warning per batch, and a consumer waits. So every topic is waited
    for, up to ``timeout_s``.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    waited = created
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
        refused = sorted(
            d["topic"] for d in described if d["error_code"] == _TOPIC_AUTHORIZATION_FAILED
        )
        if refused:
            msg = (
                f"cannot see topic {', '.join(refused)}: not authorized (the user needs"
                " DESCRIBE on the topic)"
            )
            raise ConfigurationError(msg)
        counts = {d["topic"]: len(d["partitions"]) for d in described if d.get("partitions")}
        led = {
            d["topic"]
            for d in described
            if d["error_code"] == 0
            and d["partitions"]
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in d["partitions"])
        }
        if led >= set(topics):
            if waited:
                await asyncio.sleep(_LEADER_SETTLE_S)
            return counts
        if asyncio.get_running_loop().time() >= deadline:
            waiting = sorted(set(topics) - led)
            msg = f"Kafka shows no leaders for {', '.join(waiting)} after {timeout_s:g} s"
            raise ConfigurationError(msg)
        waited = True
        await asyncio.sleep(0.1)


async def create_published_topics(settings: Settings) -> list[str]:
    """For the producers: create the input and dead-letter topics if missing; return those."""
    return (await ensure_topics(settings, published_topics(settings), timeout_s=15.0)).created
