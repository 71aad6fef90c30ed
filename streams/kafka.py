"""Every Kafka client of the product is built here, from the one ``Settings`` object.

The options all clients share (the brokers, and whatever a deployment needs to reach them)
come from ``client_options``; each factory adds only what its role needs. The worker's
input consumer, its producer, the group-less readers (restore, replicas), the topic admin
and the producers' publisher all go through these functions, so a new Kafka setting is one
change here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from mode import Service

from schemas.errors import ConfigurationError, KpiError, UnavailableError
from streams.assignor import SpreadLeadersAssignor
from streams.config import Settings
from streams.logs import quiet_logger

#: The largest request the worker's producer sends: what a reader must fetch per partition.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


def client_options(settings: Settings) -> dict[str, Any]:
    """The options every Kafka client gets: where the brokers are, how to reach them.

    TLS (``SSL``, ``SASL_SSL``) verifies the brokers' certificates and host names against
    ``KPI_KAFKA_SSL_CAFILE`` (or the system's CAs) and presents a client certificate when
    one is configured (mutual TLS); SASL authenticates with the configured mechanism.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of the Kafka clients (``ConfigurationError`` for unusable PEM files)."""
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        msg = f"bad setting KPI_KAFKA_SSL_CAFILE: {settings.kafka_ssl_cafile}: {_ssl_reason(exc)}"
        raise ConfigurationError(msg) from None
    if settings.kafka_ssl_certfile:
        try:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            msg = (
                f"bad setting KPI_KAFKA_SSL_CERTFILE/KEYFILE: {settings.kafka_ssl_certfile},"
                f" {settings.kafka_ssl_keyfile}: {_ssl_reason(exc)}"
            )
            raise ConfigurationError(msg) from None
    return context


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def make_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """An idempotent producer with acks from all: a retried send is written once.

    ``options`` tune it for its role (batching, timeouts, client id).
    """
    return AIOKafkaProducer(
        **client_options(settings), acks="all", enable_idempotence=True, **options
    )


def make_output_producer(settings: Settings) -> AIOKafkaProducer:
    """The worker's producer of dead letters and changelog records."""
    return make_producer(
        settings,
        # zstd level 3 on changelog batches: ratio 6.2 at ~360 MB/s here; aiokafka's lz4 is
        # fixed at level 9 (HC, 85 MB/s, 19% of a single-KPI worker's CPU), snappy 3.8.
        compression_type="zstd",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=MAX_REQUEST_BYTES,
        request_timeout_ms=90_000,
    )


def make_input_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The input consumer: the application's group, offsets committed by hand."""
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.app_id,
        # Topic leaders on different workers. One strategy only: aiokafka 0.14 sends one
        # JoinGroup per configured assignor (the request is built inside the loop over
        # them; aio-libs/aiokafka PR #1168), so a second one changes the member's metadata
        # while the group completes the rebalance, the broker starts another, and two
        # workers started together rejoined each other for good (issue 12).
        partition_assignment_strategy=(SpreadLeadersAssignor,),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # A restarted worker rejoins only after its killed predecessor's session expired.
        session_timeout_ms=10_000,
        # How long the group waits for a live member to rejoin: its revocation first drains
        # the batch in hand (a restore, writes waiting out a Redis outage). aiokafka's
        # default is the session timeout; a member dropped for a slow revocation would still
        # write that batch's changelog after the partitions' next owner restored them.
        # Below the request timeout, which also bounds the JoinGroup call.
        rebalance_timeout_ms=60_000,
        heartbeat_interval_ms=2_000,
        request_timeout_ms=90_000,
        # Fetched data waits in memory until handled: 1M-event bench peak RSS 583 MB with
        # 2 MB / 16 MB, 396 MB with these, at the same throughput.
        max_partition_fetch_bytes=256 * 1024,
        fetch_max_bytes=4 * 1024 * 1024,
    )


def make_reader(settings: Settings, *, pairs: bool = False, **options: Any) -> AIOKafkaConsumer:
    """A consumer outside any group, for reading assigned partitions (restore, replicas).

    With ``pairs``, ``getmany`` gives each record as a ``(key, value)`` tuple instead of a
    ``ConsumerRecord`` (``_key_value_record``): the changelog readers need nothing else.
    """
    if pairs:
        options["key_deserializer"] = _as_pair
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_REQUEST_BYTES,
        **options,
    )


def _as_pair(key: bytes | None) -> bytes | None:
    """The key deserializer of a ``pairs`` reader: the key as it is, and the reader's mark."""
    return key


_consumer_record = PartitionRecords._consumer_record


def _key_value_record(self: PartitionRecords, tp: TopicPartition, record: Any) -> Any:
    """The record builder of aiokafka, with ``(key, value)`` tuples for ``pairs`` readers.

    A ``ConsumerRecord`` (a dataclass of eleven fields, the headers copied into a tuple) is
    most of what a fetched record costs in Python: ~0.6 of ~1.1 us a record (a batch of
    10,000 zstd records). A leader follows every changelog record of the partitions another
    worker owns (about one per input event in the two-worker bench), and a restore reads
    whole changelogs. Positions are kept by aiokafka as before: only the object yielded
    changes. ``tests/unit/test_kafka_pairs.py`` pins the aiokafka code this replaces.
    """
    if self._key_deserializer is _as_pair:
        return (record.key, record.value)
    return _consumer_record(self, tp, record)


PartitionRecords._consumer_record = _key_value_record


def make_admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (topic creation and description)."""
    return AIOKafkaAdminClient(**client_options(settings), **options)


async def seek_to_start(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> None:
    """Position ``tps`` at their first offset, now.

    Not ``seek_to_beginning``: it only requests a reset, and a reset to the latest offset
    already under way (from the assignment) can win the race, so a restore would silently
    read nothing. Explicit offsets leave no race.
    """
    firsts = await consumer.beginning_offsets(list(tps))
    for tp in tps:
        consumer.seek(tp, firsts[tp])


async def read_partitions(
    settings: Settings,
    tps: Sequence[TopicPartition],
    start: dict[TopicPartition, int] | None = None,
    on_records: Callable[[], None] | None = None,
) -> dict[TopicPartition, list[tuple[bytes | None, bytes | None]]]:
    """Read partitions from ``start`` (default: the beginning) up to their current end.

    ``on_records`` is called after each fetch that brought records (progress, for the stall
    watchdog: a long restore is not a stall).
    """
    out: dict[TopicPartition, list[tuple[bytes | None, bytes | None]]] = {tp: [] for tp in tps}
    if not tps:
        return out
    consumer = make_reader(settings, pairs=True)
    await consumer.start()
    try:
        consumer.assign(list(tps))
        ends = await consumer.end_offsets(list(tps))
        await seek_to_start(consumer, [tp for tp in tps if (start or {}).get(tp) is None])
        for tp, first in (start or {}).items():
            consumer.seek(tp, first)
        pending = set()
        for tp in tps:
            if await consumer.position(tp) < ends[tp]:
                pending.add(tp)
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=50_000)
            for tp, records in batches.items():
                out[tp].extend(records)
            if batches and on_records is not None:
                on_records()
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return out


async def connection_problem(settings: Settings, timeout_s: float = 10.0) -> str | None:
    """Why no bootstrap server accepts a connection (TLS, SASL and all); None when one does.

    aiokafka only logs why each bootstrap server failed and then raises "Unable to
    bootstrap"; this connects the same way, once per server, and says what went wrong:
    refused, timed out, an untrusted or expired certificate, a client certificate the
    broker wants or refuses, credentials it rejects.
    """
    options = client_options(settings)
    reasons = []
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    client_id="kpi-check",
                    request_timeout_ms=int(timeout_s * 1000),
                    ssl_context=options.get("ssl_context"),
                    security_protocol=options["security_protocol"],
                    sasl_mechanism=options.get("sasl_mechanism"),
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"),
                ),
                timeout_s,
            )
        except (TimeoutError, KafkaError, OSError, ValueError) as exc:
            reasons.append(explain(exc, settings))
            continue
        conn.close()
        return None
    return "; ".join(dict.fromkeys(reasons)) or "no bootstrap server given"


async def start_reachable(
    settings: Settings,
    client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient,
    timeout_s: float,
    error: type[KpiError] = UnavailableError,
) -> None:
    """Start an aiokafka client within ``timeout_s``, or stop it and raise one line saying why.

    aiokafka logs each failed connection attempt: silenced here, the ``error`` (one line,
    exit 2 in the CLI) says it once, from ``unreachable``.
    """
    with quiet_logger("aiokafka"):
        try:
            await asyncio.wait_for(client.start(), timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
            raise error(await unreachable(settings, exc, timeout_s)) from exc


async def unreachable(settings: Settings, exc: BaseException, timeout_s: float = 10.0) -> str:
    """``cannot reach Kafka at <bootstrap>: <why>``, for a client whose start raised ``exc``.

    aiokafka's error only says that no server answered: unless it hung, connect once more
    (``connection_problem``, at most ``timeout_s``) to say why.
    """
    reason = error_reason(exc)
    if not isinstance(exc, TimeoutError):
        reason = await connection_problem(settings, timeout_s) or reason
    return f"cannot reach Kafka at {settings.kafka_bootstrap}: {reason}"


def explain(exc: BaseException, settings: Settings) -> str:
    """One line on why connecting to Kafka failed, with what to check."""
    protocol = settings.kafka_security_protocol
    # A TLS alert after the handshake (the broker judging the client certificate) surfaces
    # as "connection closed", caused by the SSLError.
    if isinstance(exc, KafkaConnectionError) and isinstance(exc.__cause__, ssl.SSLError):
        exc = exc.__cause__
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = exc.verify_message or exc.reason or "not trusted"
        if "expired" in what:
            return f"the broker's TLS certificate has expired ({what})"
        if "mismatch" in what.lower():
            return f"the broker's TLS certificate does not name this host ({what})"
        return (
            f"the broker's TLS certificate is not trusted ({what};"
            " KPI_KAFKA_SSL_CAFILE names the CA to trust)"
        )
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or str(exc)).upper()
        if "CERTIFICATE_EXPIRED" in reason:
            return "the broker refused the client certificate: it has expired"
        client_alerts = (
            "CERTIFICATE_REQUIRED",
            "UNKNOWN_CA",
            "BAD_CERTIFICATE",
            "CERTIFICATE_UNKNOWN",
        )
        if any(a in reason for a in client_alerts):
            if not settings.kafka_ssl_certfile:
                return (
                    "the broker requires a client certificate"
                    " (KPI_KAFKA_SSL_CERTFILE and KPI_KAFKA_SSL_KEYFILE)"
                )
            # Java answers an expired client certificate with "certificate unknown": the
            # certificate's own dates tell.
            outdated = _outside_validity(settings.kafka_ssl_certfile)
            if outdated:
                return (
                    f"the broker refused the client certificate"
                    f" {settings.kafka_ssl_certfile}: {outdated}"
                )
            return (
                f"the broker refused the client certificate {settings.kafka_ssl_certfile}"
                f" ({exc.reason}: not signed by a CA it trusts, expired, or not yet valid)"
            )
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason:
            return (
                f"TLS handshake failed: the listener does not speak TLS"
                f" (KPI_KAFKA_SECURITY_PROTOCOL={protocol})"
            )
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"authentication failed: the broker rejected user"
            f" {settings.kafka_sasl_username!r} with {settings.kafka_sasl_mechanism}"
            " (wrong password or unknown user)"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"{settings.kafka_sasl_mechanism} is not enabled on this listener ({exc})"
    if isinstance(exc, IllegalSaslStateError):
        return f"the listener does not take SASL (KPI_KAFKA_SECURITY_PROTOCOL={protocol})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is Kafka running there?)"
    if isinstance(exc, ConnectionResetError) and protocol in ("SSL", "SASL_SSL"):
        # A plaintext listener drops the TLS hello.
        return (
            "the server closed the connection during the TLS handshake (not a TLS listener?"
            f" KPI_KAFKA_SECURITY_PROTOCOL={protocol})"
        )
    if isinstance(exc, TimeoutError):
        return "timed out"
    if protocol != "PLAINTEXT" or not isinstance(exc, KafkaConnectionError | ConnectionError):
        return error_reason(exc)
    return (
        "the broker closed the connection (a TLS or SASL listener?"
        " KPI_KAFKA_SECURITY_PROTOCOL is PLAINTEXT)"
    )


def _outside_validity(certfile: str) -> str | None:
    """Why a PEM certificate is not valid now (expired, not yet valid); None if it is.

    None too when it cannot be read: then nothing more is known than the broker said.
    """
    try:
        decoded = ssl._ssl._test_decode_cert(certfile)  # type: ignore[attr-defined]  # noqa: SLF001
        not_before = ssl.cert_time_to_seconds(decoded["notBefore"])
        not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    except (OSError, ssl.SSLError, KeyError, ValueError, AttributeError):
        return None
    now = time.time()
    if now > not_after:
        return f"it has expired (valid until {decoded['notAfter']})"
    if now < not_before:
        return f"it is not valid before {decoded['notBefore']}"
    return None


def error_reason(exc: BaseException) -> str:
    """One line on why a Kafka call failed."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, KafkaConnectionError | ConnectionError):
        return "connection failed (is Kafka running there?)"
    name = type(exc).__name__
    lines = str(exc).strip().splitlines()
    # aiokafka's errors already start with their class name.
    text = lines[0].removeprefix(f"{name}: ") if lines else ""
    return f"{name}: {text}" if text and text != name else name


class Producer(Service):
    """An aiokafka producer that lives as long as the service (made by ``make``).

    aiokafka clients belong to the loop they are created in, so the client is made when the
    service starts, and stopped (its pending sends flushed) when it stops.
    """

    def __init__(self, make: Callable[[], AIOKafkaProducer], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._make = make
        self._client: AIOKafkaProducer | None = None

    @property
    def client(self) -> AIOKafkaProducer:
        """The started producer."""
        if self._client is None:
            msg = "the producer is used before its service started"
            raise RuntimeError(msg)
        return self._client

    async def on_start(self) -> None:
        """Make and start the client."""
        self._client = self._make()
        await self._client.start()

    async def on_stop(self) -> None:
        """Stop the client (after sending what is pending)."""
        if self._client is not None:
            await self._client.stop()
