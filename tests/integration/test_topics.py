"""``ensure_topics`` on the real local broker: CreateTopics v4 with the broker's defaults."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.errors import ConfigurationError
from streams.config import Settings
from streams.topics import changelog_topic, ensure_topics, product_topics

pytestmark = pytest.mark.integration

#: DescribeConfigs' config source of a value set on the topic itself (DYNAMIC_TOPIC_CONFIG).
TOPIC_CONFIG = 1


async def _described(settings: Settings, topics: list[str]) -> dict[str, Any]:
    """topic -> (replicas of each partition, the topic's configs as the broker reports them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        metadata = await admin.describe_topics(topics)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    finally:
        await admin.close()
    # DescribeConfigs v1+ (Kafka 4 has no v0): each entry's source, 1 = set on the topic.
    configs = {
        name: {key: (value, source) for key, value, _, source, *_ in entries}
        for response in responses
        for _, _, _, name, entries in response.resources
    }
    return {
        d["topic"]: ({len(p["replicas"]) for p in d["partitions"]}, configs[d["topic"]])
        for d in metadata
    }


async def test_new_topics_get_the_brokers_default_replication(kpi_env: Settings) -> None:
    assert kpi_env.replication_factor == -1  # the default: the broker's
    ensured = await ensure_topics(kpi_env)
    wanted = product_topics(kpi_env)
    assert sorted(ensured.created) == sorted(wanted)
    assert ensured.partitions == dict.fromkeys(wanted, kpi_env.partitions)
    described = await _described(kpi_env, list(wanted))
    # The stack's broker leaves default.replication.factor at Kafka's default, 1.
    assert {name: replicas for name, (replicas, _) in described.items()} == dict.fromkeys(
        wanted, {1}
    )
    changelog = described[changelog_topic(kpi_env, "hiring")][1]
    assert changelog["cleanup.policy"] == ("compact", TOPIC_CONFIG)
    value, source = changelog["min.insync.replicas"]
    assert source != TOPIC_CONFIG, f"min.insync.replicas {value} is set on the topic"
    # Once more: everything exists, nothing is created, the leaders are there at once.
    assert (await ensure_topics(kpi_env)).created == []


async def test_more_replicas_than_brokers_is_one_line_naming_the_setting(
    kpi_env: Settings,
) -> None:
    settings = kpi_env.model_copy(update={"replication_factor": 2})
    with pytest.raises(ConfigurationError) as info:
        await ensure_topics(settings)
    line = str(info.value)
    print(line)  # the broker's own words, recorded in tests/unit/test_topics.py
    assert "\n" not in line
    assert line.startswith("cannot create topic ")
    assert ": replication factor 2 (KPI_REPLICATION_FACTOR) refused (Kafka: " in line
