"""The Redis ACL rules of the product's roles: least privilege, one key prefix.

``kpi stack up --secure`` creates its Redis users with these rules, docs/OPERATIONS.md lists
them (a unit test keeps it in step), and the integration tests run the worker and the readers
as users with exactly these rights (tests/integration/test_redis_acl.py), so a command the
code starts to use without adding it here fails a test.

The worker's commands are those seen in the traffic of a worker run (MONITOR; ACL LOG under
the rule: no refusal) that also went through a Redis flush (the data-loss repair) and a
SCRIPT FLUSH (the script loaded again), plus the PING of its start check; the tests show
each one is needed (without it, ACL LOG names it). Not listed because Redis never
refuses them: AUTH and HELLO (redis-py 8 connects with ``HELLO 3 AUTH``). Not sent: CLIENT
SETINFO (the product's clients turn it off, see streams/redis_client.py). Sent but unknown to
Redis and Valkey (so it cannot be granted there either, and nothing is logged): redis-py's
``CLIENT MAINT_NOTIFICATIONS`` handshake, a Redis Cloud / Redis Software feature.
The rules need Redis 7.0 or later (``%R~``), or Valkey.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["worker", "reader"]
ROLES: tuple[Role, ...] = ("worker", "reader")

#: The commands each role runs, and nothing else.
COMMANDS: dict[Role, tuple[str, ...]] = {
    "worker": (
        # The database of KPI_REDIS_URL (``/1``...); every connection sends it.
        "select",
        # At start, the worker checks once that Redis answers (streams.redis_client's
        # ``check_reachable``).
        "ping",
        # The catalog write and every batch are one MULTI/EXEC each.
        "multi",
        "exec",
        # The batch is one Lua script (WRITE_BATCH), loaded by redis-py's pipeline with
        # SCRIPT EXISTS before each transaction and SCRIPT LOAD when Redis does not have it
        # (first start, Redis restarted or SCRIPT FLUSH).
        "evalsha",
        "script|exists",
        "script|load",
        # What the script runs, on the keys it declares (Redis checks the user's rights for
        # each command a script runs): history members, newest-window hashes, change feed.
        "zremrangebyscore",
        "zadd",
        "zremrangebyrank",
        "hset",
        "xadd",
        # The closing progress (HSET, HGETALL) and the data-loss check on the catalog.
        "hgetall",
        "exists",
    ),
    # ``kpi get`` / ``get --all`` / ``watch`` (HGETALL, ZRANGEBYSCORE for ``--history``) and
    # ``streams.reader.KpiReader``: also its change feed (XREAD) and ``scopes`` (SCAN MATCH
    # under the prefix; Redis does not filter SCAN by key pattern, so a reader sees the
    # names, not the values, of other keys in the database).
    "reader": ("select", "hgetall", "zrangebyscore", "xread", "scan"),
}


def redis_acl_rule(prefix: str, role: Role) -> str:
    """The ACL rule (the part of ``ACL SETUSER`` after the name and password) of ``role``.

    Keys: ``<prefix>:*`` only (read and write for the worker, read-only for a reader); no
    Pub/Sub channels; only the role's commands.
    """
    # A glob character would widen the key pattern beyond the instance's own keys.
    if not prefix or any(c.isspace() or c in "*?[]\\" for c in prefix):
        msg = f"a Redis key prefix without spaces or glob characters, not {prefix!r}"
        raise ValueError(msg)
    keys = f"~{prefix}:*" if role == "worker" else f"%R~{prefix}:*"
    commands = " ".join(f"+{c}" for c in COMMANDS[role])
    return f"resetkeys {keys} resetchannels -@all {commands}"
