"""The roles' Kafka rights, judging the broker's answer, and the connection failure lines."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
)

from streams.access import RETRY, ROLES, Right, kafka_rights, missing_rights, read_group_answer
from streams.config import Settings
from streams.kafka import explain

READ, WRITE, DESCRIBE = 1 << 3, 1 << 4, 1 << 8


def _settings(**kw: object) -> Settings:
    return Settings(topic_prefix="acme.", app_id="kpi-acme", **kw)  # type: ignore[arg-type]


def test_worker_rights_are_its_topics_and_group_only() -> None:
    rights = {str(r) for r in kafka_rights(_settings(), "worker")}
    assert rights == {
        "READ on topic acme.invoices",
        "READ on topic acme.hiring",
        "READ on topic acme.incidents",
        "READ on topic acme.kpi-acme-invoices-changelog",
        "WRITE on topic acme.kpi-acme-invoices-changelog",
        "READ on topic acme.kpi-acme-hiring-changelog",
        "WRITE on topic acme.kpi-acme-hiring-changelog",
        "READ on topic acme.kpi-acme-incidents-changelog",
        "WRITE on topic acme.kpi-acme-incidents-changelog",
        "READ on topic acme.kpi.dead-letter",
        "WRITE on topic acme.kpi.dead-letter",
        "READ on group kpi-acme",
    }


def test_publisher_writes_the_inputs_only() -> None:
    assert [str(r) for r in kafka_rights(_settings(), "publisher")] == [
        "WRITE on topic acme.invoices",
        "WRITE on topic acme.hiring",
        "WRITE on topic acme.incidents",
    ]


def test_replayer_reads_dead_letters_writes_the_inputs_and_keeps_its_ledger() -> None:
    assert [str(r) for r in kafka_rights(_settings(), "replayer")] == [
        "READ on topic acme.kpi.dead-letter",
        "WRITE on topic acme.invoices",
        "WRITE on topic acme.hiring",
        "WRITE on topic acme.incidents",
        "READ on topic acme.kpi.dead-letter.replayed",
        "WRITE on topic acme.kpi.dead-letter.replayed",
    ]


def test_missing_rights_reads_the_operation_bits() -> None:
    wanted = [
        Right("topic", "a", "READ"),
        Right("topic", "a", "WRITE"),
        Right("topic", "b", "WRITE"),
        Right("topic", "gone", "READ"),
        Right("group", "g", "READ"),
    ]
    topics: dict[str, int | None] = {"a": READ | DESCRIBE, "b": None}
    groups: dict[str, int | None] = {"g": DESCRIBE}
    # "gone" does not exist: not judged (whoever uses it says so).
    assert missing_rights(wanted, topics, groups) == [
        Right("topic", "a", "WRITE"),
        Right("topic", "b", "WRITE"),
        Right("group", "g", "READ"),
    ]
    assert missing_rights(wanted, {"a": READ | WRITE, "b": WRITE}, {"g": READ}) == []


def _secure() -> Settings:
    return Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="kpi-worker",
        kafka_sasl_password="s3cret-pw",  # type: ignore[arg-type]
    )


def _verify_error(message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, message)
    exc.verify_message = message
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            SaslAuthenticationFailed("Authentication failed during authentication"),
            "the broker rejected user 'kpi-worker' with SCRAM-SHA-512 (wrong password or unknown",
        ),
        (_verify_error("certificate has expired"), "the broker's TLS certificate has expired"),
        (
            _verify_error("unable to get local issuer certificate"),
            "is not trusted (unable to get local issuer certificate; KPI_KAFKA_SSL_CAFILE",
        ),
        (ConnectionRefusedError(), "connection refused (is Kafka running there?)"),
        (ConnectionResetError(), "during the TLS handshake (not a TLS listener?"),
        (TimeoutError(), "timed out"),
    ],
)
def test_connection_failures_say_which(exc: BaseException, expected: str) -> None:
    line = explain(exc, _secure())
    assert expected in line
    assert "s3cret-pw" not in line
    assert "\n" not in line


def test_plaintext_client_at_a_secured_listener_is_told_so() -> None:
    line = explain(KafkaConnectionError("closed"), Settings())
    assert "KPI_KAFKA_SECURITY_PROTOCOL is PLAINTEXT" in line


def test_docs_operations_lists_the_rights_of_the_default_namespace() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text()
    section = text.split("## Kafka ACLs\n", 1)[1].split("\n## ", 1)[0]
    shown = set()
    for role, resource, names, operations in re.findall(
        r"^\| (worker|publisher|replayer) \| (topic|group) \| (.+?) \| (.+?) \|$",
        section,
        re.MULTILINE,
    ):
        for name in re.findall(r"`([^`]+)`", names):
            for operation in operations.split(", "):
                shown.add((role, Right(resource, name, operation)))
    settings = Settings()
    assert shown == {(role, r) for role in ROLES for r in kafka_rights(settings, role)}


def test_a_group_answer_from_a_busy_coordinator_is_asked_again_not_refused() -> None:
    # CI once saw a plain (no authorizer) broker answer the group check while its
    # coordinator was still loading: error 14 and no bit field, read as "lacks READ".
    load_in_progress, not_coordinator, coordinator_not_available = 14, 16, 15
    for code in (load_in_progress, not_coordinator, coordinator_not_available):
        assert read_group_answer(code, -(2**31)) is RETRY
    assert read_group_answer(GroupAuthorizationFailedError.errno, -(2**31)) is None
    assert read_group_answer(0, READ | DESCRIBE) == READ | DESCRIBE
    # No bit field and no error (the broker did not compute one): not judged.
    answer = read_group_answer(0, -(2**31))
    assert isinstance(answer, int)
    assert missing_rights([Right("group", "g", "READ")], {}, {"g": answer}) == []
