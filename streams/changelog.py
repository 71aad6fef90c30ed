"""Sending the state changelog records of a batch (one compacted topic per input topic)."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.checkpoint import Changelog
from streams.config import INPUT_TOPICS, Settings
from streams.kafka import Producer
from streams.topics import changelog_topic


class ChangelogWriter:
    """Sends changelog records as whole record batches per partition, and awaits them."""

    def __init__(self, settings: Settings, producer: Producer) -> None:
        self._topics = {t: changelog_topic(settings, t) for t in INPUT_TOPICS}
        self._producer = producer

    async def send(self, changelog: Changelog) -> None:
        """Send every record; return once all are acknowledged."""
        producer = self._producer.client
        futures: list[asyncio.Future[Any]] = []
        for topic, p, records in changelog:
            name = self._topics[topic]
            # Whole batches per changelog partition: one future per ~1 MB, not per record.
            batch = producer.create_batch()
            for record in records:
                if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, name, partition=p))
                    batch = producer.create_batch()
                    if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                        msg = f"changelog record of {len(record.value or b'')} bytes too large"
                        raise RuntimeError(msg)
            if batch.record_count():
                futures.append(await producer.send_batch(batch, name, partition=p))
        if futures:
            await asyncio.gather(*futures)
