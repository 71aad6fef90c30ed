"""The Kafka ACLs of the worker and the publisher: exact names, least privilege."""

from __future__ import annotations

from streams.access import ROLES, Operation
from streams.config import Settings
from tooling.kafka_access import (
    KafkaAcl,
    PatternType,
    ResourceType,
    kafka_acls,
    principal,
)

SETTINGS = Settings(topic_prefix="acme.", app_id="kpi-eu")


def _listed(role: str) -> list[str]:
    return sorted(str(acl) for acl in kafka_acls(SETTINGS, role))  # type: ignore[arg-type]


def test_the_worker_reads_its_inputs_and_group_and_keeps_its_dead_letters_and_changelogs() -> None:
    changelogs = [f"acme.kpi-eu-{t}-changelog" for t in ("hiring", "incidents", "invoices")]
    assert _listed("worker") == sorted(
        [
            "TOPIC acme.invoices (literal): READ",
            "TOPIC acme.hiring (literal): READ",
            "TOPIC acme.incidents (literal): READ",
            "GROUP kpi-eu (literal): READ",
            "TOPIC acme.kpi.dead-letter (literal): WRITE",
            "TOPIC acme.kpi.dead-letter (literal): READ",
            *(f"TOPIC {t} (literal): {op}" for t in changelogs for op in ("READ", "WRITE")),
        ]
    )


def test_the_publisher_writes_the_inputs_only() -> None:
    assert _listed("publisher") == [
        "TOPIC acme.hiring (literal): WRITE",
        "TOPIC acme.incidents (literal): WRITE",
        "TOPIC acme.invoices (literal): WRITE",
    ]


def test_no_role_may_create_alter_or_touch_the_cluster_and_every_name_is_exact() -> None:
    for role in ROLES:
        for acl in kafka_acls(SETTINGS, role):
            assert acl.pattern_type is PatternType.LITERAL
            assert acl.resource_type in (ResourceType.TOPIC, ResourceType.GROUP)
            assert acl.operation in (Operation.READ, Operation.WRITE, Operation.DESCRIBE)
            assert acl.resource_name.startswith("acme.") or acl.resource_name == "kpi-eu"


def test_the_codes_are_kafkas() -> None:
    # org.apache.kafka.common.acl.AclOperation / resource.ResourceType / PatternType codes.
    assert (Operation.READ, Operation.WRITE, Operation.DESCRIBE, Operation.IDEMPOTENT_WRITE) == (
        3,
        4,
        8,
        12,
    )
    assert (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER) == (2, 3, 4)
    assert (PatternType.LITERAL, PatternType.PREFIXED) == (3, 4)
    acl = KafkaAcl(ResourceType.GROUP, "g", PatternType.PREFIXED, Operation.READ)
    assert str(acl) == "GROUP g (prefixed): READ"
    assert principal("kpi-worker") == "User:kpi-worker"
