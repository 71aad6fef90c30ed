"""The product's Kafka topics: names, and creating the missing ones at start-up."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from schemas.errors import ConfigurationError
from streams.config import INPUT_TOPICS, Settings

log = logging.getLogger(__name__)


def changelog_topic(settings: Settings, topic: str) -> str:
    """The compacted changelog that holds the state of one input topic's partitions."""
    return settings.topic(f"{settings.app_id}-{topic}-changelog")


def product_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the worker reads or writes, with its configuration."""
    topics: dict[str, dict[str, str]] = {settings.topic(t): {} for t in INPUT_TOPICS}
    topics[settings.dead_letter_topic] = {}
    for t in INPUT_TOPICS:
        topics[changelog_topic(settings, t)] = {
            "cleanup.policy": "compact",
            "min.cleanable.dirty.ratio": "0.1",
            "segment.ms": "600000",
        }
    return topics


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, int]:
    """Create missing topics with ``KPI_PARTITIONS`` partitions; return every topic's count.

    Existing topics keep their partition count: the worker adapts to it.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
        except (KafkaConnectionError, TimeoutError, OSError) as exc:
            msg = f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc.__class__.__name__})"
            raise ConfigurationError(msg) from None
        wanted = product_topics(settings)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, settings.partitions, 1, topic_configs=config)
            for name, config in wanted.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                # Another worker may have created some of them at the same moment.
                log.info("create_topics: %s", exc)
            log.info("created topics: %s", ", ".join(t.name for t in missing))
        counts: dict[str, int] = {}
        for _ in range(50):
            described = await admin.describe_topics(list(wanted))
            counts = {d["topic"]: len(d["partitions"]) for d in described if d.get("partitions")}
            if len(counts) == len(wanted):
                break
            await asyncio.sleep(0.1)
        return counts
    finally:
        await admin.close()
