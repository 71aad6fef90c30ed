"""The Kafka ACLs of the product's roles: least privilege, by exact topic and group name.

``kpi stack up --secure`` grants them (``grant``), docs/OPERATIONS.md lists them, and the
integration tests run the worker and the publisher as users with exactly these rights, so
a Kafka call the code starts to make without a right listed here fails a test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from schemas.errors import StackError
from streams.access import Operation, Role, kafka_rights
from streams.config import Settings
from streams.kafka import client_options, error_reason


class ResourceType(IntEnum):
    """Kafka's resource types (their codes in the ACL requests)."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    """How a resource name matches: the exact name, or every name that starts with it."""

    LITERAL = 3
    PREFIXED = 4


_ALLOW = 3
_ANY = 1
_ANY_HOST = "*"


@dataclass(frozen=True, order=True)
class KafkaAcl:
    """One right of a role: ALLOW ``operation`` on a resource, from any host."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    operation: Operation

    def __str__(self) -> str:
        """``TOPIC invoices (literal): READ``."""
        return (
            f"{self.resource_type.name} {self.resource_name} "
            f"({self.pattern_type.name.lower()}): {self.operation.name}"
        )


def kafka_acls(settings: Settings, role: Role) -> tuple[KafkaAcl, ...]:
    """The rights ``role`` needs in the namespace of ``settings`` (topic prefix, app id).

    They are ``streams.access.kafka_rights`` (what the worker and the publishers check
    they have when they start) as ACL bindings: literal names, allowed from any host.
    """
    return tuple(
        KafkaAcl(
            ResourceType[right.resource.upper()],
            right.name,
            PatternType.LITERAL,
            Operation[right.operation],
        )
        for right in kafka_rights(settings, role)
    )


def principal(user: str) -> str:
    """The Kafka principal of a SASL user, or of a client certificate whose CN is ``user``."""
    return f"User:{user}"


# --- granting (the Kafka protocol, as the administrator) ---------------------------------------


def _binding(acl: KafkaAcl, user: str) -> tuple[int, str, int, str, str, int, int]:
    """The fields of an ACL binding, in the order of CreateAcls and DeleteAcls (filter)."""
    return (
        acl.resource_type,
        acl.resource_name,
        acl.pattern_type,
        principal(user),
        _ANY_HOST,
        acl.operation,
        _ALLOW,
    )


async def grant(
    admin: Settings, user: str, acls: Iterable[KafkaAcl], *, timeout_s: float = 20.0
) -> None:
    """Give ``user`` the ``acls`` (existing ones stay), as the administrator of ``admin``.

    Returns once the broker's authorizer shows them all, so a client started next is
    judged by them. ``StackError`` (one line) when Kafka refuses or does not show them.
    """
    from aiokafka.protocol.admin import CreateAclsRequest

    wanted = set(acls)

    async def create(client: Any, node: int) -> None:
        for acl in sorted(wanted):
            request = CreateAclsRequest(*_binding(acl, user))
            response = await client.send(node, request)
            for code, message in response.creation_responses:
                if code != 0:
                    msg = f"Kafka refused the ACL {acl} for {user}: {message or f'error {code}'}"
                    raise StackError(msg)
        await _wait_shown(client, node, user, lambda shown: wanted <= shown, timeout_s)

    await _as_admin(admin, create, f"granting {user} its ACLs", timeout_s)


async def revoke(
    admin: Settings, user: str, acls: Iterable[KafkaAcl], *, timeout_s: float = 20.0
) -> None:
    """Take the ``acls`` from ``user``; returns once the broker no longer shows them.

    For tests that prove a right is needed, and for operators narrowing a user.
    """
    from aiokafka.protocol.admin import DeleteAclsRequest

    unwanted = set(acls)

    async def delete(client: Any, node: int) -> None:
        for acl in sorted(unwanted):
            request = DeleteAclsRequest(*_binding(acl, user))
            response = await client.send(node, request)
            for code, message, *_ in response.filter_responses:
                if code != 0:
                    msg = f"Kafka refused to delete the ACL {acl} of {user}: {message}"
                    raise StackError(msg)
        await _wait_shown(client, node, user, lambda shown: not unwanted & shown, timeout_s)

    await _as_admin(admin, delete, f"revoking ACLs of {user}", timeout_s)


async def acls_of(admin: Settings, user: str, *, timeout_s: float = 20.0) -> set[KafkaAcl]:
    """The ALLOW rights the broker's authorizer shows for ``user``."""
    found: set[KafkaAcl] = set()

    async def describe(client: Any, node: int) -> None:
        found.update(await _describe(client, node, user))

    await _as_admin(admin, describe, f"reading the ACLs of {user}", timeout_s)
    return found


async def _as_admin(
    admin: Settings, job: Callable[[Any, int], Awaitable[None]], what: str, timeout_s: float
) -> None:
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(
        **client_options(admin), client_id="kpi-stack", request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        await job(client, client.get_random_node())
    except (TimeoutError, KafkaError, OSError) as exc:
        msg = f"{what} on {admin.kafka_bootstrap} failed: {error_reason(exc)}"
        raise StackError(msg) from exc
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def _describe(client: Any, node: int, user: str) -> set[KafkaAcl]:
    from aiokafka.protocol.admin import DescribeAclsRequest

    request = DescribeAclsRequest(_ANY, None, _ANY, principal(user), None, _ANY, _ALLOW)
    response = await client.send(node, request)
    if response.error_code != 0:
        msg = f"Kafka refused to describe the ACLs of {user}: {response.error_message}"
        raise StackError(msg)
    shown = set()
    for resource_type, name, pattern_type, entries in response.resources:
        for _principal, _host, operation, _permission in entries:
            with contextlib.suppress(ValueError):  # a type this module does not know
                shown.add(
                    KafkaAcl(
                        ResourceType(resource_type),
                        name,
                        PatternType(pattern_type),
                        Operation(operation),
                    )
                )
    return shown


async def _wait_shown(
    client: Any, node: int, user: str, done: Callable[[set[KafkaAcl]], bool], timeout_s: float
) -> None:
    # The controller commits the change, the broker's authorizer applies it a moment later.
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done(await _describe(client, node, user)):
        if asyncio.get_running_loop().time() >= deadline:
            msg = f"the broker does not show the new ACLs of {user} after {timeout_s:g} s"
            raise StackError(msg)
        await asyncio.sleep(0.05)
