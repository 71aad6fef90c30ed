"""``ensure_topics`` without a broker: a fake admin client, and a real unreachable one."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import pytest

import streams.kafka as kafka_module
from schemas.errors import ConfigurationError, KpiError
from streams.config import Settings
from streams.topics import (
    changelog_topic,
    create_published_topics,
    ensure_topics,
    product_topics,
    published_topics,
)


class FakeAdmin:
    """Stands in for AIOKafkaAdminClient: topics exist once created, with leaders."""

    existing: dict[str, int] = {}
    codes: dict[str, int] = {}
    requests: list[Any] = []
    brokers = 1
    leaderless_describes = 0

    def __init__(self, **config: Any) -> None:
        self.config = config

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return sorted(self.existing)

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(self.brokers)]}

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        # A new topic's partitions get their leaders a moment after it was created.
        leader = -1 if FakeAdmin.leaderless_describes > 0 else 1
        FakeAdmin.leaderless_describes -= 1
        return [
            {
                "topic": t,
                "error_code": 0 if t in self.existing else 3,
                "partitions": [
                    {"error_code": 0, "partition": p, "leader": leader}
                    for p in range(self.existing.get(t, 0))
                ],
            }
            for t in topics
        ]

    async def create_topics(self, new_topics: list[Any], timeout_ms: int) -> Any:
        FakeAdmin.requests.extend(new_topics)
        errors = [(t.name, self.codes.get(t.name, 0), "boom") for t in new_topics]
        for t in new_topics:
            if self.codes.get(t.name, 0) in (0, 36):
                FakeAdmin.existing[t.name] = t.num_partitions
        return SimpleNamespace(topic_errors=errors)


@pytest.fixture
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> type[FakeAdmin]:
    FakeAdmin.existing, FakeAdmin.codes, FakeAdmin.requests = {}, {}, []
    FakeAdmin.brokers, FakeAdmin.leaderless_describes = 1, 0
    monkeypatch.setattr(kafka_module, "AIOKafkaAdminClient", FakeAdmin)
    return FakeAdmin


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_worker_gets_every_topic_and_its_partition_count(
    fake_admin: type[FakeAdmin],
) -> None:
    settings = Settings(topic_prefix="p.", partitions=3)
    fake_admin.existing = {"p.invoices": 12}  # an existing topic keeps its count
    ensured = await ensure_topics(settings)
    wanted = product_topics(settings)
    assert ensured.partitions == {name: 12 if name == "p.invoices" else 3 for name in wanted}
    assert sorted(ensured.created) == sorted(set(wanted) - {"p.invoices"})
    configs = {t.name: t.topic_configs for t in fake_admin.requests}
    assert configs[changelog_topic(settings, "hiring")]["cleanup.policy"] == "compact"
    assert configs["p.hiring"] == {}


async def test_producers_create_only_the_published_topics(fake_admin: type[FakeAdmin]) -> None:
    settings = Settings(topic_prefix="p.", partitions=3)
    fake_admin.existing = {"p.invoices": 3}
    fake_admin.codes = {"p.hiring": 36}  # created meanwhile by someone else
    created = await create_published_topics(settings)
    assert created == ["p.incidents", "p.kpi.dead-letter"]
    requested = {(t.name, t.num_partitions, t.replication_factor) for t in fake_admin.requests}
    assert requested == {("p.hiring", 3, 1), ("p.incidents", 3, 1), ("p.kpi.dead-letter", 3, 1)}
    assert set(published_topics(settings)) == {*settings.input_topics, settings.dead_letter_topic}


@pytest.mark.parametrize(("brokers", "replicas"), [(1, 1), (2, 2), (3, 3), (5, 3)])
async def test_replication_is_up_to_three(
    fake_admin: type[FakeAdmin], brokers: int, replicas: int
) -> None:
    fake_admin.brokers = brokers
    await ensure_topics(Settings())
    assert {t.replication_factor for t in fake_admin.requests} == {replicas}


async def test_new_topics_are_waited_for_until_they_have_leaders(
    fake_admin: type[FakeAdmin],
) -> None:
    fake_admin.leaderless_describes = 3
    await ensure_topics(Settings())
    assert fake_admin.leaderless_describes < 0


async def test_topics_without_leaders_are_an_error_after_the_timeout(
    fake_admin: type[FakeAdmin],
) -> None:
    fake_admin.leaderless_describes = 10**6
    with pytest.raises(ConfigurationError, match="no leaders for .*hiring"):
        await ensure_topics(Settings(), timeout_s=0.3)


async def test_refusals_are_one_configuration_error(fake_admin: type[FakeAdmin]) -> None:
    fake_admin.codes = {"hiring": 38}
    with pytest.raises(ConfigurationError, match="cannot create topic hiring: boom"):
        await ensure_topics(Settings(), published_topics(Settings()))


async def test_unreachable_kafka_is_one_line() -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    with pytest.raises(KpiError, match=f"cannot reach Kafka at {bootstrap}") as info:
        await ensure_topics(Settings(kafka_bootstrap=bootstrap), timeout_s=5)
    assert "\n" not in str(info.value)
