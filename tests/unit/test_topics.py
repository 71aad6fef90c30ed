"""``ensure_topics`` without a broker: a fake admin client, and a real unreachable one."""

from __future__ import annotations

import socket
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

#: ApiVersions of a Kafka 4.1 broker for CreateTopics (key 19): v2 to v7.
KAFKA_4_VERSIONS = {19: (2, 7)}
#: A Kafka 2.3 broker: CreateTopics up to v3.
KAFKA_2_3_VERSIONS = {19: (0, 3)}


def recorded(struct: Any, topic_errors: list[tuple[str, int, str | None]]) -> Any:
    """The broker's answer to ``struct`` as it comes off the wire (encoded, then decoded)."""
    response_type = struct.RESPONSE_TYPE
    return response_type.decode(response_type(0, topic_errors).encode())


class FakeAdmin:
    """Stands in for AIOKafkaAdminClient: topics exist once created, with leaders.

    A CreateTopics request is prepared as a connection does, for the broker's ``versions``,
    and answered with the response struct of that version.
    """

    existing: dict[str, int] = {}
    codes: dict[str, int] = {}
    messages: dict[str, str | None] = {}
    requests: list[Any] = []
    versions: dict[int, tuple[int, int]] = KAFKA_4_VERSIONS
    leaderless_describes = 0
    describe_codes: dict[str, int] = {}

    def __init__(self, **config: Any) -> None:
        self.config = config

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return sorted(self.existing)

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        # A topic's partitions get their leaders a while after it appears.
        leader = -1 if FakeAdmin.leaderless_describes > 0 else 1
        FakeAdmin.leaderless_describes -= 1
        return [
            {
                "topic": t,
                "error_code": self.describe_codes.get(t, 0 if t in self.existing else 3),
                "partitions": [
                    {"error_code": 0, "partition": p, "leader": leader}
                    for p in range(self.existing.get(t, 0))
                ],
            }
            for t in topics
        ]

    async def _send_to_controller(self, request: Any) -> Any:
        struct = request.prepare(self.versions)
        FakeAdmin.requests.append(struct)
        errors = []
        for name, partitions, *_ in struct.create_topic_requests:
            code = self.codes.get(name, 0)
            errors.append((name, code, self.messages.get(name)))
            if code in (0, 36):
                FakeAdmin.existing[name] = partitions
        return recorded(struct, errors)


def requested(admin: type[FakeAdmin]) -> dict[str, tuple[int, int, dict[str, str]]]:
    """Topic -> (partitions, replication factor, configs) of every CreateTopics sent."""
    return {
        name: (partitions, replicas, dict(configs))
        for struct in admin.requests
        for name, partitions, replicas, _, configs in struct.create_topic_requests
    }


@pytest.fixture
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> type[FakeAdmin]:
    FakeAdmin.existing, FakeAdmin.codes, FakeAdmin.messages = {}, {}, {}
    FakeAdmin.requests, FakeAdmin.versions = [], KAFKA_4_VERSIONS
    FakeAdmin.leaderless_describes, FakeAdmin.describe_codes = 0, {}
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
    sent = requested(fake_admin)
    changelog = sent[changelog_topic(settings, "hiring")][2]
    assert changelog["cleanup.policy"] == "compact"
    assert "min.insync.replicas" not in changelog  # the broker's
    assert sent["p.hiring"][2] == {}


async def test_producers_create_only_the_published_topics(fake_admin: type[FakeAdmin]) -> None:
    settings = Settings(topic_prefix="p.", partitions=3)
    fake_admin.existing = {"p.invoices": 3}
    fake_admin.codes = {"p.hiring": 36}  # created meanwhile by someone else
    created = await create_published_topics(settings)
    assert created == ["p.incidents"]
    assert {n: s[:2] for n, s in requested(fake_admin).items()} == {
        "p.hiring": (3, -1),
        "p.incidents": (3, -1),
    }
    # Not the dead-letter topic: publishers never write it (the worker creates it).
    assert set(published_topics(settings)) == set(settings.input_topics)


async def test_the_brokers_default_replication_is_asked_for_with_create_topics_v4(
    fake_admin: type[FakeAdmin],
) -> None:
    await ensure_topics(Settings())
    assert {s.API_VERSION for s in fake_admin.requests} == {4}
    assert {replicas for _, replicas, _ in requested(fake_admin).values()} == {-1}


@pytest.mark.parametrize("versions", [KAFKA_4_VERSIONS, KAFKA_2_3_VERSIONS])
async def test_a_replication_factor_set_is_sent_as_it_is(
    fake_admin: type[FakeAdmin], versions: dict[int, tuple[int, int]]
) -> None:
    fake_admin.versions = versions
    await ensure_topics(Settings(replication_factor=3))
    assert {s.API_VERSION for s in fake_admin.requests} == {min(4, versions[19][1])}
    assert {replicas for _, replicas, _ in requested(fake_admin).values()} == {3}


async def test_a_broker_without_create_topics_v4_needs_the_factor_set(
    fake_admin: type[FakeAdmin],
) -> None:
    fake_admin.versions = KAFKA_2_3_VERSIONS
    with pytest.raises(ConfigurationError) as info:
        await ensure_topics(Settings(kafka_bootstrap="old:9092"))
    assert str(info.value) == (
        "the Kafka at old:9092 predates CreateTopics v4 (Kafka 2.4) and cannot give new topics"
        " its default replication factor: set KPI_REPLICATION_FACTOR to the number of replicas"
    )
    assert fake_admin.requests == [] and fake_admin.existing == {}


# Recorded from the local Kafka 4.1 broker (tests/integration/test_topics.py asks for the
# same): a replication factor above the number of brokers.
TOO_MANY_REPLICAS = (
    "Unable to replicate the partition 2 time(s): The target replication factor of 2 cannot"
    " be reached because only 1 broker(s) are registered."
)


@pytest.mark.parametrize(
    ("code", "message", "line"),
    [
        (
            29,
            "Authorization failed.",
            "cannot create topic hiring: not authorized (the user needs CREATE on the topic,"
            " or create it beforehand and grant DESCRIBE on it)",
        ),
        (
            31,
            None,
            "cannot create topic hiring: not authorized (the user needs CREATE on the topic,"
            " or create it beforehand and grant DESCRIBE on it)",
        ),
        (
            38,
            TOO_MANY_REPLICAS,
            f"cannot create topic hiring: replication factor 2 (KPI_REPLICATION_FACTOR) refused"
            f" (Kafka: {TOO_MANY_REPLICAS})",
        ),
        (
            40,
            "Invalid value nope for configuration cleanup.policy",
            "cannot create topic hiring: INVALID_CONFIG (error code 40)"
            " (Kafka: Invalid value nope for configuration cleanup.policy)",
        ),
        (44, None, "cannot create topic hiring: POLICY_VIOLATION (error code 44)"),
    ],
)
async def test_a_refused_topic_is_one_line_that_says_why(
    fake_admin: type[FakeAdmin], code: int, message: str | None, line: str
) -> None:
    fake_admin.codes, fake_admin.messages = {"hiring": code}, {"hiring": message}
    with pytest.raises(ConfigurationError) as info:
        await ensure_topics(Settings(replication_factor=2), published_topics(Settings()))
    assert str(info.value) == line


async def test_the_brokers_default_refused_says_so(fake_admin: type[FakeAdmin]) -> None:
    fake_admin.codes = {"hiring": 38}
    with pytest.raises(ConfigurationError, match=r"replication factor the broker's default \("):
        await ensure_topics(Settings(), published_topics(Settings()))


async def test_a_topic_the_user_may_not_describe_is_one_line(fake_admin: type[FakeAdmin]) -> None:
    fake_admin.existing = {t: 8 for t in published_topics(Settings())}
    fake_admin.describe_codes = {"hiring": 29}
    with pytest.raises(ConfigurationError) as info:
        await ensure_topics(Settings(), published_topics(Settings()), timeout_s=5)
    assert str(info.value) == (
        "cannot see topic hiring: not authorized (the user needs DESCRIBE on the topic)"
    )


async def test_new_topics_are_waited_for_until_they_have_leaders(
    fake_admin: type[FakeAdmin],
) -> None:
    fake_admin.leaderless_describes = 3
    await ensure_topics(Settings())
    assert fake_admin.leaderless_describes < 0


async def test_existing_topics_without_leaders_are_waited_for_too(
    fake_admin: type[FakeAdmin],
) -> None:
    fake_admin.existing = {t: 8 for t in product_topics(Settings())}
    fake_admin.leaderless_describes = 3
    ensured = await ensure_topics(Settings())
    assert ensured.created == [] and fake_admin.requests == []
    assert fake_admin.leaderless_describes < 0


@pytest.mark.parametrize("exist", [False, True], ids=["created", "existing"])
async def test_topics_without_leaders_are_an_error_after_the_timeout(
    fake_admin: type[FakeAdmin], exist: bool
) -> None:
    if exist:
        fake_admin.existing = {t: 8 for t in product_topics(Settings())}
    fake_admin.leaderless_describes = 10**6
    with pytest.raises(ConfigurationError, match="no leaders for .*hiring.* after 0.3 s"):
        await ensure_topics(Settings(), timeout_s=0.3)


async def test_unreachable_kafka_is_one_line() -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    with pytest.raises(KpiError, match=f"cannot reach Kafka at {bootstrap}") as info:
        await ensure_topics(Settings(kafka_bootstrap=bootstrap), timeout_s=5)
    assert "\n" not in str(info.value)
