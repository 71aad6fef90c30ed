"""The sinks of the KPI values, registered in one place (``make_sinks``)."""

from __future__ import annotations

from streams.config import Settings
from streams.progress import ProgressStore
from streams.redis_client import RedisConnection
from streams.redis_keys import RedisKeys
from streams.sinks.base import Sink
from streams.sinks.metrics import Metrics
from streams.sinks.prometheus import PrometheusSink
from streams.sinks.redis_sink import RedisSink
from streams.targets import configured_catalog


def make_sinks(
    settings: Settings, metrics: Metrics, redis: RedisConnection, progress: ProgressStore
) -> list[Sink]:
    """Every sink a worker writes to, in the order each batch is handed to them."""
    return [
        RedisSink(
            redis,
            progress,
            RedisKeys(settings.redis_prefix),
            catalog=configured_catalog(settings),
            currency=settings.currency,
            on_lost=metrics.redis_data_lost.inc,
        ),
        PrometheusSink(metrics),
    ]
