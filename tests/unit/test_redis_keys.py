"""The Redis keys: the default prefix spells version 1's keys exactly; another renames them all."""

from __future__ import annotations

from streams.config import Settings
from streams.redis_keys import RedisKeys


def test_the_default_prefix_gives_the_version_1_keys_byte_for_byte() -> None:
    keys = RedisKeys(Settings().redis_prefix)
    assert keys.catalog == "kpi:catalog"
    assert keys.changes == "kpi:changes"
    assert keys.progress == "kpi:_progress"
    assert keys.newest("dso", "30d", "all") == "kpi:dso:30d:all"
    assert keys.history("dso", "1h", "sales") == "kpi:dso:1h:sales:history"
    assert keys.pattern == "kpi:*"


def test_every_key_of_an_instance_lies_under_its_own_prefix() -> None:
    keys = RedisKeys("eu:kpi")
    names = [
        keys.catalog,
        keys.changes,
        keys.progress,
        keys.newest("dso", "30d", "all"),
        keys.history("dso", "1h", "sales"),
    ]
    assert names == [
        "eu:kpi:catalog",
        "eu:kpi:changes",
        "eu:kpi:_progress",
        "eu:kpi:dso:30d:all",
        "eu:kpi:dso:1h:sales:history",
    ]
