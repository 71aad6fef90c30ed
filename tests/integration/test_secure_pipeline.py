"""The product over the secured stack: least-privilege users, TLS everywhere, one-line failures.

- The full pipeline (publish as the publisher, `kpi worker` as the worker over SASL_SSL or
  mutual TLS, Redis over TLS as the worker's ACL user, `kpi get` as the reader) gives every
  closed window of the batch reference, as the plaintext run does
  (test_worker_reference.py), with the users holding exactly the documented rights.
- Each failure of SPEC section 6 (wrong password, unknown user, an untrusted or expired
  certificate, a missing client certificate, a plaintext client, a missing ACL, Redis
  credentials or CA) ends the command within 30 s with one line that says which, exit 2.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from streams.access import Operation
from streams.config import Settings
from tests.cli import run_kpi_in
from tests.integration.chaos import as_published, assert_exact, live_log
from tests.integration.helpers import Worker, publish, stack_passwords
from tooling.kafka_access import KafkaAcl, PatternType, ResourceType, revoke
from tooling.stack_secure import KAFKA_USERS, SecureFiles

if TYPE_CHECKING:
    from .conftest import SecureStack


def _kpi(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str, float]:
    began = time.monotonic()
    done = run_kpi_in(env, *args, timeout=timeout)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - began


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, **settings.redis_options())


@pytest.mark.parametrize("mtls", [False, True], ids=["sasl_ssl", "mutual_tls"])
def test_pipeline_as_least_privilege_users_equals_the_reference(
    secure_stack: SecureStack, secure_env: Settings, tmp_path: Path, mtls: bool
) -> None:
    settings = secure_env
    # The reference's view of the log; checked with the worker's own Kafka rights (its
    # dead letters, its group's lag) and Redis read as the administrator.
    log = live_log(
        secure_stack.as_role(settings, "worker", mtls=mtls), seed=5, n_events=1500, days=3
    )
    assert log.n_windows > 300

    worker_env = secure_stack.process_env(settings, "worker", mtls=mtls)
    worker_env["PYTHONUNBUFFERED"] = "1"
    # Secrets reach the worker as files only.
    assert "KPI_KAFKA_SASL_PASSWORD" not in worker_env
    assert "KPI_REDIS_URL" not in worker_env
    assert worker_env["KPI_KAFKA_SECURITY_PROTOCOL"] == ("SSL" if mtls else "SASL_SSL")
    worker = Worker(settings, tmp_path / "worker.log", env=worker_env).start()
    try:
        publish(secure_stack.as_role(settings, "publisher"), as_published(log.messages))
        admin = secure_stack.as_role(settings, "admin")
        r = redis.Redis.from_url(admin.redis_url, **admin.redis_options())
        assert_exact(r, log)

        # A reader (Redis only, read-only on the prefix) sees the values with `kpi get`.
        code, out, err, _ = _kpi("get", "--all", env=secure_stack.process_env(settings, "reader"))
        assert code == 0, err
        assert "system_uptime" in out, out
        assert "rediss://kpi-reader:***@" in out
    finally:
        worker.stop()
    text = worker.log()
    assert "rediss://kpi-worker:***@" in text  # the start-up line, password masked
    leaked = [s for s in stack_passwords(secure_stack.stack_dir) if s in text]
    assert not leaked, "the worker's log holds a password"


# --- failures: one line, exit 2, within 30 s ----------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _other_ca(where: Path) -> Path:
    """A CA nobody in the stack trusts or is signed by."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "other-ca.key", "-subj", "/CN=some other CA", "-days", "2",
        "-out", "other-ca.crt", cwd=where,
    )  # fmt: skip
    return where / "other-ca.crt"


def _expired_client_certificate(files: SecureFiles, user: str, where: Path) -> tuple[Path, Path]:
    """A client certificate for ``user`` signed by the stack's CA, valid only in 2020."""
    (where / "index.txt").write_text("")
    (where / "serial").write_text("01\n")
    (where / "ca.cnf").write_text(
        "[ca]\ndefault_ca = test\n"
        "[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
        "default_md = sha256\npolicy = any\nunique_subject = no\n"
        "[any]\ncommonName = supplied\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "expired.key", "-subj", f"/CN={user}", "-out", "expired.csr", cwd=where,
    )  # fmt: skip
    _openssl(
        "ca", "-batch", "-config", "ca.cnf", "-cert", str(files.ca_cert),
        "-keyfile", str(files.ca_key), "-in", "expired.csr", "-out", "expired.crt",
        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext", cwd=where,
    )  # fmt: skip
    return where / "expired.crt", where / "expired.key"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


# (case id, command, what to change) -> the words the one line must hold.
FAILURES = [
    "kafka-wrong-password",
    "kafka-unknown-user",
    "kafka-untrusted-broker-certificate",
    "kafka-no-client-certificate",
    "kafka-expired-client-certificate",
    "kafka-plaintext-client-at-tls-listener",
    "kafka-worker-without-write-on-dead-letters",
    "kafka-worker-without-read-on-group",
    "kafka-simulate-without-write-on-inputs",
    "redis-wrong-password",
    "redis-untrusted-certificate",
    "redis-reader-get-wrong-password",
]


@pytest.mark.parametrize("case", FAILURES)
def test_each_security_failure_is_one_line(
    secure_stack: SecureStack, secure_env: Settings, tmp_path: Path, case: str
) -> None:
    settings = secure_env
    files = SecureFiles.at(secure_stack.stack_dir)
    command = ["worker"]
    env = secure_stack.process_env(settings, "worker")
    if case == "kafka-wrong-password":
        env["KPI_KAFKA_SASL_PASSWORD_FILE"] = str(_write(tmp_path / "pw", "not-the-password\n"))
        expected = "the broker rejected user 'kpi-worker' with SCRAM-SHA-512"
    elif case == "kafka-unknown-user":
        env["KPI_KAFKA_SASL_USERNAME"] = "nobody"
        expected = "the broker rejected user 'nobody' with SCRAM-SHA-512"
    elif case == "kafka-untrusted-broker-certificate":
        env["KPI_KAFKA_SSL_CAFILE"] = str(_other_ca(tmp_path))
        expected = "the broker's TLS certificate is not trusted"
    elif case == "kafka-no-client-certificate":
        env = secure_stack.process_env(settings, "worker", mtls=True)
        del env["KPI_KAFKA_SSL_CERTFILE"], env["KPI_KAFKA_SSL_KEYFILE"]
        expected = "the broker requires a client certificate"
    elif case == "kafka-expired-client-certificate":
        env = secure_stack.process_env(settings, "worker", mtls=True)
        cert, key = _expired_client_certificate(files, KAFKA_USERS["worker"], tmp_path)
        env["KPI_KAFKA_SSL_CERTFILE"], env["KPI_KAFKA_SSL_KEYFILE"] = str(cert), str(key)
        expected = "the broker refused the client certificate"
    elif case == "kafka-plaintext-client-at-tls-listener":
        env["KPI_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
        expected = "the broker closed the connection"
    elif case in (
        "kafka-worker-without-write-on-dead-letters",
        "kafka-worker-without-read-on-group",
    ):
        if case.endswith("dead-letters"):
            acl = KafkaAcl(
                ResourceType.TOPIC, settings.dead_letter_topic, PatternType.LITERAL, Operation.WRITE
            )
            expected = f"Kafka user kpi-worker lacks WRITE on topic {settings.dead_letter_topic}"
        else:
            acl = KafkaAcl(ResourceType.GROUP, settings.app_id, PatternType.LITERAL, Operation.READ)
            expected = f"Kafka user kpi-worker lacks READ on group {settings.app_id}"

        admin = secure_stack.as_role(settings, "admin")
        asyncio.run(revoke(admin, KAFKA_USERS["worker"], [acl]))
    elif case == "kafka-simulate-without-write-on-inputs":
        # The worker's user may read the inputs, not write them.
        command = ["simulate", "--count", "5", "--no-create-topics"]
        expected = f"Kafka user kpi-worker lacks WRITE on topic {settings.topic('invoices')}"
    elif case == "redis-wrong-password":
        url = settings.redis_url.replace("rediss://", "rediss://kpi-worker:not-the-password@")
        url = url.replace("redis://", "rediss://kpi-worker:not-the-password@")
        env["KPI_REDIS_URL_FILE"] = str(_write(tmp_path / "url", url))
        expected = "invalid username-password pair"
    elif case == "redis-untrusted-certificate":
        env["KPI_REDIS_SSL_CAFILE"] = str(_other_ca(tmp_path))
        expected = "certificate verify failed"
    else:  # redis-reader-get-wrong-password
        command = ["get", "--all"]
        env = secure_stack.process_env(settings, "reader")
        port = settings.redis_url.rsplit(":", 1)[1]
        url = f"rediss://kpi-reader:not-the-password@127.0.0.1:{port}"
        env["KPI_REDIS_URL_FILE"] = str(_write(tmp_path / "url", url))
        expected = "invalid username-password pair"

    code, out, err, seconds = _kpi(*command, env=env, timeout=60)
    lines = err.strip().splitlines()
    assert code == 2, (code, out[-2000:], err[-2000:])
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("kpi: error: "), lines
    assert expected in lines[0], lines[0]
    if case == "kafka-expired-client-certificate":
        assert "it has expired" in lines[0], lines[0]
    assert seconds < 30, seconds
    assert "Traceback" not in out + err
    leaked = [
        s for s in [*stack_passwords(secure_stack.stack_dir), "not-the-password"] if s in out + err
    ]
    assert not leaked, f"a password in the output: {lines[0]}"
