"""The secured local stack's own files: certificates, passwords, server configs, client settings.

``kpi stack up --secure`` keeps them in the stack directory: ``tls/`` (a CA made here with the
machine's ``openssl``, the servers' certificates and the clients' certificates for mutual
TLS) and ``secrets/`` (one random password per user and server, 0600). Nothing is
downloaded, and no secret is printed: a client is given the paths of the files.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import SecretStr

from schemas.errors import StackError
from streams.config import Settings
from tooling.redis_access import Role as RedisRole
from tooling.redis_access import redis_acl_rule

ClientRole = Literal["worker", "publisher", "reader", "admin"]
CLIENT_ROLES: tuple[ClientRole, ...] = get_args(ClientRole)

#: Kafka's users (SASL and, as a certificate's CN, mutual TLS) by role. ``admin`` is a
#: super user, for the stack itself and for people administering it.
KAFKA_USERS: dict[ClientRole, str] = {
    "admin": "admin",
    "worker": "kpi-worker",
    "publisher": "kpi-publisher",
}
#: Redis's ACL users by role; the ``default`` user is off.
REDIS_USERS: dict[ClientRole, str] = {
    "admin": "admin",
    "worker": "kpi-worker",
    "reader": "kpi-reader",
}
#: The broker's own identity (its certificate's CN) towards its controller and other brokers.
BROKER_USER = "kafka-broker"
#: SCRAM credentials are made for both; clients of the stack are told to use the first.
SCRAM_MECHANISMS: tuple[str, ...] = ("SCRAM-SHA-512", "SCRAM-SHA-256")
CLIENT_MECHANISM = SCRAM_MECHANISMS[0]

CA_DAYS = 3650
CERT_DAYS = 825
_CURVE = "prime256v1"
_SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True)
class SecureFiles:
    """Where a secure stack keeps its certificates and secrets (under the stack directory)."""

    root: Path
    #: Written when the stack is first made secure: status, down and env know it from this.
    marker: Path
    tls: Path
    secrets: Path
    ca_cert: Path
    ca_key: Path
    kafka_cert: Path
    kafka_key: Path
    #: The broker's key and certificate in one PEM file (Kafka's ``ssl.keystore.type=PEM``).
    kafka_keystore: Path
    redis_cert: Path
    redis_key: Path

    @classmethod
    def at(cls, root: Path) -> SecureFiles:
        """The layout under the stack directory ``root``."""
        tls, secret_dir = root / "tls", root / "secrets"
        return cls(
            root=root,
            marker=root / "secure",
            tls=tls,
            secrets=secret_dir,
            ca_cert=tls / "ca.crt",
            ca_key=tls / "ca.key",
            kafka_cert=tls / "kafka-server.crt",
            kafka_key=tls / "kafka-server.key",
            kafka_keystore=tls / "kafka-server.pem",
            redis_cert=tls / "redis-server.crt",
            redis_key=tls / "redis-server.key",
        )

    def client_cert(self, user: str) -> Path:
        """The client certificate (CN = ``user``) for mutual TLS with Kafka."""
        return self.tls / f"client-{user}.crt"

    def client_key(self, user: str) -> Path:
        """The key of ``client_cert``."""
        return self.tls / f"client-{user}.key"

    def kafka_password(self, user: str) -> Path:
        """The file holding a Kafka user's password (SCRAM and PLAIN)."""
        return self.secrets / f"kafka-{user}.password"

    def redis_password(self, user: str) -> Path:
        """The file holding a Redis user's password."""
        return self.secrets / f"redis-{user}.password"

    def redis_url(self, user: str, db: int) -> Path:
        """The file holding a Redis user's ``rediss://`` URL (it contains the password)."""
        return self.secrets / f"redis-{user}-db{db}.url"

    def is_secure(self) -> bool:
        """Whether this stack directory holds a secure stack."""
        return self.marker.is_file()

    def mark_secure(self) -> None:
        """Record that this stack directory holds a secure stack."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.marker.write_text("made by `kpi stack up --secure`: TLS, SASL, ACLs\n")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file that only its owner may read (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the start (an existing file would keep its own mode): the secret is
    # never readable by others, not even for a moment.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def read_secret(path: Path) -> str:
    """A secret file's content without the final newline."""
    try:
        return path.read_text().rstrip("\n")
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}; remove {path.parent.parent} to start over"
        raise StackError(msg) from None


# --- passwords --------------------------------------------------------------------------------


def kafka_password_files(files: SecureFiles) -> list[Path]:
    """The password files of every Kafka user."""
    return [files.kafka_password(user) for user in KAFKA_USERS.values()]


def ensure_passwords(files: SecureFiles) -> list[Path]:
    """A random password for every Kafka and Redis user that has none yet; returns those made."""
    made = []
    wanted = kafka_password_files(files) + [
        files.redis_password(user) for user in REDIS_USERS.values()
    ]
    for path in wanted:
        if not path.is_file():
            # URL- and config-safe characters only: the password goes into a rediss:// URL,
            # a Redis ACL rule, a JAAS option and a kafka-storage argument unquoted.
            write_private(path, secrets.token_urlsafe(24) + "\n")
            made.append(path)
    return made


def kafka_passwords(files: SecureFiles) -> dict[str, str]:
    """Every Kafka user's password, by user name."""
    return {user: read_secret(files.kafka_password(user)) for user in KAFKA_USERS.values()}


# --- certificates -----------------------------------------------------------------------------


def find_openssl() -> str:
    """``openssl`` from PATH (it makes the stack's CA and certificates)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        msg = "openssl not found on PATH: the secure stack makes its certificates with it"
        msg += " (apt-get install openssl)"
        raise StackError(msg)
    return openssl


@dataclass(frozen=True)
class _Leaf:
    cert: Path
    key: Path
    common_name: str
    extensions: tuple[str, ...]


def _leaves(files: SecureFiles) -> list[_Leaf]:
    server = ("extendedKeyUsage=serverAuth", _SAN)
    leaves = [
        # The broker's certificate serves its listeners and is its client certificate
        # towards its own controller and inter-broker listeners (principal kafka-broker).
        _Leaf(
            files.kafka_cert,
            files.kafka_key,
            BROKER_USER,
            ("extendedKeyUsage=serverAuth,clientAuth", _SAN),
        ),
        _Leaf(files.redis_cert, files.redis_key, "localhost", server),
    ]
    for user in KAFKA_USERS.values():
        leaves.append(
            _Leaf(
                files.client_cert(user),
                files.client_key(user),
                user,
                ("extendedKeyUsage=clientAuth",),
            )
        )
    return leaves


def certificates_complete(files: SecureFiles) -> bool:
    """Whether the CA, every certificate and the broker's keystore are there."""
    paths = [files.ca_cert, files.ca_key, files.kafka_keystore]
    for leaf in _leaves(files):
        paths += [leaf.cert, leaf.key]
    return all(path.is_file() for path in paths)


def ensure_certificates(files: SecureFiles, openssl: str) -> bool:
    """Make the CA and whatever certificate is missing; True when anything was made.

    Keys are EC P-256 (fast to make, read by Kafka's PEM key store, Redis, Python and
    librdkafka), unencrypted, 0600. A new CA means new certificates for everything.
    """
    files.tls.mkdir(parents=True, exist_ok=True)
    made = False
    if not (files.ca_cert.is_file() and files.ca_key.is_file()):
        # Whatever an older CA signed is worthless now.
        for stale in files.tls.iterdir():
            if stale.is_file():
                stale.unlink()
        _openssl(
            openssl,
            [
                "req",
                "-x509",
                "-new",
                *_new_key(files.ca_key),
                "-subj",
                "/CN=backoffice-kpi local stack CA",
                "-days",
                str(CA_DAYS),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                str(files.ca_cert),
            ],
            "the CA",
        )
        files.ca_cert.chmod(0o644)
        made = True
    for leaf in _leaves(files):
        if not (leaf.cert.is_file() and leaf.key.is_file()):
            _sign(openssl, files, leaf)
            made = True
    if made or not files.kafka_keystore.is_file():
        write_private(
            files.kafka_keystore, files.kafka_key.read_text() + files.kafka_cert.read_text()
        )
    return made


def _new_key(key: Path) -> list[str]:
    return [
        "-newkey",
        "ec",
        "-pkeyopt",
        f"ec_paramgen_curve:{_CURVE}",
        "-nodes",
        "-keyout",
        str(key),
    ]


def _sign(openssl: str, files: SecureFiles, leaf: _Leaf) -> None:
    what = f"the certificate {leaf.cert.name}"
    with tempfile.TemporaryDirectory(dir=files.tls) as scratch:
        request = Path(scratch) / "request.csr"
        extensions = Path(scratch) / "extensions.cnf"
        extensions.write_text(
            "\n".join(
                (
                    "basicConstraints=critical,CA:FALSE",
                    "keyUsage=critical,digitalSignature,keyEncipherment",
                    "subjectKeyIdentifier=hash",
                    "authorityKeyIdentifier=keyid,issuer",
                    *leaf.extensions,
                )
            )
            + "\n"
        )
        _openssl(
            openssl,
            [
                "req",
                "-new",
                *_new_key(leaf.key),
                "-subj",
                f"/CN={leaf.common_name}",
                "-out",
                str(request),
            ],
            what,
        )
        _openssl(
            openssl,
            [
                "x509",
                "-req",
                "-in",
                str(request),
                "-CA",
                str(files.ca_cert),
                "-CAkey",
                str(files.ca_key),
                "-set_serial",
                f"0x{secrets.token_hex(16)}",
                "-days",
                str(CERT_DAYS),
                "-extfile",
                str(extensions),
                "-out",
                str(leaf.cert),
            ],
            what,
        )
    # Keys stay 0600 (openssl ran with umask 077); certificates are public.
    leaf.key.chmod(0o600)
    leaf.cert.chmod(0o644)


def _openssl(openssl: str, args: list[str], what: str) -> None:
    try:
        result = subprocess.run(
            [openssl, *args],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            # Keys are written 0600 from the start.
            umask=0o077,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"{openssl} could not make {what}: {exc}"
        raise StackError(msg) from None
    if result.returncode != 0:
        output = (result.stderr + result.stdout).strip().splitlines()
        last = output[-1] if output else f"exit code {result.returncode}"
        msg = f"{openssl} could not make {what}: {last}"
        raise StackError(msg)


# --- server configurations --------------------------------------------------------------------


def scram_arguments(passwords: dict[str, str]) -> list[str]:
    """``kafka-storage format`` arguments that create every user's SCRAM credentials."""
    arguments = []
    for mechanism in SCRAM_MECHANISMS:
        for user, password in passwords.items():
            arguments += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    return arguments


def render_secure_properties(
    template: str,
    *,
    host: str,
    kafka_port: int,
    mtls_port: int,
    controller_port: int,
    files: SecureFiles,
    passwords: dict[str, str],
) -> str:
    """The secure listeners, TLS, SASL and authorizer settings (``server-secure.properties``)."""
    plain_users = " ".join(f'user_{user}="{password}"' for user, password in passwords.items())
    try:
        return Template(template).substitute(
            host=host,
            kafka_port=kafka_port,
            mtls_port=mtls_port,
            controller_port=controller_port,
            keystore=files.kafka_keystore,
            truststore=files.ca_cert,
            broker_user=BROKER_USER,
            admin_user=KAFKA_USERS["admin"],
            plain_users=plain_users,
        )
    except (KeyError, ValueError) as exc:
        msg = f"ops/kafka/server-secure.properties.template has a bad placeholder: {exc}"
        raise StackError(msg) from exc


def _property_key(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", "!")):
        return None
    return stripped.split("=", 1)[0].strip()


def override_properties(base: str, overrides: str) -> str:
    """``base`` without the keys ``overrides`` sets, followed by ``overrides``: each key once."""
    replaced = {key for key in map(_property_key, overrides.splitlines()) if key}
    kept = [line for line in base.splitlines() if _property_key(line) not in replaced]
    return "\n".join(kept).rstrip("\n") + "\n\n" + overrides


def render_redis_config(
    *,
    host: str,
    port: int,
    directory: Path,
    files: SecureFiles,
    prefix: str,
) -> str:
    """``redis.conf`` of the secure Redis: TLS only, ACL users, nothing persisted."""
    passwords = {user: read_secret(files.redis_password(user)) for user in REDIS_USERS.values()}
    lines = [
        "# Made by `kpi stack up --secure`: holds passwords (0600).",
        f"bind {host}",
        # No plain TCP port: TLS only.
        "port 0",
        f"tls-port {port}",
        f"tls-cert-file {files.redis_cert}",
        f"tls-key-file {files.redis_key}",
        # Clients check the server's certificate; they authenticate with a user and password.
        "tls-auth-clients no",
        'save ""',
        "appendonly no",
        "daemonize no",
        f"dir {directory}",
        'logfile ""',
        "user default off",
        f"user {REDIS_USERS['admin']} on >{passwords[REDIS_USERS['admin']]} ~* &* +@all",
    ]
    roles: tuple[RedisRole, ...] = ("worker", "reader")
    for role in roles:
        user = REDIS_USERS[role]
        lines.append(f"user {user} on >{passwords[user]} {redis_acl_rule(prefix, role)}")
    return "\n".join(lines) + "\n"


# --- client settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class SecureEndpoints:
    """Where a secure stack's servers listen."""

    host: str
    kafka_port: int
    mtls_port: int
    redis_port: int


def redis_db(url: str) -> int:
    """The database number of a ``redis://`` or ``rediss://`` URL (0 when none)."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def write_redis_url(files: SecureFiles, role: ClientRole, host: str, port: int, db: int) -> Path:
    """Write the ``rediss://`` URL of ``role``'s Redis user (0600); returns the file."""
    user = REDIS_USERS[role]
    password = read_secret(files.redis_password(user))
    path = files.redis_url(user, db)
    write_private(path, f"rediss://{user}:{password}@{host}:{port}/{db}\n")
    return path


def client_environment(
    files: SecureFiles,
    role: ClientRole,
    endpoints: SecureEndpoints,
    *,
    db: int = 0,
    mtls: bool = False,
) -> dict[str, str]:
    """The ``KPI_*`` variables a client of ``role`` needs; every secret as a ``*_FILE`` path.

    Kafka for the worker, the publisher and the administrator (SASL_SSL with SCRAM, or with
    ``mtls`` the client certificate on the mutual-TLS listener); Redis for the worker, a
    reader and the administrator (writes the role's URL file for database ``db``).
    """
    env: dict[str, str] = {}
    ca = str(files.ca_cert)
    if role in KAFKA_USERS:
        user = KAFKA_USERS[role]
        if mtls:
            env.update(
                KPI_KAFKA_BOOTSTRAP=f"{endpoints.host}:{endpoints.mtls_port}",
                KPI_KAFKA_SECURITY_PROTOCOL="SSL",
                KPI_KAFKA_SSL_CAFILE=ca,
                KPI_KAFKA_SSL_CERTFILE=str(files.client_cert(user)),
                KPI_KAFKA_SSL_KEYFILE=str(files.client_key(user)),
            )
        else:
            env.update(
                KPI_KAFKA_BOOTSTRAP=f"{endpoints.host}:{endpoints.kafka_port}",
                KPI_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                KPI_KAFKA_SASL_MECHANISM=CLIENT_MECHANISM,
                KPI_KAFKA_SASL_USERNAME=user,
                KPI_KAFKA_SASL_PASSWORD_FILE=str(files.kafka_password(user)),
                KPI_KAFKA_SSL_CAFILE=ca,
            )
    elif mtls:
        msg = f"--mtls is for the Kafka roles ({', '.join(KAFKA_USERS)}); {role} uses Redis only"
        raise StackError(msg)
    if role in REDIS_USERS:
        url = write_redis_url(files, role, endpoints.host, endpoints.redis_port, db)
        env.update(KPI_REDIS_URL_FILE=str(url), KPI_REDIS_SSL_CAFILE=ca)
    return env


def environment_line(env: dict[str, str]) -> str:
    """``K=V ...`` shell-quoted, for ``eval "export $(...)"``."""
    return " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())


def client_settings(base: Settings, env: dict[str, str]) -> Settings:
    """``base`` with the variables of ``client_environment`` applied (``_FILE`` ones read).

    For in-process clients (the stack itself, tests) that cannot take an environment.
    """
    values = base.model_dump()
    for name, value in env.items():
        field = name.removeprefix("KPI_").lower()
        if field.endswith("_file") and field.removesuffix("_file") in values:
            field = field.removesuffix("_file")
            value = read_secret(Path(value))
        values[field] = value
    for name, value in values.items():
        if isinstance(value, SecretStr):
            values[name] = value.get_secret_value()
    return Settings(**values)
