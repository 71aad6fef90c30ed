"""What each role of the product may do on Kafka, and the check at start that it can.

A missing ACL shows up late and obscurely otherwise: the worker would join its group, restore
and run until its first dead letter met a ``TopicAuthorizationFailedError``. So the worker
and the publishers check their rights before they start, with the broker's own answer
(KIP-430: Metadata v8 reports the operations the caller may perform on each topic,
DescribeGroups v3 on each group), and stop with one line naming every right missing.

``kafka_rights`` is the least privilege of each role: docs/OPERATIONS.md lists it, ``kpi
stack up --secure`` grants exactly it, and the integration tests run the roles with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.protocol.admin import DescribeGroupsRequest_v3, DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from schemas.errors import UnavailableError
from streams.config import INPUT_TOPICS, Settings
from streams.kafka import make_admin, unreachable
from streams.topics import changelog_topic

Role = Literal["worker", "publisher", "replayer"]
ROLES: tuple[Role, ...] = ("worker", "publisher", "replayer")
OperationName = Literal["READ", "WRITE", "CREATE", "DESCRIBE"]

_TOPIC_AUTHORIZATION_FAILED = TopicAuthorizationFailedError.errno
_GROUP_AUTHORIZATION_FAILED = GroupAuthorizationFailedError.errno
_UNKNOWN_TOPIC = UnknownTopicOrPartitionError.errno


class Operation(IntEnum):
    """Kafka's ACL operations (``AclOperation``).

    Their codes in the ACL requests; bit ``1 << code`` of an authorized-operations field.
    """

    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


@dataclass(frozen=True, order=True)
class Right:
    """One ACL a role needs: ALLOW ``operation`` on a topic or group named ``name``."""

    resource: Literal["topic", "group"]
    name: str
    operation: OperationName

    def __str__(self) -> str:
        return f"{self.operation} on {self.resource} {self.name}"


def kafka_rights(settings: Settings, role: Role) -> list[Right]:
    """The ACLs ``role`` needs with these settings (topic prefix, application id), no more.

    - worker: READ its input topics; READ (restore) and WRITE (state) its changelog topics;
      READ (recall after a crash) and WRITE its dead-letter topic; READ its consumer group.
      Its producer is idempotent, which since Kafka 3.0 needs WRITE on a topic only (no
      IDEMPOTENT_WRITE on the cluster); it uses no transactions.
    - publisher (``kpi simulate``, ``kpi publish``): WRITE the input topics.
    - replayer (``kpi dlq replay``, an operator's tool): READ the dead-letter topic, WRITE
      the input topics (the payloads go back there), READ and WRITE its ledger topic. No
      group: it reads partitions by assignment. ``kpi dlq tail`` and ``stats`` need only
      READ on the dead-letter topic.

    Neither needs CREATE when the topics exist (``kpi stack up --secure`` creates them as
    the administrator); to let a role create them, add CREATE on them.
    READ and WRITE imply DESCRIBE.
    """
    inputs = settings.input_topics
    if role == "publisher":
        return [Right("topic", t, "WRITE") for t in inputs]
    if role == "replayer":
        ledger = settings.replayed_topic
        return [
            Right("topic", settings.dead_letter_topic, "READ"),
            *(Right("topic", t, "WRITE") for t in inputs),
            Right("topic", ledger, "READ"),
            Right("topic", ledger, "WRITE"),
        ]
    rights = [Right("topic", t, "READ") for t in inputs]
    for t in INPUT_TOPICS:
        name = changelog_topic(settings, t)
        rights += [Right("topic", name, "READ"), Right("topic", name, "WRITE")]
    dlq = settings.dead_letter_topic
    rights += [Right("topic", dlq, "READ"), Right("topic", dlq, "WRITE")]
    rights.append(Right("group", settings.app_id, "READ"))
    return rights


# Metadata v8 (the newest version before the flexible encoding): the request asks for each
# topic's authorized operations, the response carries them.
class _MetadataResponseV8(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            Array(
                ("node_id", Int32),
                ("host", String("utf-8")),
                ("port", Int32),
                ("rack", String("utf-8")),
            ),
        ),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("topic_authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class _TopicOperations(Request[_MetadataRequestV8]):  # type: ignore[misc]
    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self._topics, False, False, True)


class _DescribeGroupsRequestV3(RequestStruct):  # type: ignore[misc]
    # aiokafka 0.14's v3 request decodes its answer with the v2 schema, which has no
    # authorized operations: the same request, read with the v3 schema.
    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = DescribeGroupsRequest_v3.SCHEMA


class _GroupOperations(Request[_DescribeGroupsRequestV3]):  # type: ignore[misc]
    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(
        self, request_struct_class: type[_DescribeGroupsRequestV3]
    ) -> _DescribeGroupsRequestV3:
        return request_struct_class(self._groups, True)


def missing_rights(
    wanted: list[Right],
    topic_operations: dict[str, int | None],
    group_operations: dict[str, int | None],
) -> list[Right]:
    """The rights in ``wanted`` that the broker's answer does not grant.

    ``*_operations``: the authorized-operations bit field per name; ``None`` when the broker
    refused even to describe it (no right at all); a name absent from them (a topic that
    does not exist yet) is not judged.
    """
    missing = []
    for right in wanted:
        found = topic_operations if right.resource == "topic" else group_operations
        if right.name not in found:
            continue
        bits = found[right.name]
        if bits is None or not bits & (1 << Operation[right.operation]):
            missing.append(right)
    return missing


async def check_kafka_access(settings: Settings, role: Role, *, timeout_s: float = 30.0) -> None:
    """Stop (``UnavailableError``, one line) unless the broker grants ``role`` its rights.

    Without an authorizer every operation is allowed, and the check passes.
    """
    wanted = kafka_rights(settings, role)
    admin = make_admin(settings, client_id="kpi-access", request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            try:
                await admin.start()
            except (KafkaError, OSError) as exc:
                raise UnavailableError(await unreachable(settings, exc)) from None
            topics = await _topic_operations(
                admin, sorted({r.name for r in wanted if r.resource == "topic"})
            )
            groups = await _group_operations(
                admin, sorted({r.name for r in wanted if r.resource == "group"})
            )
    except TimeoutError:
        msg = (
            f"Kafka at {settings.kafka_bootstrap} did not answer the access check"
            f" within {timeout_s:g} s"
        )
        raise UnavailableError(msg) from None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    missing = missing_rights(wanted, topics, groups)
    if missing:
        who = settings.kafka_sasl_username or "this client"
        msg = (
            f"Kafka user {who} lacks {'; '.join(map(str, missing))}"
            f" (the {role}'s ACLs: docs/OPERATIONS.md, Kafka ACLs)"
        )
        raise UnavailableError(msg)


async def _topic_operations(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int | None]:
    response: Any = await admin._send_request(_TopicOperations(topics))  # noqa: SLF001
    found: dict[str, int | None] = {}
    for error_code, topic, _internal, _partitions, operations in response.topics:
        if error_code == _UNKNOWN_TOPIC:
            # Not there (yet): whoever uses it finds out; nothing to say about rights.
            continue
        if error_code == _TOPIC_AUTHORIZATION_FAILED:
            found[topic] = None
        elif operations != _OPERATIONS_NOT_GIVEN:
            found[topic] = operations
    return found


# KIP-430: the broker sends this instead of a bit field when it did not compute one.
_OPERATIONS_NOT_GIVEN = -(2**31)
# What an answer that cannot be judged counts as: every operation allowed.
ALL_OPERATIONS = sum(1 << op for op in Operation)


class _Retry:
    """A group answer to ask again for: its coordinator is moving or still loading."""


RETRY = _Retry()


def read_group_answer(error_code: int, operations: int) -> int | None | _Retry:
    """One group's DescribeGroups answer: its operation bits, ``None`` (refused), ``RETRY``.

    A new or busy cluster answers a group with a retriable error (coordinator loading, not
    the coordinator) and no bit field: that is not a refusal, so it is asked again. Any other
    answer without bits is not judged (everything allowed), like a topic not there yet.
    """
    if error_code == _GROUP_AUTHORIZATION_FAILED:
        return None
    if error_code and for_code(error_code).retriable:
        return RETRY
    if error_code or operations == _OPERATIONS_NOT_GIVEN:
        return ALL_OPERATIONS
    return operations


async def _group_operations(admin: AIOKafkaAdminClient, groups: list[str]) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for group in groups:
        while True:
            try:
                coordinator = await admin.find_coordinator(group)
                response: Any = await admin._send_request(  # noqa: SLF001
                    _GroupOperations([group]), coordinator
                )
            except KafkaError as exc:
                if getattr(exc, "errno", None) == _GROUP_AUTHORIZATION_FAILED:
                    found[group] = None
                    break
                if not exc.retriable:
                    raise
                # A new cluster makes its offsets topic on the first FindCoordinator:
                # the coordinator is "not available" for a moment (bounded by the caller).
                await asyncio.sleep(0.2)
                continue
            error_code, _group_id, *_, operations = response.groups[0]
            answer = read_group_answer(error_code, operations)
            if answer is RETRY:
                await asyncio.sleep(0.2)
                continue
            found[group] = answer  # type: ignore[assignment]
            break
    return found
