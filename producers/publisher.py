"""Publishing simulated (or any) events to the product's Kafka topics."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.errors import KpiError
from streams.access import check_kafka_access
from streams.config import Settings
from streams.kafka import error_reason, make_producer, unreachable


class PublishError(KpiError):
    """Kafka is unreachable or refused messages; the message is one line for the user."""


class Publisher:
    """An idempotent Kafka producer for the product's topics, batching its sends.

    ``await send(...)`` only enqueues: aiokafka batches per partition (``linger_ms``), and
    delivery results are collected every ``flush_every`` messages, on :meth:`flush` and on
    exit, so a failed delivery is reported within one batch instead of stalling each send.
    Retriable broker errors are retried by aiokafka for up to ``request_timeout_ms``;
    idempotence (with ``acks="all"``) keeps those retries from writing duplicates.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        linger_ms: int = 10,
        flush_every: int = 5000,
        start_timeout_s: float = 12.0,
        request_timeout_ms: int = 30_000,
        client_id: str = "kpi-simulator",
        check_access: bool = True,
    ) -> None:
        self._settings = settings
        self._linger_ms = linger_ms
        self._flush_every = max(1, flush_every)
        self._start_timeout_s = start_timeout_s
        self._request_timeout_ms = request_timeout_ms
        self._client_id = client_id
        # Whether start checks the publisher's ACLs (one line naming a missing right,
        # instead of a refusal per batch).
        self._check_access = check_access
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []
        #: Messages handed to :meth:`send`.
        self.sent = 0
        #: Messages acknowledged by Kafka (as of the last flush).
        self.delivered = 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            await self.stop()

    async def start(self) -> None:
        """Connect to Kafka; :class:`PublishError` if that fails within ``start_timeout_s``."""
        producer = make_producer(
            self._settings,
            client_id=self._client_id,
            linger_ms=self._linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=self._request_timeout_ms,
            retry_backoff_ms=200,
        )
        try:
            await asyncio.wait_for(producer.start(), self._start_timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            msg = await unreachable(self._settings, exc, self._start_timeout_s)
            raise PublishError(msg) from exc
        if self._check_access:
            try:
                await check_kafka_access(self._settings, "publisher")
            except BaseException:
                await producer.stop()
                raise
        self._producer = producer

    async def stop(self) -> None:
        """Disconnect (pending messages are sent first by aiokafka)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, topic: str, key: str, payload: dict[str, Any] | bytes) -> None:
        """Enqueue one message for ``topic`` (unprefixed) keyed by the entity ``key``.

        Dicts are serialised with orjson; bytes are sent as they are (e.g. invalid JSON).
        """
        producer = self._producer
        if producer is None:
            msg = "Publisher.send() before start(): use 'async with Publisher(settings)'"
            raise PublishError(msg)
        value = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        try:
            future = await producer.send(self._settings.topic(topic), value=value, key=key.encode())
        except KafkaError as exc:
            msg = f"cannot publish to {self._settings.topic(topic)}: {error_reason(exc)}"
            raise PublishError(msg) from exc
        self._pending.append(future)
        self.sent += 1
        if len(self._pending) >= self._flush_every:
            await self.flush()

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged; raise if any was not."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        self.delivered += len(results) - len(failures)
        if failures:
            msg = f"{len(failures)} message(s) not delivered to Kafka: {error_reason(failures[0])}"
            raise PublishError(msg) from failures[0]
