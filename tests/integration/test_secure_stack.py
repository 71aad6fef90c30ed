"""`kpi stack up --secure` is secured for real: TLS only, SASL and mTLS users, least privilege."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import uuid4

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from streams.config import Settings
from streams.kafka import client_options, make_admin, make_input_consumer, make_producer
from streams.topics import changelog_topic
from tests.cli import run_kpi_in
from tests.integration.helpers import logs_holding, stack_passwords
from tooling.stack import (
    Endpoint,
    free_port,
    kafka_answers,
    parse_kafka_bootstrap,
    role_settings,
    stack_down,
    stack_status,
    stack_up,
)
from tooling.stack_secure import KAFKA_USERS, SecureFiles, read_secret

from .test_backfill import simulated_rows, write_jsonl

if TYPE_CHECKING:
    from .conftest import SecureStack


def _kpi(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_kpi_in(env, *args, timeout=timeout)


async def _read(
    settings: Settings, topics: list[str], count: int, timeout_s: float = 30.0
) -> list[bytes]:
    """``count`` values of ``topics`` read as the consumer group of ``settings`` (its app id)."""
    consumer = make_input_consumer(settings)
    await consumer.start()
    try:
        consumer.subscribe(topics)
        values: list[bytes] = []
        async with asyncio.timeout(timeout_s):
            while len(values) < count:
                batches = await consumer.getmany(timeout_ms=500)
                values += [r.value for records in batches.values() for r in records]
        return values
    finally:
        await consumer.stop()


# --- the stack ------------------------------------------------------------------------------


def test_up_ends_with_the_worker_line_of_files_and_status_knows_it_is_secure(
    secure_stack: SecureStack,
) -> None:
    env = secure_stack.process_env(secure_stack.base, "admin")
    result = _kpi("stack", "up", "--secure", env=env)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("stack: KPI_KAFKA_BOOTSTRAP=")
    variables = dict(word.split("=", 1) for word in shlex.split(last.removeprefix("stack: ")))
    assert variables == secure_stack.info.worker_environment
    assert variables["KPI_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert variables["KPI_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert variables["KPI_KAFKA_SASL_USERNAME"] == "kpi-worker"
    assert {"KPI_KAFKA_SASL_PASSWORD_FILE", "KPI_REDIS_URL_FILE"} <= variables.keys()
    assert not {"KPI_KAFKA_SASL_PASSWORD", "KPI_REDIS_URL"} & variables.keys()
    for password in stack_passwords(secure_stack.stack_dir):
        assert password not in result.stdout + result.stderr

    status = _kpi("stack", "status", env=env)
    assert status.returncode == 0, status.stderr
    kafka_line, redis_line = status.stdout.splitlines()
    assert kafka_line.split()[:2] == ["kafka", "running"]
    assert "(SASL_SSL; mTLS 127.0.0.1:" in kafka_line
    assert redis_line.split()[:2] == ["redis", "running"]
    assert "(TLS)" in redis_line


def test_env_lines_export_with_eval_and_give_each_role_its_user(secure_stack: SecureStack) -> None:
    env = secure_stack.process_env(secure_stack.base, "admin")
    for name in list(env):
        if name.startswith("KPI_") and name != "KPI_STACK_DIR":
            env.pop(name)
    env["KPI_KAFKA_BOOTSTRAP"] = secure_stack.base.kafka_bootstrap
    show = (
        "from urllib.parse import urlsplit; from streams.config import Settings; s = Settings(); "
        "print(s.kafka_security_protocol, s.kafka_sasl_username or '-', "
        "urlsplit(s.redis_url).username or '-')"
    )
    kpi = f"{shlex.quote(sys.executable)} -m kpi"
    python = shlex.quote(sys.executable)
    seen = {}
    for role in ("worker", "publisher", "reader", "admin"):
        script = f'eval "export $({kpi} stack env --role {role})" && {python} -c "{show}"'
        result = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        seen[role] = result.stdout.split()
    assert seen == {
        "worker": ["SASL_SSL", "kpi-worker", "kpi-worker"],
        "publisher": ["SASL_SSL", "kpi-publisher", "-"],
        "reader": ["PLAINTEXT", "-", "kpi-reader"],
        "admin": ["SASL_SSL", "admin", "admin"],
    }


def test_nothing_answers_plaintext(secure_stack: SecureStack) -> None:
    paths = SecureFiles.at(secure_stack.stack_dir)
    kafka = parse_kafka_bootstrap(secure_stack.base.kafka_bootstrap)
    config = (secure_stack.stack_dir / "kafka" / "server.properties").read_text()
    protocols = next(
        line.split("=", 1)[1]
        for line in config.splitlines()
        if line.startswith("listener.security.protocol.map=")
    )
    assert sorted(p.split(":")[1] for p in protocols.split(",")) == ["SASL_SSL", "SSL", "SSL"]
    mtls_port = int((secure_stack.stack_dir / "kafka" / "mtls.port").read_text())
    controller_port = int((secure_stack.stack_dir / "kafka" / "controller.port").read_text())
    for port in (kafka.port, mtls_port, controller_port):
        assert not kafka_answers(Endpoint(kafka.host, port)), f"port {port} answers plaintext"

    redis_port = stack_status(secure_stack.base)[1].endpoint.port
    plain = redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=2)
    with pytest.raises(redis.RedisError):
        plain.ping()
    plain.close()
    # TLS but no user: the default user is off.
    anonymous = redis.Redis(
        host="127.0.0.1", port=redis_port, ssl=True, ssl_ca_certs=str(paths.ca_cert)
    )
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()


# --- least privilege ------------------------------------------------------------------------


def test_the_publisher_simulates_and_publishes_and_the_worker_consumes(
    secure_stack: SecureStack, secure_env: Settings, tmp_path: Path
) -> None:
    env = secure_stack.process_env(secure_env, "publisher")
    result = _kpi(
        "simulate",
        *("--count", "200", "--start", "5d", "--speed", "0", "--rate", "0", "--invalid", "0"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "created topics" not in result.stdout
    write_jsonl(tmp_path / "events.jsonl", simulated_rows(50))
    result = _kpi("publish", str(tmp_path / "events.jsonl"), env=env)
    assert result.returncode == 0, result.stderr
    assert "published 50" in result.stdout
    worker = secure_stack.as_role(secure_env, "worker")
    values = asyncio.run(_read(worker, list(worker.input_topics), 250))
    assert len(values) == 250
    assert all(orjson.loads(v)["event_id"] for v in values)


async def test_the_publisher_may_not_read_the_group_the_changelog_or_create_topics(
    secure_stack: SecureStack, secure_env: Settings
) -> None:
    publisher = secure_stack.as_role(secure_env, "publisher")
    # It writes its input topics ...
    producer = make_producer(publisher)
    await producer.start()
    try:
        await producer.send_and_wait(publisher.input_topics[0], b"{}", key=b"k")
        # ... but not the worker's.
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(publisher.dead_letter_topic, b"{}", key=b"k")
    finally:
        await producer.stop()

    with pytest.raises(GroupAuthorizationFailedError):
        await _read(publisher, [publisher.input_topics[0]], 1, timeout_s=20)

    admin = make_admin(publisher)
    await admin.start()
    try:
        # The changelog: not even its metadata (29: topic authorization failed).
        changelog = changelog_topic(publisher, "invoices")
        described = await admin.describe_topics([changelog])
        assert [(d["topic"], d["error_code"]) for d in described] == [(changelog, 29)]
        response = await admin.create_topics([NewTopic(publisher.topic("extra"), 1, 1)])
        assert [code for _, code, *_ in response.topic_errors] == [29]
    finally:
        await admin.close()


async def test_mutual_tls_client_certificate_is_the_worker_with_its_acls(
    secure_stack: SecureStack, secure_env: Settings
) -> None:
    publisher = secure_stack.as_role(secure_env, "publisher", mtls=True)
    assert publisher.kafka_security_protocol == "SSL"
    producer = make_producer(publisher)
    await producer.start()
    try:
        await producer.send_and_wait(publisher.input_topics[1], b"by certificate", key=b"m")
    finally:
        await producer.stop()

    worker = secure_stack.as_role(secure_env, "worker", mtls=True)
    assert not worker.kafka_sasl_username
    assert await _read(worker, [worker.input_topics[1]], 1) == [b"by certificate"]
    # The certificate is kpi-worker, not a super user: inputs are not its to write.
    producer = make_producer(worker)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(worker.input_topics[1], b"no", key=b"m")
    finally:
        await producer.stop()

    # No certificate, no connection.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=worker.kafka_bootstrap,
        security_protocol="SSL",
        ssl_context=ssl.create_default_context(cafile=worker.kafka_ssl_cafile),
        request_timeout_ms=5000,
    )
    try:
        with pytest.raises((KafkaConnectionError, KafkaError, OSError)):
            async with asyncio.timeout(20):
                await consumer.start()
    finally:
        await consumer.stop()


def test_kcat_publishes_over_sasl_ssl_and_reads_back_by_certificate(
    secure_stack: SecureStack, secure_env: Settings, tmp_path: Path
) -> None:
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat not installed: make install (Debian package kcat)"
    files = SecureFiles.at(secure_stack.stack_dir)
    user = KAFKA_USERS["publisher"]
    config = tmp_path / "kcat.conf"
    config.touch(mode=0o600)
    # PLAIN, not SCRAM: Debian 12's kcat (librdkafka 2.0.2) fails SCRAM against Kafka 4
    # (librdkafka < 2.6.1 repeats the client nonce); PLAIN over TLS is the same user.
    config.write_text(
        "security.protocol=SASL_SSL\n"
        "sasl.mechanisms=PLAIN\n"
        f"sasl.username={user}\n"
        f"sasl.password={read_secret(files.kafka_password(user))}\n"
        f"ssl.ca.location={files.ca_cert}\n"
    )
    topic = secure_env.input_topics[2]
    key = f"kcat-{uuid4().hex[:6]}"
    produced = subprocess.run(
        [kcat, "-F", str(config), "-b", secure_env.kafka_bootstrap, "-P", "-t", topic, "-K", "\t"],
        input=f'{key}\t{{"from": "kcat"}}\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr

    mtls = secure_stack.as_role(secure_env, "worker", mtls=True)
    consumed = subprocess.run(
        [
            kcat,
            *("-b", mtls.kafka_bootstrap, "-X", "security.protocol=SSL"),
            *("-X", f"ssl.ca.location={files.ca_cert}"),
            *("-X", f"ssl.certificate.location={mtls.kafka_ssl_certfile}"),
            *("-X", f"ssl.key.location={mtls.kafka_ssl_keyfile}"),
            *("-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k %s\\n"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert consumed.returncode == 0, consumed.stderr
    assert f'{key} {{"from": "kcat"}}' in consumed.stdout.splitlines()


def test_redis_users_keep_to_their_rights(secure_stack: SecureStack, secure_env: Settings) -> None:
    worker = secure_stack.as_role(secure_env, "worker")
    reader = secure_stack.as_role(secure_env, "reader")
    prefix = secure_env.redis_prefix
    writer = redis.Redis.from_url(worker.redis_url, **worker.redis_options())
    looker = redis.Redis.from_url(reader.redis_url, **reader.redis_options())
    try:
        writer.hset(f"{prefix}:probe", "a", "1")
        assert looker.hgetall(f"{prefix}:probe") == {b"a": b"1"}
        with pytest.raises(redis.exceptions.NoPermissionError):
            looker.hset(f"{prefix}:probe", "a", "2")
        with pytest.raises(redis.exceptions.NoPermissionError):
            writer.hset("other:probe", "a", "1")
    finally:
        writer.close()
        looker.close()


# --- life cycle -----------------------------------------------------------------------------


def test_down_then_up_again_keeps_certificates_passwords_and_rights(tmp_path: Path) -> None:
    # A second secure stack beside the session's: its own dir and ports.
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=str(tmp_path / "stack"),
        topic_prefix="again.",
    )
    files = SecureFiles.at(tmp_path / "stack")
    try:
        first = stack_up(settings, secure=True, echo=lambda _: None)
        assert first.started == ("kafka", "redis")
        ca, passwords = files.ca_cert.read_bytes(), stack_passwords(files.root)
        assert stack_down(settings, echo=lambda _: None) == ("kafka", "redis")
        assert not any(status.running for status in stack_status(settings))

        lines: list[str] = []
        again = stack_up(settings, secure=True, echo=lines.append)
        assert again.started == ("kafka", "redis")
        assert not any("formatted" in line or "made a CA" in line for line in lines)
        assert (files.ca_cert.read_bytes(), stack_passwords(files.root)) == (ca, passwords)
        assert again.worker_environment == first.worker_environment
        # The SCRAM users made at format time still authenticate, with their ACLs.
        worker = role_settings(settings, "worker")
        assert kafka_answers(
            parse_kafka_bootstrap(settings.kafka_bootstrap), client_options(worker)
        )
    finally:
        stack_down(settings, echo=lambda _: None)


def test_no_password_in_any_log_of_the_stack(secure_stack: SecureStack) -> None:
    passwords = stack_passwords(secure_stack.stack_dir)
    logs = [
        *secure_stack.stack_dir.glob("kafka/logs/*"),
        secure_stack.stack_dir / "redis/redis.log",
    ]
    assert len(logs) >= 3
    # Every file in logs_holding's view: those above, and any other log of the stack.
    assert not logs_holding(passwords, secure_stack.stack_dir)
