"""The Redis ACL rules (tooling/redis_access.py), and docs/OPERATIONS.md that lists them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tooling.redis_access import COMMANDS, ROLES, redis_acl_rule

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"


def test_docs_operations_lists_the_rules_of_the_default_prefix() -> None:
    text = OPERATIONS.read_text()
    section = text.split("## Redis ACL\n", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"^ACL SETUSER kpi-(\w+) reset on >\w+ (.+)$", section, re.MULTILINE)
    assert shown == [(role, redis_acl_rule("kpi", role)) for role in ROLES]


def test_a_rule_gives_its_prefix_only_and_its_commands_only() -> None:
    assert redis_acl_rule("eu", "worker") == (
        "resetkeys ~eu:* resetchannels -@all " + " ".join(f"+{c}" for c in COMMANDS["worker"])
    )
    # A reader reads: Redis refuses it every write, whatever its commands.
    assert redis_acl_rule("eu", "reader").startswith("resetkeys %R~eu:* resetchannels -@all +")


@pytest.mark.parametrize("prefix", ["", "k*", "kpi?", "kpi[12]", "kpi eu", "a\\b"])
def test_a_prefix_that_would_widen_the_key_pattern_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="glob"):
        redis_acl_rule(prefix, "worker")
