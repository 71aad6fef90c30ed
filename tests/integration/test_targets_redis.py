"""``KPI_TARGETS_FILE`` against a real redis-server: the catalog hash and ``kpi get``'s verdict.

The issue's "done when": changing a target in the YAML file changes ``kpi get``'s verdict with
no code change (the rules and dashboards half is tests/unit/test_targets.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from streams.config import Settings
from streams.progress import ProgressStore
from streams.reader import KpiReader
from streams.redis_client import RedisConnection
from streams.redis_keys import RedisKeys
from streams.sinks.redis_sink import RedisSink
from streams.targets import configured_catalog
from tests.cli import run_kpi_in
from tests.integration.chaos import redis_server

NEWEST = {
    "value": "38.0",
    "window_start": "2026-02-17T00:00:00Z",
    "window_end": "2026-03-19T00:00:00Z",
    "label": "2026-03-18",
    "count": "12",
    "final": "0",
    "updated_at": "2026-03-18T10:00:00Z",
}


def test_the_catalog_hash_and_kpi_get_follow_the_targets_file(tmp_path: Path) -> None:
    loose = tmp_path / "loose.yaml"
    loose.write_text("dso: {value: 40, scopes: {sales: 39}}\n", encoding="utf-8")
    strict = tmp_path / "strict.yaml"
    strict.write_text("dso: {value: 40, scopes: {sales: 35}}\n", encoding="utf-8")
    with redis_server(tmp_path / "redis", persistent=False) as server:
        client = server.client()
        client.hset("kpi:dso:30d:sales", mapping=NEWEST)
        client.hset("kpi:dso:30d:hr", mapping=NEWEST)
        client.close()

        # The worker's sink writes the catalog of the configured targets.
        settings = Settings(redis_url=server.url, targets_file=str(strict))

        async def write_and_read() -> dict[str, object]:
            redis = RedisConnection(server.url)
            keys = RedisKeys()
            sink = RedisSink(
                redis,
                ProgressStore(redis, keys),
                keys,
                catalog=configured_catalog(settings),
                currency="USD",
            )
            await sink.write_catalog()
            await redis.close()
            async with KpiReader(server.url) as reader:
                return (await reader.catalog())["dso"]

        entry = asyncio.run(write_and_read())
        assert entry["target"] == {
            "value": 40,
            "direction": "at_most",
            "goal": "",
            "window": "30d",
            "scopes": {"sales": 35},
        }

        env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
        env.update(KPI_REDIS_URL=server.url, KPI_STACK_DIR=str(tmp_path / "stack"))

        def verdict(targets: Path, scope: str) -> str:
            done = run_kpi_in({**env, "KPI_TARGETS_FILE": str(targets)}, "get", "dso", "-s", scope)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        assert verdict(loose, "sales").endswith(
            "target at most 39.0 d for sales, judged on 30d] meets its target"
        )
        # The same value, the file changed: sales now misses its own target...
        assert verdict(strict, "sales").endswith(
            "target at most 35.0 d for sales, judged on 30d] misses its target"
        )
        # ...while hr is judged against the KPI's value.
        assert verdict(strict, "hr").endswith(
            "target at most 40.0 d, judged on 30d] meets its target"
        )
