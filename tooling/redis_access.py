"""The Redis ACL rules of the product's roles: least privilege, one key prefix.

``kpi stack up --secure`` creates its Redis users with these rules, docs/OPERATIONS.md lists
them, and the integration tests run the worker and the readers as users with exactly these
rights, so a command the code starts to use without adding it here fails a test.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["worker", "reader"]
ROLES: tuple[Role, ...] = ("worker", "reader")

#: Commands every client needs to connect and check the connection. (redis-py's CLIENT
#: SETINFO on connect may be refused: it ignores the error.)
_CONNECTION = ("auth", "hello", "select", "ping")

#: The commands each role runs, and nothing else.
COMMANDS: dict[Role, tuple[str, ...]] = {
    # The Redis sink (one Lua script per batch: EVALSHA, loaded once by the pipeline
    # with SCRIPT EXISTS / SCRIPT LOAD; it runs ZREMRANGEBYSCORE, ZADD, ZREMRANGEBYRANK,
    # HSET, XADD on the keys it declares), the catalog and progress hashes (HSET,
    # HGETALL in MULTI/EXEC), and the data-loss check (EXISTS).
    "worker": (
        *_CONNECTION,
        "multi",
        "exec",
        "discard",
        "evalsha",
        "eval",
        "script|load",
        "script|exists",
        "hset",
        "hgetall",
        "exists",
        "zadd",
        "zremrangebyscore",
        "zremrangebyrank",
        "xadd",
    ),
    # ``kpi get`` / ``watch`` and ``streams.reader.KpiReader``: the hashes, the history,
    # the change feed, and the scopes of a KPI (SCAN MATCH under the prefix).
    "reader": (*_CONNECTION, "hgetall", "zrangebyscore", "xread", "scan"),
}


def redis_acl_rule(prefix: str, role: Role) -> str:
    """The ACL rule (the part of ``ACL SETUSER`` after the name and password) of ``role``.

    Keys: ``<prefix>:*`` only (read and write for the worker, read for a reader); no
    Pub/Sub channels; only the role's commands.
    """
    keys = f"~{prefix}:*" if role == "worker" else f"%R~{prefix}:*"
    commands = " ".join(f"+{c}" for c in COMMANDS[role])
    return f"resetkeys {keys} resetchannels -@all {commands}"
