"""The secure stack's files without starting a server: certificates, configs, client settings."""

from __future__ import annotations

import shlex
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from schemas.errors import StackError
from streams.config import Settings
from tests.cli import run_kpi
from tooling import stack
from tooling.redis_access import redis_acl_rule
from tooling.stack import (
    OPS_KAFKA_DIR,
    Endpoint,
    StackPaths,
    parse_redis_url,
    render_server_properties,
    stack_paths,
    stack_up,
)
from tooling.stack_secure import (
    KAFKA_USERS,
    REDIS_USERS,
    SecureEndpoints,
    SecureFiles,
    certificates_complete,
    client_environment,
    client_settings,
    ensure_certificates,
    ensure_passwords,
    environment_line,
    find_openssl,
    kafka_passwords,
    override_properties,
    read_secret,
    render_redis_config,
    render_secure_properties,
    scram_arguments,
)

ENDPOINTS = SecureEndpoints(host="127.0.0.1", kafka_port=19092, mtls_port=19094, redis_port=16379)


@pytest.fixture
def files(tmp_path: Path) -> SecureFiles:
    """A stack dir with its passwords made (no certificates)."""
    secure = SecureFiles.at(tmp_path / "stack")
    ensure_passwords(secure)
    return secure


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _properties(text: str) -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), (
        f"keys set twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    )
    return dict(pairs)


def _secure_properties(files: SecureFiles) -> dict[str, str]:
    base = render_server_properties(
        (OPS_KAFKA_DIR / "server.properties.template").read_text(),
        kafka=Endpoint("127.0.0.1", 19092),
        controller_port=19093,
        data_dir=Path("/tmp/s/kafka/data"),
        partitions=4,
    )
    secure = render_secure_properties(
        (OPS_KAFKA_DIR / "server-secure.properties.template").read_text(),
        host="127.0.0.1",
        kafka_port=19092,
        mtls_port=19094,
        controller_port=19093,
        files=files,
        passwords=kafka_passwords(files),
    )
    return _properties(override_properties(base, secure))


# --- passwords --------------------------------------------------------------------------------


def test_every_user_gets_its_own_random_password_readable_by_the_owner_only(
    files: SecureFiles,
) -> None:
    users = [files.kafka_password(u) for u in KAFKA_USERS.values()]
    users += [files.redis_password(u) for u in REDIS_USERS.values()]
    secrets = [read_secret(path) for path in users]
    assert len(set(secrets)) == len(secrets)
    assert all(len(s) >= 32 for s in secrets)
    assert all(_mode(path) == 0o600 for path in users)
    assert _mode(files.secrets) == 0o700
    # Made once: a second call keeps them (the SCRAM credentials were made from them).
    assert ensure_passwords(files) == []
    assert [read_secret(path) for path in users] == secrets


# --- Kafka ------------------------------------------------------------------------------------


def test_secure_broker_has_no_plaintext_listener_and_every_listener_on_loopback(
    files: SecureFiles,
) -> None:
    props = _secure_properties(files)
    assert props["listeners"] == (
        "CLIENT://127.0.0.1:19092,MTLS://127.0.0.1:19094,CONTROLLER://127.0.0.1:19093"
    )
    assert props["listener.security.protocol.map"] == ("CLIENT:SASL_SSL,MTLS:SSL,CONTROLLER:SSL")
    assert "PLAINTEXT" not in props["advertised.listeners"]
    assert props["inter.broker.listener.name"] == "MTLS"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["listener.name.mtls.ssl.client.auth"] == "required"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    # The rest comes from the plain template.
    assert props["num.partitions"] == "4"
    assert props["offsets.topic.replication.factor"] == "1"


def test_secure_broker_authorizes_by_acl_with_admin_and_itself_as_super_users(
    files: SecureFiles,
) -> None:
    props = _secure_properties(files)
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["super.users"] == "User:admin;User:kafka-broker"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["ssl.principal.mapping.rules"] == "RULE:^CN=([^,]+)$/$1/,DEFAULT"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert props["ssl.keystore.location"] == str(files.kafka_keystore)
    assert props["ssl.truststore.location"] == str(files.ca_cert)


def test_sasl_offers_scram_and_plain_with_plain_users_from_the_password_files(
    files: SecureFiles,
) -> None:
    props = _secure_properties(files)
    mechanisms = "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
    assert props["listener.name.client.sasl.enabled.mechanisms"] == mechanisms
    plain = props["listener.name.client.plain.sasl.jaas.config"]
    for user, password in kafka_passwords(files).items():
        assert f'user_{user}="{password}"' in plain
    assert plain.endswith(";")


def test_scram_credentials_for_every_user_and_both_mechanisms(files: SecureFiles) -> None:
    passwords = kafka_passwords(files)
    arguments = scram_arguments(passwords)
    assert arguments[::2] == ["--add-scram"] * 6
    assert f"SCRAM-SHA-512=[name=kpi-worker,password={passwords['kpi-worker']}]" in arguments
    assert f"SCRAM-SHA-256=[name=admin,password={passwords['admin']}]" in arguments


def test_override_properties_replaces_keys_and_keeps_the_rest() -> None:
    base = "# c\na=1\nb=2\n\nc=3\n"
    assert override_properties(base, "b=20\nd=4\n") == "# c\na=1\n\nc=3\n\nb=20\nd=4\n"


def test_java_argument_file_quotes_each_argument(tmp_path: Path) -> None:
    path = tmp_path / "args"
    stack._java_argument_file(path, ["Main", 'a "b"', "c\\d", "x y"])
    assert path.read_text() == '"Main"\n"a \\"b\\""\n"c\\\\d"\n"x y"\n'
    assert _mode(path) == 0o600


# --- Redis ------------------------------------------------------------------------------------


def test_redis_serves_tls_only_with_acl_users_and_no_default_user(files: SecureFiles) -> None:
    config = render_redis_config(
        host="127.0.0.1", port=16379, directory=Path("/d"), files=files, prefix="acme"
    )
    lines = config.splitlines()
    assert "port 0" in lines
    assert "tls-port 16379" in lines
    assert "bind 127.0.0.1" in lines
    assert f"tls-cert-file {files.redis_cert}" in lines
    assert "tls-auth-clients no" in lines
    assert "user default off" in lines
    worker = read_secret(files.redis_password("kpi-worker"))
    reader = read_secret(files.redis_password("kpi-reader"))
    assert f"user kpi-worker on >{worker} {redis_acl_rule('acme', 'worker')}" in lines
    assert f"user kpi-reader on >{reader} {redis_acl_rule('acme', 'reader')}" in lines
    assert any(line.startswith("user admin on >") and line.endswith("+@all") for line in lines)


def test_a_secure_stack_takes_a_rediss_url() -> None:
    assert parse_redis_url("rediss://u:p@localhost:16380/2", secure=True) == Endpoint(
        "127.0.0.1", 16380
    )
    with pytest.raises(StackError, match=r"plain redis:// only.*--secure") as caught:
        parse_redis_url("rediss://u:secret@localhost:16380/2")
    assert "secret" not in str(caught.value)


# --- certificates -----------------------------------------------------------------------------


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_certificates_are_made_once_signed_by_the_stack_ca_with_private_keys(
    files: SecureFiles,
) -> None:
    assert ensure_certificates(files, find_openssl())
    assert certificates_complete(files)
    ca = str(files.ca_cert)
    certificates = [files.kafka_cert, files.redis_cert] + [
        files.client_cert(u) for u in KAFKA_USERS.values()
    ]
    for cert in certificates:
        assert _openssl("verify", "-CAfile", ca, str(cert)).strip() == f"{cert}: OK"
        assert _mode(cert) == 0o644
    keys = [files.ca_key, files.kafka_key, files.redis_key, files.kafka_keystore]
    keys += [files.client_key(u) for u in KAFKA_USERS.values()]
    assert all(_mode(key) == 0o600 for key in keys)

    server = _openssl(
        "x509",
        "-in",
        str(files.kafka_cert),
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName,extendedKeyUsage",
    )
    assert "CN = kafka-broker" in server or "CN=kafka-broker" in server
    assert "DNS:localhost, IP Address:127.0.0.1" in server
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in server
    client = _openssl("x509", "-in", str(files.client_cert("kpi-worker")), "-noout", "-subject")
    assert client.strip().replace(" ", "") == "subject=CN=kpi-worker"
    keystore = files.kafka_keystore.read_text()
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----")
    assert keystore.endswith(files.kafka_cert.read_text())

    before = files.ca_cert.read_bytes()
    assert not ensure_certificates(files, find_openssl())
    assert files.ca_cert.read_bytes() == before


def test_a_missing_certificate_is_made_again_by_the_same_ca(files: SecureFiles) -> None:
    ensure_certificates(files, find_openssl())
    ca = files.ca_cert.read_bytes()
    files.client_cert("kpi-publisher").unlink()
    assert ensure_certificates(files, find_openssl())
    assert files.ca_cert.read_bytes() == ca
    assert files.client_cert("kpi-publisher").is_file()


def test_missing_openssl_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="openssl not found on PATH.*apt-get install openssl"):
        find_openssl()


def test_a_failing_openssl_is_one_line(files: SecureFiles, tmp_path: Path) -> None:
    broken = tmp_path / "openssl"
    broken.write_text("#!/bin/sh\necho 'req: unknown option -pkeyopt' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(StackError) as caught:
        ensure_certificates(files, str(broken))
    assert str(caught.value) == f"{broken} could not make the CA: req: unknown option -pkeyopt"


# --- client settings --------------------------------------------------------------------------


def test_each_role_gets_its_own_user_and_only_secret_files(files: SecureFiles) -> None:
    worker = client_environment(files, "worker", ENDPOINTS, db=3)
    assert worker == {
        "KPI_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
        "KPI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KPI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KPI_KAFKA_SASL_USERNAME": "kpi-worker",
        "KPI_KAFKA_SASL_PASSWORD_FILE": str(files.kafka_password("kpi-worker")),
        "KPI_KAFKA_SSL_CAFILE": str(files.ca_cert),
        "KPI_REDIS_URL_FILE": str(files.redis_url("kpi-worker", 3)),
        "KPI_REDIS_SSL_CAFILE": str(files.ca_cert),
    }
    password = read_secret(files.redis_password("kpi-worker"))
    url = files.redis_url("kpi-worker", 3)
    assert read_secret(url) == f"rediss://kpi-worker:{password}@127.0.0.1:16379/3"
    assert _mode(url) == 0o600

    publisher = client_environment(files, "publisher", ENDPOINTS)
    assert publisher["KPI_KAFKA_SASL_USERNAME"] == "kpi-publisher"
    assert not any(name.startswith("KPI_REDIS") for name in publisher)
    reader = client_environment(files, "reader", ENDPOINTS)
    assert sorted(reader) == ["KPI_REDIS_SSL_CAFILE", "KPI_REDIS_URL_FILE"]
    admin = client_environment(files, "admin", ENDPOINTS)
    assert admin["KPI_KAFKA_SASL_USERNAME"] == "admin"
    assert read_secret(Path(admin["KPI_REDIS_URL_FILE"])).startswith("rediss://admin:")
    secrets = [read_secret(p) for p in files.secrets.glob("*.password")]
    for env in (worker, publisher, reader, admin):
        assert not any(secret in environment_line(env) for secret in secrets)


def test_mutual_tls_settings_name_the_role_certificate_and_no_password(files: SecureFiles) -> None:
    env = client_environment(files, "worker", ENDPOINTS, mtls=True)
    assert env["KPI_KAFKA_BOOTSTRAP"] == "127.0.0.1:19094"
    assert env["KPI_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert env["KPI_KAFKA_SSL_CERTFILE"] == str(files.client_cert("kpi-worker"))
    assert env["KPI_KAFKA_SSL_KEYFILE"] == str(files.client_key("kpi-worker"))
    assert not any("SASL" in name for name in env)
    with pytest.raises(StackError, match="--mtls is for the Kafka roles"):
        client_environment(files, "reader", ENDPOINTS, mtls=True)


def test_the_line_evaluates_back_to_the_same_variables(tmp_path: Path) -> None:
    files = SecureFiles.at(tmp_path / "a stack's dir")
    ensure_passwords(files)
    env = client_environment(files, "worker", ENDPOINTS)
    assert dict(w.split("=", 1) for w in shlex.split(environment_line(env))) == env


def test_client_settings_read_the_secret_files(files: SecureFiles) -> None:
    files.ca_cert.parent.mkdir(parents=True, exist_ok=True)
    files.ca_cert.write_text("not read here")
    base = Settings(topic_prefix="p.", app_id="a", kafka_ssl_certfile="", redis_prefix="acme")
    settings = client_settings(base, client_environment(files, "worker", ENDPOINTS, db=2))
    assert settings.kafka_sasl_password.get_secret_value() == read_secret(
        files.kafka_password("kpi-worker")
    )
    assert settings.redis_url.startswith("rediss://kpi-worker:")
    assert settings.redis_url.endswith("@127.0.0.1:16379/2")
    assert (settings.topic_prefix, settings.app_id, settings.redis_prefix) == ("p.", "a", "acme")


# --- plain and secure stack dirs ----------------------------------------------------------------


@pytest.fixture
def no_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tools "found" without looking, so only the checks under test can stop ``stack_up``."""
    monkeypatch.setattr(stack, "find_java", lambda env: "java")
    monkeypatch.setattr(stack, "resolve_kafka_libs", lambda env, echo: tmp_path / "libs")
    monkeypatch.setattr(stack, "find_redis_server", lambda: "redis-server")


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{stack.free_port()}",
        redis_url=f"redis://127.0.0.1:{stack.free_port()}/0",
        stack_dir=str(tmp_path / "stack"),
    )


def test_a_plain_stack_dir_is_not_made_secure(no_tools: None, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    stack_paths(settings).kafka_data.mkdir(parents=True)
    with pytest.raises(StackError, match="holds a plain stack: stop it"):
        stack_up(settings, secure=True, echo=lambda _: None)
    assert not SecureFiles.at(stack_paths(settings).root).marker.exists()


def test_a_secure_stack_dir_is_not_started_plain(no_tools: None, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    SecureFiles.at(stack_paths(settings).root).mark_secure()
    with pytest.raises(
        StackError, match=r"holds a secure stack: start it with `kpi stack up --secure`"
    ):
        stack_up(settings, echo=lambda _: None)


def test_secure_up_refuses_a_taken_port_before_making_anything(
    no_tools: None, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        taken = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
        with pytest.raises(StackError, match="for Kafka is already in use"):
            stack_up(taken, secure=True, echo=lambda _: None)
    paths: StackPaths = stack_paths(settings)
    assert not paths.secure.tls.exists()
    assert not paths.kafka_pid.exists()


def test_cli_env_of_a_stack_that_is_not_secure_is_one_line(tmp_path: Path) -> None:
    result = run_kpi(tmp_path, "stack", "env", "--role", "publisher")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"kpi: error: {tmp_path / 'stack'} holds no secure stack: run `kpi stack up --secure` first"
    ]


def test_cli_env_refuses_an_unknown_role(tmp_path: Path) -> None:
    result = run_kpi(tmp_path, "stack", "env", "--role", "root")
    assert result.returncode == 2
    assert "choose from worker, publisher, reader, admin" in result.stderr
