"""The local stack: a real single-node Kafka 4 (KRaft) and a real Redis, started without Docker.

``kpi stack up|down|status|fetch``. Everything a stack writes lives under ``settings.stack_dir``
(data, logs, pid files), so several stacks on different ports can run side by side. The Kafka
jars come from ``KAFKA_HOME/libs`` or are resolved once with Maven from ``ops/kafka/pom.xml``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
import typer
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import EXIT_NOTHING, ConfigurationError, StackError
from streams.access import ROLES
from streams.config import Settings, environment_help, shown_url
from tooling import stack_secure
from tooling.redis_access import redis_acl_rule
from tooling.stack_secure import CLIENT_ROLES, ClientRole, SecureEndpoints, SecureFiles

KAFKA_VERSION = "4.1.1"
JAVA_MIN_MAJOR = 17
#: ``ops/kafka`` of the checkout this package runs from (the stack is a development tool).
OPS_KAFKA_DIR = Path(__file__).resolve().parent.parent / "ops" / "kafka"
DEFAULT_KAFKA_CACHE = Path("~/.cache/backoffice-kpi") / f"kafka-{KAFKA_VERSION}" / "libs"
# Written into the cache after a complete resolution; holds the pom's hash so that editing
# the pom resolves again instead of running with stale jars.
_CACHE_MARKER = ".resolved"

KAFKA_JVM_OPTIONS: tuple[str, ...] = (
    # Small heap: a dev broker on a 2-core, shared machine (tests run two at once at times).
    "-Xms256m",
    "-Xmx512m",
    # What Kafka's own kafka-run-class.sh passes.
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)

Echo = Callable[[str], None]
T = TypeVar("T")


class StackEnvironment(BaseSettings):
    """Where the stack finds its tools; read from the environment once, at the edge."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", env_ignore_empty=True, populate_by_name=True
    )

    #: An unpacked Kafka 4.x distribution; its ``libs/`` is used instead of Maven.
    kafka_home: Path | None = Field(default=None, validation_alias="KAFKA_HOME")
    #: Where Maven-resolved jars are kept (the directory that receives the ``*.jar``).
    kafka_cache: Path | None = Field(default=None, validation_alias="KPI_KAFKA_CACHE")
    java_home: Path | None = Field(default=None, validation_alias="JAVA_HOME")


@dataclass(frozen=True)
class Endpoint:
    """A loopback address a server of the stack listens on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServiceStatus:
    """One server of the stack as ``status`` sees it."""

    name: str
    running: bool
    pid: int | None
    endpoint: Endpoint
    log: Path
    #: How clients reach it when that is not plain TCP (a secure stack), e.g. ``TLS``.
    security: str = ""

    def record(self) -> dict[str, object]:
        """The ``kpi stack status --json`` object of this server."""
        return {
            "name": self.name,
            "running": self.running,
            "pid": self.pid,
            "host": self.endpoint.host,
            "port": self.endpoint.port,
            "security": self.security or None,
            "log": str(self.log),
        }

    def describe(self) -> str:
        """One line for humans: ``kafka  running  pid 123  127.0.0.1:9092  log ...``."""
        state = "running" if self.running else "stopped"
        pid = f"pid {self.pid}" if self.pid is not None else "pid -"
        security = f" ({self.security})" if self.security else ""
        return f"{self.name:<6} {state:<8} {pid:<11} {self.endpoint}{security}  log {self.log}"


@dataclass(frozen=True)
class StackInfo:
    """What ``stack_up`` started (or found running) and how to reach it."""

    stack_dir: Path
    bootstrap: str
    redis_url: str
    kafka: ServiceStatus
    redis: ServiceStatus
    #: Names of the services this call started; empty when all were already running.
    started: tuple[str, ...]
    #: The client settings of the worker (``KPI_*`` variables, secrets as ``*_FILE``) for a
    #: secure stack; empty for a plain one.
    worker_environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StackPaths:
    """The layout of one stack directory; every path is absolute."""

    root: Path
    lock: Path
    kafka_dir: Path
    kafka_data: Path
    kafka_logs: Path
    kafka_log: Path
    #: JVM output that does not go through log4j: crashes, errors before logging is set up.
    kafka_stdout: Path
    kafka_config: Path
    kafka_pid: Path
    kafka_port: Path
    #: Chosen when the storage is formatted and kept with it (see server.properties.template).
    controller_port: Path
    #: The mutual-TLS listener's port of a secure stack, chosen on its first start.
    mtls_port: Path
    redis_dir: Path
    redis_log: Path
    redis_pid: Path
    redis_port: Path
    #: A secure stack's Redis configuration (it holds the users' passwords).
    redis_config: Path
    #: A secure stack's certificates and secrets.
    secure: SecureFiles

    @classmethod
    def at(cls, root: Path) -> StackPaths:
        """The layout under ``root``."""
        kafka, redis = root / "kafka", root / "redis"
        return cls(
            root=root,
            lock=root / ".lock",
            kafka_dir=kafka,
            kafka_data=kafka / "data",
            kafka_logs=kafka / "logs",
            kafka_log=kafka / "logs" / "server.log",
            kafka_stdout=kafka / "logs" / "kafka.out",
            kafka_config=kafka / "server.properties",
            kafka_pid=kafka / "kafka.pid",
            kafka_port=kafka / "kafka.port",
            controller_port=kafka / "controller.port",
            mtls_port=kafka / "mtls.port",
            redis_dir=redis,
            redis_log=redis / "redis.log",
            redis_pid=redis / "redis.pid",
            redis_port=redis / "redis.port",
            redis_config=redis / "redis.conf",
            secure=SecureFiles.at(root),
        )


# --- pure helpers -----------------------------------------------------------------------------


def stack_paths(settings: Settings) -> StackPaths:
    """The stack directory of ``settings``, absolute (relative paths are taken from the cwd)."""
    return StackPaths.at(Path(settings.stack_dir).expanduser().absolute())


def _loopback_host(host: str, what: str) -> str:
    if host == "localhost":
        # Bind and advertise the IPv4 address: "localhost" may resolve to ::1 first.
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        msg = f"{what} host {host!r} is not local: kpi stack only runs on localhost or 127.x.x.x"
        raise StackError(msg)
    return host


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        msg = f"{what} port {text!r} is not a port number (1-65535)"
        raise StackError(msg)
    return int(text)


def parse_kafka_bootstrap(bootstrap: str) -> Endpoint:
    """The loopback endpoint ``KPI_KAFKA_BOOTSTRAP`` names; one ``host:port`` for a local stack."""
    value = bootstrap.strip()
    if "," in value:
        msg = f"KPI_KAFKA_BOOTSTRAP={bootstrap!r} lists several brokers; the local stack has one"
        raise StackError(msg)
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        msg = f"KPI_KAFKA_BOOTSTRAP={bootstrap!r} is not host:port"
        raise StackError(msg)
    return Endpoint(_loopback_host(host, "KPI_KAFKA_BOOTSTRAP"), _port(port, "KPI_KAFKA_BOOTSTRAP"))


def parse_redis_url(url: str, *, secure: bool = False) -> Endpoint:
    """The loopback endpoint of ``KPI_REDIS_URL`` (``redis://host[:port][/db]``).

    A secure stack serves TLS only but takes either scheme: only the port is used.
    """
    parts = urlsplit(url)
    shown = shown_url(url)
    if parts.scheme != "redis" and not (secure and parts.scheme == "rediss"):
        msg = f"KPI_REDIS_URL={shown!r}: the local stack serves plain redis:// only"
        msg += " (rediss:// with kpi stack up --secure)"
        raise StackError(msg)
    try:
        port = parts.port or 6379
    except ValueError as exc:
        msg = f"KPI_REDIS_URL={shown!r} has no valid port"
        raise StackError(msg) from exc
    return Endpoint(_loopback_host(parts.hostname or "localhost", "KPI_REDIS_URL"), port)


def parse_java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``"1.8.0_292"`` is 8), or None."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def kafka_version_of(libs: Path) -> str | None:
    """The Kafka version of a ``libs/`` directory, from its ``kafka_2.13-<version>.jar``."""
    for jar in sorted(libs.glob("kafka_2.*-*.jar")):
        match = re.fullmatch(r"kafka_2\.\d+-(\d[\w.]*)\.jar", jar.name)
        if match:
            return match.group(1)
    return None


def render_server_properties(
    template: str,
    *,
    kafka: Endpoint,
    controller_port: int,
    data_dir: Path,
    partitions: int,
) -> str:
    """``server.properties`` of the stack's broker from ``ops/kafka/server.properties.template``."""
    try:
        return Template(template).substitute(
            host=kafka.host,
            kafka_port=kafka.port,
            controller_port=controller_port,
            data_dir=data_dir,
            partitions=partitions,
        )
    except (KeyError, ValueError) as exc:
        msg = f"ops/kafka/server.properties.template has a bad placeholder: {exc}"
        raise StackError(msg) from exc


def kafka_classpath(libs: Path) -> str:
    """Java's classpath wildcard for every jar of ``libs``."""
    return f"{libs}/*"


def kafka_java_command(java: str, libs: Path, paths: StackPaths, main: str) -> list[str]:
    """``java ... <main>`` with the stack's logging settings; arguments of ``main`` follow."""
    return [
        java,
        *KAFKA_JVM_OPTIONS,
        f"-Dkafka.logs.dir={paths.kafka_logs}",
        f"-Dlog4j2.configurationFile={OPS_KAFKA_DIR / 'log4j2.properties'}",
        "-cp",
        kafka_classpath(libs),
        main,
    ]


def redis_command(redis_server: str, redis: Endpoint, paths: StackPaths) -> list[str]:
    """``redis-server`` for a throwaway, in-memory, loopback-only instance."""
    return [
        redis_server,
        "--port",
        str(redis.port),
        "--bind",
        redis.host,
        # Live KPI values are rebuilt from Kafka; persisting them would only slow tests down.
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(paths.redis_dir),
        # Log to stdout, which we send to redis.log: one place, whatever redis.conf defaults say.
        "--logfile",
        "",
    ]


def random_cluster_id() -> str:
    """A Kafka cluster id, as ``kafka-storage random-uuid`` makes one, without starting a JVM."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka refuses ids starting with "-" (they read as command-line options).
        if not cluster_id.startswith("-"):
            return cluster_id


# --- ports and processes ----------------------------------------------------------------------


def port_in_use(endpoint: Endpoint) -> bool:
    """Whether something already listens on ``endpoint`` (or otherwise holds the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the servers set it: sockets in TIME_WAIT from a stack that has just
        # stopped must not count as "taken", a listening socket still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((endpoint.host, endpoint.port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def check_port_free(endpoint: Endpoint, what: str, hint: str) -> None:
    """Raise a one-line StackError when ``endpoint`` is taken by another process."""
    if port_in_use(endpoint):
        msg = f"port {endpoint} for {what} is already in use by another process; {hint}"
        raise StackError(msg)


# Children started by this process, kept so they can be reaped (no zombies, no ResourceWarning
# when a test session starts and stops a stack in-process).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _cmdline(pid: int) -> list[str] | None:
    """The arguments ``pid`` runs with, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        raw = b""
    if raw:
        return raw.decode(errors="replace").rstrip("\0").split("\0")
    # No /proc (macOS) or an empty cmdline: ask ps, which gives one line.
    result = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return result.stdout.split() or None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself contain spaces.
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class _Service:
    name: str
    pid_file: Path
    port_file: Path
    log: Path
    # Tells our process from an unrelated one that got the recycled pid, by its arguments.
    owns: Callable[[list[str]], bool]


def _services(paths: StackPaths) -> tuple[_Service, _Service]:
    config = str(paths.kafka_config)

    def owns_kafka(argv: list[str]) -> bool:
        return "kafka.Kafka" in argv and config in argv

    redis_port = _read_int(paths.redis_port)

    def owns_redis(argv: list[str]) -> bool:
        # redis-server rewrites its title to "redis-server 127.0.0.1:PORT" (one string, padded
        # with spaces), dropping the arguments it was started with.
        words = " ".join(argv).split()
        return (
            bool(words)
            and Path(words[0]).name == "redis-server"
            and any(word.endswith(f":{redis_port}") for word in words[1:])
        )

    return (
        _Service("kafka", paths.kafka_pid, paths.kafka_port, paths.kafka_log, owns_kafka),
        _Service("redis", paths.redis_pid, paths.redis_port, paths.redis_log, owns_redis),
    )


def _running_pid(service: _Service) -> int | None:
    """The pid of the service when the pid file names a live process of ours, else None."""
    pid = _read_int(service.pid_file)
    if pid is None or not pid_alive(pid):
        return None
    argv = _cmdline(pid)
    if argv is None or not service.owns(argv):
        return None
    return pid


def _spawn(argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            # Own session: Ctrl-C in the terminal that ran `kpi stack up` must not reach it.
            start_new_session=True,
        )
    _children[process.pid] = process
    return process


def _stop_pid(pid: int, timeout_s: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout_s``; True when it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout_s):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 10.0)
    return True


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    child = _children.pop(pid, None)
    if child is not None:
        child.wait()
    return True


@contextlib.contextmanager
def _locked(paths: StackPaths) -> Iterator[None]:
    # Two `kpi stack up` at once on one stack dir would format and start twice.
    paths.root.mkdir(parents=True, exist_ok=True)
    with paths.lock.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- tools ------------------------------------------------------------------------------------


def find_java(env: StackEnvironment) -> str:
    """The ``java`` to run Kafka with (``JAVA_HOME`` first, then PATH); must be 17 or newer."""
    java: str | None = None
    if env.java_home is not None and (env.java_home / "bin" / "java").is_file():
        java = str(env.java_home / "bin" / "java")
    else:
        java = shutil.which("java")
    if java is None:
        msg = (
            f"java not found: the local Kafka needs Java {JAVA_MIN_MAJOR}+ "
            "(apt-get install openjdk-17-jre-headless)"
        )
        raise StackError(msg)
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = parse_java_major(result.stderr + result.stdout)
    if major is None or major < JAVA_MIN_MAJOR:
        found = "an unknown version" if major is None else f"Java {major}"
        msg = f"{java} is {found}; the local Kafka needs Java {JAVA_MIN_MAJOR}+"
        raise StackError(msg)
    return java


def find_redis_server() -> str:
    """``redis-server`` from PATH."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        msg = "redis-server not found on PATH: apt-get install redis-server"
        raise StackError(msg)
    return redis_server


def kafka_cache_dir(env: StackEnvironment) -> Path:
    """Where Maven-resolved Kafka jars are kept."""
    return (env.kafka_cache or DEFAULT_KAFKA_CACHE).expanduser().absolute()


def resolve_kafka_libs(env: StackEnvironment, echo: Echo = print) -> Path:
    """The directory of Kafka's jars: ``$KAFKA_HOME/libs``, or the Maven cache (filled once)."""
    if env.kafka_home is not None:
        libs = env.kafka_home.expanduser() / "libs"
        version = kafka_version_of(libs) if libs.is_dir() else None
        if version is None:
            msg = f"KAFKA_HOME={env.kafka_home} has no libs/kafka_2.13-*.jar"
            raise StackError(msg)
        if not version.startswith("4."):
            msg = f"KAFKA_HOME={env.kafka_home} is Kafka {version}; the local stack needs 4.x"
            raise StackError(msg)
        return libs

    pom = OPS_KAFKA_DIR / "pom.xml"
    if not pom.is_file():
        msg = f"{pom} not found: run from a checkout of the repository, or set KAFKA_HOME"
        raise StackError(msg)
    cache = kafka_cache_dir(env)
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = cache / _CACHE_MARKER
    if marker.is_file() and marker.read_text().strip() == pom_hash:
        return cache

    mvn = shutil.which("mvn")
    if mvn is None:
        msg = (
            "mvn not found: it resolves the Kafka jars once (apt-get install maven), "
            "or set KAFKA_HOME to an unpacked Kafka 4.x"
        )
        raise StackError(msg)
    echo(f"kafka: resolving Kafka {KAFKA_VERSION} jars with mvn into {cache} (first run only)")
    # Resolve next to the cache and swap it in whole: an interrupted download, or jars that
    # an older pom needed, never end up on the broker's classpath.
    staging = cache.with_name(f"{cache.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0 or kafka_version_of(staging) is None:
        shutil.rmtree(staging, ignore_errors=True)
        output = (result.stdout + result.stderr).strip().splitlines()
        last = output[-1] if output else f"exit code {result.returncode}"
        msg = f"mvn could not resolve the Kafka jars ({' '.join(command)}): {last}"
        raise StackError(msg)
    (staging / _CACHE_MARKER).write_text(pom_hash + "\n")
    shutil.rmtree(cache, ignore_errors=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(cache)
    except OSError:
        # Another `kpi stack` resolved the same jars at the same time and swapped first.
        shutil.rmtree(staging, ignore_errors=True)
        if not (marker.is_file() and marker.read_text().strip() == pom_hash):
            raise
    return cache


# --- readiness --------------------------------------------------------------------------------


def _run_coroutine(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when a loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    # Called from inside a running loop (an async test, say): use a loop of our own elsewhere.
    box: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(asyncio.run(make()))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


async def _kafka_broker_count(options: dict[str, Any]) -> int:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(**options, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return len(client.cluster.brokers())
    finally:
        await client.close()


def kafka_answers(kafka: Endpoint, options: dict[str, Any] | None = None) -> bool:
    """Whether the broker accepts connections and answers a metadata request with itself.

    ``options``: how to reach it (``streams.kafka.client_options``); default plain TCP.
    """
    try:
        with socket.create_connection((kafka.host, kafka.port), timeout=1.0):
            pass
    except OSError:
        return False
    client_options = options or {"bootstrap_servers": str(kafka)}
    try:
        return _run_coroutine(lambda: _kafka_broker_count(client_options)) > 0
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"; the caller times out
        return False


def redis_answers(redis: Endpoint, options: dict[str, Any] | None = None) -> bool:
    """Whether Redis answers PING (``options``: TLS and credentials for redis-py)."""
    import redis as redis_client

    client = redis_client.Redis(
        host=redis.host,
        port=redis.port,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        **(options or {}),
    )
    try:
        return bool(client.ping())
    except redis_client.RedisError:
        return False
    finally:
        client.close()


def _wait_ready(
    name: str,
    probe: Callable[[], bool],
    process: subprocess.Popen[bytes] | None,
    deadline: float,
    logs: str,
) -> None:
    while not probe():
        if process is not None and process.poll() is not None:
            msg = f"{name} exited with code {process.returncode} while starting; see {logs}"
            raise StackError(msg)
        if time.monotonic() >= deadline:
            msg = f"timed out waiting for {name} to answer; see {logs}"
            raise StackError(msg)
        time.sleep(0.2)


# --- the commands -----------------------------------------------------------------------------


def _java_argument_file(path: Path, arguments: list[str]) -> None:
    """A java ``@argfile`` (0600) holding ``arguments``: they stay out of ``ps`` and /proc."""
    quoted = ('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in arguments)
    stack_secure.write_private(path, "\n".join(quoted) + "\n")


def _format_kafka_storage(
    java: str,
    libs: Path,
    paths: StackPaths,
    kafka: Endpoint,
    partitions: int,
    echo: Echo,
    mtls_port: int | None = None,
) -> int:
    """Format the broker's storage once; returns the controller port chosen for it.

    With ``mtls_port`` (a secure stack) the users' SCRAM credentials are created with it:
    KRaft reads them from the metadata log, which only the format (or a running broker)
    writes.
    """
    controller_port = _read_int(paths.controller_port)
    if controller_port is not None and (paths.kafka_data / "meta.properties").is_file():
        return controller_port
    # Half-made state (interrupted format, lost port file): nothing in it is worth keeping.
    shutil.rmtree(paths.kafka_data, ignore_errors=True)
    controller_port = free_port(kafka.host)
    while controller_port == mtls_port:  # chosen but not bound yet: the OS may offer it again
        controller_port = free_port(kafka.host)
    _write_server_properties(paths, kafka, controller_port, partitions, mtls_port)
    cluster_id = random_cluster_id()
    arguments = [
        "format",
        "--cluster-id",
        cluster_id,
        "--config",
        str(paths.kafka_config),
        # A single-node dynamic quorum; controller.quorum.bootstrap.servers names it.
        "--standalone",
    ]
    argument_file = paths.kafka_dir / "format.args"
    if mtls_port is None:
        command = [*kafka_java_command(java, libs, paths, "kafka.tools.StorageTool"), *arguments]
    else:
        # The passwords go to the JVM in an argument file, not on its command line.
        scram = stack_secure.scram_arguments(stack_secure.kafka_passwords(paths.secure))
        _java_argument_file(argument_file, ["kafka.tools.StorageTool", *arguments, *scram])
        command = kafka_java_command(java, libs, paths, f"@{argument_file}")
    format_log = paths.kafka_logs / "format.log"
    try:
        with format_log.open("wb") as out:
            result = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False
            )
    finally:
        argument_file.unlink(missing_ok=True)
    if result.returncode != 0:
        msg = (
            f"formatting the Kafka storage failed (exit code {result.returncode}); see {format_log}"
        )
        raise StackError(msg)
    paths.controller_port.write_text(f"{controller_port}\n")
    echo(
        f"kafka: formatted {paths.kafka_data} "
        f"(cluster id {cluster_id}, controller {kafka.host}:{controller_port})"
    )
    return controller_port


def _write_server_properties(
    paths: StackPaths,
    kafka: Endpoint,
    controller_port: int,
    partitions: int,
    mtls_port: int | None = None,
) -> None:
    template = (OPS_KAFKA_DIR / "server.properties.template").read_text()
    properties = render_server_properties(
        template,
        kafka=kafka,
        controller_port=controller_port,
        data_dir=paths.kafka_data,
        partitions=partitions,
    )
    if mtls_port is None:
        paths.kafka_config.write_text(properties)
        return
    secure = stack_secure.render_secure_properties(
        (OPS_KAFKA_DIR / "server-secure.properties.template").read_text(),
        host=kafka.host,
        kafka_port=kafka.port,
        mtls_port=mtls_port,
        controller_port=controller_port,
        files=paths.secure,
        passwords=stack_secure.kafka_passwords(paths.secure),
    )
    # It holds the PLAIN passwords.
    stack_secure.write_private(
        paths.kafka_config, stack_secure.override_properties(properties, secure)
    )


def _status_of(service: _Service, configured: Endpoint, security: str = "") -> ServiceStatus:
    pid = _running_pid(service)
    port = _read_int(service.port_file) if pid is not None else None
    endpoint = Endpoint(configured.host, port) if port is not None else configured
    return ServiceStatus(service.name, pid is not None, pid, endpoint, service.log, security)


def _refuse_other_port(status: ServiceStatus, wanted: Endpoint, variable: str) -> None:
    if status.running and status.endpoint.port != wanted.port:
        msg = (
            f"{status.name} of this stack already runs on port {status.endpoint.port} but "
            f"{variable} says {wanted.port}; run `kpi stack down` first"
        )
        raise StackError(msg)


def _refuse_other_kind(paths: StackPaths, secure: bool) -> None:
    """A plain stack's data cannot serve a secure stack, nor the other way round."""
    if paths.secure.is_secure() and not secure:
        msg = (
            f"{paths.root} holds a secure stack: start it with `kpi stack up --secure`, or set "
            "KPI_STACK_DIR to another directory for a plain one"
        )
        raise StackError(msg)
    if (
        secure
        and not paths.secure.is_secure()
        and (paths.kafka_dir.exists() or paths.redis_dir.exists())
    ):
        msg = (
            f"{paths.root} holds a plain stack: stop it (`kpi stack down`) and remove {paths.root},"
            " or set KPI_STACK_DIR to another directory for a secure one"
        )
        raise StackError(msg)


def _mtls_endpoint(paths: StackPaths, kafka: Endpoint, running: bool) -> Endpoint:
    """The mutual-TLS listener's endpoint: the one in use, kept, or a new free port."""
    port = _read_int(paths.mtls_port)
    if running:
        if port is None:
            msg = f"Kafka runs but {paths.mtls_port} is missing; run `kpi stack down` first"
            raise StackError(msg)
        return Endpoint(kafka.host, port)
    # Not in the metadata log (unlike the controller's): another port is fine when it is taken.
    taken = {kafka.port, _read_int(paths.controller_port)}
    while port is None or port in taken or port_in_use(Endpoint(kafka.host, port)):
        port = free_port(kafka.host)
    paths.kafka_dir.mkdir(parents=True, exist_ok=True)
    paths.mtls_port.write_text(f"{port}\n")
    return Endpoint(kafka.host, port)


def _prepare_secure(paths: StackPaths, openssl: str | None, echo: Echo) -> None:
    """Passwords and certificates of a secure stack, made once and kept in the stack dir."""
    files = paths.secure
    formatted = (paths.kafka_data / "meta.properties").is_file()
    if formatted and not all(p.is_file() for p in stack_secure.kafka_password_files(files)):
        # The SCRAM credentials were made from them at format time.
        msg = f"{files.secrets} lost Kafka passwords; remove {paths.root} to start over"
        raise StackError(msg)
    files.mark_secure()
    if stack_secure.ensure_passwords(files):
        echo(f"stack: random passwords in {files.secrets} (0600)")
    if openssl is not None and stack_secure.ensure_certificates(files, openssl):
        echo(f"stack: made a CA and the certificates with {openssl} in {files.tls}")


def _secure_endpoints(settings: Settings, paths: StackPaths) -> SecureEndpoints:
    """Where the secure stack of ``settings`` listens (its ports files, else the settings)."""
    kafka = parse_kafka_bootstrap(settings.kafka_bootstrap)
    redis = parse_redis_url(settings.redis_url, secure=True)
    mtls_port = _read_int(paths.mtls_port)
    if not paths.secure.is_secure() or mtls_port is None:
        msg = f"{paths.root} holds no secure stack: run `kpi stack up --secure` first"
        raise StackError(msg)
    return SecureEndpoints(
        host=kafka.host,
        kafka_port=_read_int(paths.kafka_port) or kafka.port,
        mtls_port=mtls_port,
        redis_port=_read_int(paths.redis_port) or redis.port,
    )


def stack_environment(
    settings: Settings, role: ClientRole, *, mtls: bool = False
) -> dict[str, str]:
    """The ``KPI_*`` variables of a client of the secure stack in ``role`` (secrets as files).

    The Redis database is the one ``KPI_REDIS_URL`` names.
    """
    paths = stack_paths(settings)
    return stack_secure.client_environment(
        paths.secure,
        role,
        _secure_endpoints(settings, paths),
        db=stack_secure.redis_db(settings.redis_url),
        mtls=mtls,
    )


def role_settings(settings: Settings, role: ClientRole, *, mtls: bool = False) -> Settings:
    """``settings`` as a client of the secure stack in ``role`` (for in-process clients)."""
    return stack_secure.client_settings(settings, stack_environment(settings, role, mtls=mtls))


def provision(settings: Settings, *, echo: Echo = print, timeout_s: float = 60.0) -> None:
    """Make the running secure stack serve the namespace of ``settings``.

    As the administrator: creates the product's topics for its topic prefix and app id
    (the worker and the publisher may not create topics), grants the worker and the
    publisher their ACLs (``tooling/kafka_access.py``) and sets the Redis users' rules for
    its Redis key prefix (``tooling/redis_access.py``). Idempotent; ``kpi stack up --secure``
    runs it each time.
    """
    import redis as redis_client

    from streams.topics import ensure_topics
    from tooling import kafka_access

    admin = role_settings(settings, "admin")

    async def kafka_side() -> None:
        await ensure_topics(admin, timeout_s=timeout_s)
        for role in ROLES:
            if role not in stack_secure.KAFKA_USERS:
                continue  # an operator's role (replayer): the stack's admin plays it
            acls = kafka_access.kafka_acls(settings, role)
            await kafka_access.grant(admin, stack_secure.KAFKA_USERS[role], acls)

    _run_coroutine(kafka_side)
    client = redis_client.Redis.from_url(
        admin.redis_url, socket_timeout=10.0, **admin.redis_options()
    )
    try:
        for role in ("worker", "reader"):
            rule = redis_acl_rule(settings.redis_prefix, role)
            client.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "SETUSER", stack_secure.REDIS_USERS[role], "on", *rule.split()
            )
    except redis_client.RedisError as exc:
        msg = f"setting the Redis users' rules failed: {type(exc).__name__}: {exc}"
        raise StackError(msg) from None
    finally:
        client.close()
    echo(
        f"stack: topics and ACLs for topic prefix {settings.topic_prefix!r}, app id "
        f"{settings.app_id!r}; Redis rules for key prefix {settings.redis_prefix!r}"
    )


def stack_up(
    settings: Settings,
    *,
    secure: bool = False,
    env: StackEnvironment | None = None,
    timeout_s: float = 120.0,
    echo: Echo = print,
) -> StackInfo:
    """Start Kafka and Redis for ``settings`` unless they already run; return once both answer.

    ``secure``: TLS everywhere, SASL and mutual TLS for Kafka with ACLs, Redis ACL users
    (see ``stack_secure``); the topics, ACLs and Redis rules of the namespace of
    ``settings`` are provisioned each time (``provision``).
    """
    began = time.monotonic()
    env = env or StackEnvironment()
    paths = stack_paths(settings)
    _refuse_other_kind(paths, secure)
    kafka = parse_kafka_bootstrap(settings.kafka_bootstrap)
    redis = parse_redis_url(settings.redis_url, secure=secure)
    kafka_service, redis_service = _services(paths)
    with _locked(paths):
        kafka_status = _status_of(kafka_service, kafka)
        redis_status = _status_of(redis_service, redis)
        _refuse_other_port(kafka_status, kafka, "KPI_KAFKA_BOOTSTRAP")
        _refuse_other_port(redis_status, redis, "KPI_REDIS_URL")
        for status in (kafka_status, redis_status):
            if status.running:
                echo(f"{status.name}: already running (pid {status.pid}, {status.endpoint})")

        # Every check that can fail comes before anything is started.
        java: str | None = None
        libs: Path | None = None
        redis_server: str | None = None
        mtls: Endpoint | None = None
        if not kafka_status.running:
            java = find_java(env)
            libs = resolve_kafka_libs(env, echo)
            check_port_free(kafka, "Kafka", "set KPI_KAFKA_BOOTSTRAP to a free port")
        if not redis_status.running:
            redis_server = find_redis_server()
            check_port_free(redis, "Redis", "set KPI_REDIS_URL to a free port")
        if secure:
            complete = stack_secure.certificates_complete(paths.secure)
            openssl = None if complete else stack_secure.find_openssl()
            _prepare_secure(paths, openssl, echo)
            mtls = _mtls_endpoint(paths, kafka, kafka_status.running)

        started: list[subprocess.Popen[bytes]] = []
        deadline = time.monotonic() + timeout_s
        try:
            kafka_process: subprocess.Popen[bytes] | None = None
            redis_process: subprocess.Popen[bytes] | None = None
            mtls_port = mtls.port if mtls is not None else None
            if java is not None and libs is not None:
                paths.kafka_logs.mkdir(parents=True, exist_ok=True)
                controller_port = _format_kafka_storage(
                    java, libs, paths, kafka, settings.partitions, echo, mtls_port
                )
                check_port_free(
                    Endpoint(kafka.host, controller_port),
                    "the Kafka controller",
                    f"it was chosen when {paths.kafka_data} was formatted; remove {paths.root} "
                    "to choose another",
                )
                # Rendered on every start: the PLAINTEXT port and partitions may have changed.
                _write_server_properties(
                    paths, kafka, controller_port, settings.partitions, mtls_port
                )
                argv = [
                    *kafka_java_command(java, libs, paths, "kafka.Kafka"),
                    str(paths.kafka_config),
                ]
                kafka_process = _spawn(argv, paths.kafka_stdout, paths.kafka_dir)
                started.append(kafka_process)
                paths.kafka_pid.write_text(f"{kafka_process.pid}\n")
                paths.kafka_port.write_text(f"{kafka.port}\n")
                listening = f"{kafka}" if mtls is None else f"{kafka} (SASL_SSL), {mtls} (mTLS)"
                echo(
                    f"kafka: started pid {kafka_process.pid} on {listening}, log {paths.kafka_log}"
                )
            if redis_server is not None:
                paths.redis_dir.mkdir(parents=True, exist_ok=True)
                if secure:
                    stack_secure.write_private(
                        paths.redis_config,
                        stack_secure.render_redis_config(
                            host=redis.host,
                            port=redis.port,
                            directory=paths.redis_dir,
                            files=paths.secure,
                            prefix=settings.redis_prefix,
                        ),
                    )
                    command = [redis_server, str(paths.redis_config)]
                else:
                    command = redis_command(redis_server, redis, paths)
                redis_process = _spawn(command, paths.redis_log, paths.redis_dir)
                started.append(redis_process)
                paths.redis_pid.write_text(f"{redis_process.pid}\n")
                paths.redis_port.write_text(f"{redis.port}\n")
                listening = f"{redis}" if not secure else f"{redis} (TLS)"
                echo(
                    f"redis: started pid {redis_process.pid} on {listening}, log {paths.redis_log}"
                )

            kafka_options: dict[str, Any] | None = None
            redis_options: dict[str, Any] | None = None
            if secure:
                from streams.kafka import client_options

                admin = role_settings(settings, "admin")
                kafka_options = client_options(admin)
                admin_url = urlsplit(admin.redis_url)
                redis_options = {
                    "ssl": True,
                    "username": admin_url.username,
                    "password": admin_url.password,
                    **admin.redis_options(),
                }
            _wait_ready(
                "redis",
                lambda: redis_answers(redis, redis_options),
                redis_process,
                deadline,
                str(paths.redis_log),
            )
            _wait_ready(
                "kafka",
                lambda: kafka_answers(kafka, kafka_options),
                kafka_process,
                deadline,
                f"{paths.kafka_log} and {paths.kafka_stdout}",
            )
            if started:
                echo(f"stack: ready after {time.monotonic() - began:.1f} s")
            if secure:
                provision(settings, echo=echo, timeout_s=max(10.0, deadline - time.monotonic()))
        except BaseException:
            # Leave nothing half-started behind; what already ran before this call stays.
            for process in started:
                _stop_pid(process.pid, 10.0)
            for service in (kafka_service, redis_service):
                if _running_pid(service) is None:
                    _remove_run_files(service)
            raise

        kafka_service, redis_service = _services(paths)
        worker_environment: dict[str, str] = {}
        if secure:
            worker_environment = stack_environment(settings, "worker")
            echo(f"stack: {stack_secure.environment_line(worker_environment)}")
        else:
            redis_url = shown_url(settings.redis_url)
            echo(f"stack: KPI_KAFKA_BOOTSTRAP={kafka} KPI_REDIS_URL={redis_url}")
        kafka_security, redis_security = _security_notes(paths, kafka)
        return StackInfo(
            stack_dir=paths.root,
            bootstrap=str(kafka),
            redis_url=settings.redis_url,
            kafka=_status_of(kafka_service, kafka, kafka_security),
            redis=_status_of(redis_service, redis, redis_security),
            started=tuple(
                name
                for name, process in (("kafka", kafka_process), ("redis", redis_process))
                if process is not None
            ),
            worker_environment=worker_environment,
        )


def _security_notes(paths: StackPaths, kafka: Endpoint) -> tuple[str, str]:
    """How clients reach Kafka and Redis of this stack, for status lines ("" when plain)."""
    if not paths.secure.is_secure():
        return "", ""
    mtls_port = _read_int(paths.mtls_port)
    mtls = f"; mTLS {kafka.host}:{mtls_port}" if mtls_port is not None else ""
    return f"SASL_SSL{mtls}", "TLS"


def _remove_run_files(service: _Service) -> None:
    service.pid_file.unlink(missing_ok=True)
    service.port_file.unlink(missing_ok=True)


def stack_down(
    settings: Settings, *, timeout_s: float = 30.0, echo: Echo = print
) -> tuple[str, ...]:
    """Stop the servers this stack started (by pid file, after checking the command line).

    A secure stack keeps its certificates, passwords and data for the next ``up --secure``.
    """
    paths = stack_paths(settings)
    if not paths.root.is_dir():
        echo(f"stack: nothing to stop ({paths.root} does not exist)")
        return ()
    stopped: list[str] = []
    with _locked(paths):
        for service in _services(paths):
            pid = _running_pid(service)
            if pid is None:
                if service.pid_file.exists():
                    echo(f"{service.name}: not running (removed stale {service.pid_file.name})")
                else:
                    echo(f"{service.name}: not running")
                _remove_run_files(service)
                continue
            killed = _stop_pid(pid, timeout_s)
            _remove_run_files(service)
            how = f"killed after {timeout_s:.0f} s" if killed else "stopped"
            echo(f"{service.name}: {how} (pid {pid})")
            stopped.append(service.name)
    return tuple(stopped)


def stack_status(settings: Settings) -> tuple[ServiceStatus, ServiceStatus]:
    """Kafka's and Redis's state in this stack: running or not, pid, port, log."""
    paths = stack_paths(settings)
    secure = paths.secure.is_secure()
    kafka = parse_kafka_bootstrap(settings.kafka_bootstrap)
    kafka_security, redis_security = _security_notes(paths, kafka)
    kafka_service, redis_service = _services(paths)
    return (
        _status_of(kafka_service, kafka, kafka_security),
        _status_of(
            redis_service, parse_redis_url(settings.redis_url, secure=secure), redis_security
        ),
    )


# --- CLI --------------------------------------------------------------------------------------

#: What ``kpi stack status`` reads: where the stack is and the ports it should listen on.
_STATUS_SETTINGS = ("stack_dir", "kafka_bootstrap", "redis_url")
#: ``up`` and ``env`` also provision (``--secure``: ACLs) the configured namespace.
_STACK_SETTINGS = (*_STATUS_SETTINGS, "topic_prefix", "app_id", "partitions", "redis_prefix")

stack_app = typer.Typer(
    help="The local Kafka + Redis stack (real servers, no Docker); state in KPI_STACK_DIR.",
    no_args_is_help=True,
)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        msg = f"invalid setting KPI_{where.upper()}: {first['msg']}"
        raise ConfigurationError(msg) from exc


@stack_app.command("up", epilog=environment_help(*_STACK_SETTINGS))
def up_command(
    timeout: float = typer.Option(120.0, help="Seconds to wait for both servers to answer."),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="TLS, SASL (SCRAM) and mutual TLS for Kafka with ACLs; TLS and ACL users for "
        "Redis. Certificates and passwords are made into the stack dir.",
    ),
) -> None:
    """Start Kafka (KRaft, single node) and Redis on KPI_KAFKA_BOOTSTRAP and KPI_REDIS_URL."""
    stack_up(_settings(), secure=secure, timeout_s=timeout, echo=typer.echo)


@stack_app.command("env", epilog=environment_help(*_STACK_SETTINGS))
def env_command(
    role: str = typer.Option(
        "worker", help=f"Whose settings: {', '.join(CLIENT_ROLES)} (reader: Redis only)."
    ),
    mtls: bool = typer.Option(
        False, "--mtls", help="Kafka by client certificate on the mutual-TLS listener."
    ),
) -> None:
    """Print a secure stack's client settings: eval "export $(kpi stack env --role ...)"."""
    if role not in CLIENT_ROLES:
        msg = f"--role {role!r}: choose from {', '.join(CLIENT_ROLES)}"
        raise ConfigurationError(msg)
    environment = stack_environment(_settings(), role, mtls=mtls)
    typer.echo(stack_secure.environment_line(environment))


@stack_app.command("down", epilog=environment_help("stack_dir"))
def down_command(
    timeout: float = typer.Option(30.0, help="Seconds to wait after SIGTERM before SIGKILL."),
) -> None:
    """Stop the servers `kpi stack up` started in this stack directory."""
    stack_down(_settings(), timeout_s=timeout, echo=typer.echo)


@stack_app.command("status", epilog=environment_help(*_STATUS_SETTINGS))
def status_command(
    as_json: bool = typer.Option(
        False,
        "--json",
        help='One JSON document: {"running": all of them, "services": [{name, running, pid, '
        "host, port, security, log}]}.",
    ),
) -> None:
    """Show whether Kafka and Redis run; exit code 1 when one of them does not."""
    statuses = stack_status(_settings())
    running = all(status.running for status in statuses)
    if as_json:
        document = {"running": running, "services": [status.record() for status in statuses]}
        typer.echo(orjson.dumps(document).decode())
    else:
        for status in statuses:
            typer.echo(status.describe())
    if not running:
        raise typer.Exit(EXIT_NOTHING)


@stack_app.command("fetch")
def fetch_command() -> None:
    """Resolve the Kafka jars (Maven, or KAFKA_HOME) without starting anything."""
    libs = resolve_kafka_libs(StackEnvironment(), typer.echo)
    typer.echo(f"kafka: {kafka_version_of(libs)} jars in {libs}")
