"""The product's Kafka topics: names, and creating the missing ones (worker and producers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from schemas.errors import ConfigurationError
from streams.config import INPUT_TOPICS, Settings
from streams.kafka import error_reason, make_admin

log = logging.getLogger(__name__)

# CreateTopics error code for a topic created meanwhile by someone else: not an error here.
_TOPIC_ALREADY_EXISTS = 36
#: Most replicas a new topic gets (fewer on a smaller cluster).
MAX_REPLICATION = 3
# On a local KRaft broker the metadata shows a new topic's leaders a few hundred ms before
# the broker accepts writes for them (measured): the pause after they appear.
_LEADER_SETTLE_S = 0.5


def changelog_topic(settings: Settings, topic: str) -> str:
    """The compacted changelog that holds the state of one input topic's partitions."""
    return settings.topic(f"{settings.app_id}-{topic}-changelog")


def published_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The topics events are published to (the inputs) and the dead-letter topic."""
    topics: dict[str, dict[str, str]] = {settings.topic(t): {} for t in INPUT_TOPICS}
    topics[settings.dead_letter_topic] = {}
    return topics


def product_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the worker reads or writes, with its configuration."""
    topics = published_topics(settings)
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
    timeout_s: float = 30.0,
) -> EnsuredTopics:
    """Create the missing ones of ``topics`` (name -> config; default: every product topic).

    New topics get ``KPI_PARTITIONS`` partitions and a replication factor of up to 3 (fewer
    on a smaller cluster); existing ones keep their partition count (the worker adapts to
    it). A topic created meanwhile by another process is not an error. Returns once the
    metadata shows every wanted topic's partitions, and the new topics' leaders.
    ``ConfigurationError`` (one line) when Kafka is unreachable, refuses a topic, or does
    not show them within ``timeout_s``.
    """
    if topics is None:
        topics = product_topics(settings)
    wanted = {name: dict(config) for name, config in topics.items()}
    admin = make_admin(settings, client_id="kpi-admin", request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        with contextlib.suppress(Exception):
            await admin.close()
        msg = f"cannot reach Kafka at {settings.kafka_bootstrap}: {error_reason(exc)}"
        raise ConfigurationError(msg) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        created = await _create(admin, settings, {n: wanted[n] for n in missing}, timeout_s)
        partitions = await _wait_for_metadata(admin, list(wanted), created, timeout_s)
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
    brokers = len((await admin.describe_cluster())["brokers"])
    replication = max(1, min(MAX_REPLICATION, brokers))
    response = await admin.create_topics(
        [
            NewTopic(name, settings.partitions, replication, topic_configs=config)
            for name, config in missing.items()
        ],
        timeout_ms=int(timeout_s * 1000),
    )
    created = []
    for topic, code, *details in response.topic_errors:
        if code == 0:
            created.append(topic)
        elif code != _TOPIC_ALREADY_EXISTS:
            detail = details[0] if details and details[0] else f"error code {code}"
            msg = f"cannot create topic {topic}: {detail}"
            raise ConfigurationError(msg)
    if created:
        log.info("created topics: %s", ", ".join(created))
    return created


async def _wait_for_metadata(
    admin: AIOKafkaAdminClient, topics: list[str], created: list[str], timeout_s: float
) -> dict[str, int]:
    """Every topic's partition count, once the metadata shows them all.

    A new topic's partitions get leaders a moment after CreateTopics returns; producing
    before that works (aiokafka retries) but logs a NotLeaderForPartition warning per batch,
    so the topics created are also waited for until every partition has a leader.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    counts: dict[str, int] = {}
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
        counts = {d["topic"]: len(d["partitions"]) for d in described if d.get("partitions")}
        led = {
            d["topic"]
            for d in described
            if d["error_code"] == 0
            and d["partitions"]
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in d["partitions"])
        }
        if len(counts) == len(topics) and led >= set(created):
            if created:
                await asyncio.sleep(_LEADER_SETTLE_S)
            return counts
        if asyncio.get_running_loop().time() >= deadline:
            waiting = sorted(set(topics) - counts.keys() | set(created) - led)
            msg = f"Kafka shows no leaders for {', '.join(waiting)} after {timeout_s:g} s"
            raise ConfigurationError(msg)
        await asyncio.sleep(0.1)


async def create_published_topics(settings: Settings) -> list[str]:
    """For the producers: create the input and dead-letter topics if missing; return those."""
    return (await ensure_topics(settings, published_topics(settings), timeout_s=15.0)).created
