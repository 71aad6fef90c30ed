"""The local stack's logic without starting anything: parsing, rendering, checks, pid safety."""

from __future__ import annotations

import base64
import hashlib
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from schemas.errors import StackError
from streams.config import Settings
from tests.cli import run_kpi
from tooling import stack
from tooling.stack import (
    OPS_KAFKA_DIR,
    Endpoint,
    StackEnvironment,
    StackPaths,
    check_port_free,
    find_java,
    find_redis_server,
    kafka_java_command,
    parse_java_major,
    parse_kafka_bootstrap,
    parse_redis_url,
    random_cluster_id,
    redis_command,
    render_server_properties,
    resolve_kafka_libs,
    stack_down,
    stack_paths,
    stack_status,
    stack_up,
)


@pytest.fixture
def listening() -> Iterator[Endpoint]:
    """A loopback port some other process (here: this test) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield Endpoint("127.0.0.1", sock.getsockname()[1])


@pytest.fixture
def empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH with nothing on it but what the test puts into the returned directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def _executable(path: Path, script: str) -> None:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bootstrap", "endpoint"),
    [
        ("localhost:9092", Endpoint("127.0.0.1", 9092)),
        ("127.0.0.1:19092", Endpoint("127.0.0.1", 19092)),
        (" 127.0.0.2:1 ", Endpoint("127.0.0.2", 1)),
    ],
)
def test_kafka_bootstrap_parses_to_a_loopback_endpoint(bootstrap: str, endpoint: Endpoint) -> None:
    assert parse_kafka_bootstrap(bootstrap) == endpoint


@pytest.mark.parametrize(
    ("bootstrap", "complaint"),
    [
        ("kafka:9092", "is not local"),
        ("10.0.0.5:9092", "is not local"),
        ("localhost", "is not host:port"),
        ("localhost:0", "is not a port number"),
        ("localhost:70000", "is not a port number"),
        ("localhost:x", "is not a port number"),
        ("localhost:9092,localhost:9093", "several brokers"),
    ],
)
def test_unusable_kafka_bootstrap_is_one_clear_error(bootstrap: str, complaint: str) -> None:
    with pytest.raises(StackError, match=complaint):
        parse_kafka_bootstrap(bootstrap)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("redis://localhost:6379/0", Endpoint("127.0.0.1", 6379)),
        ("redis://127.0.0.1:16379/3", Endpoint("127.0.0.1", 16379)),
        ("redis://localhost", Endpoint("127.0.0.1", 6379)),
    ],
)
def test_redis_url_parses_to_a_loopback_endpoint(url: str, endpoint: Endpoint) -> None:
    assert parse_redis_url(url) == endpoint


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("rediss://localhost:6379/0", "plain redis://"),
        ("redis://cache.internal:6379/0", "is not local"),
        ("redis://localhost:99999/0", "no valid port"),
    ],
)
def test_unusable_redis_url_is_one_clear_error(url: str, complaint: str) -> None:
    with pytest.raises(StackError, match=complaint):
        parse_redis_url(url)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("bash: java: command not found", None),
    ],
)
def test_java_major_version_is_read_from_java_version(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


# --- rendering -------------------------------------------------------------------------------


def test_server_properties_put_both_listeners_on_loopback_and_fill_every_placeholder() -> None:
    template = (OPS_KAFKA_DIR / "server.properties.template").read_text()
    rendered = render_server_properties(
        template,
        kafka=Endpoint("127.0.0.1", 19092),
        controller_port=19093,
        data_dir=Path("/tmp/s/kafka/data"),
        partitions=4,
    )
    lines = set(rendered.splitlines())
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in lines
    assert "controller.quorum.bootstrap.servers=127.0.0.1:19093" in lines
    assert "process.roles=broker,controller" in lines
    assert "log.dirs=/tmp/s/kafka/data" in lines
    assert "num.partitions=4" in lines
    assert "offsets.topic.replication.factor=1" in lines
    assert "group.initial.rebalance.delay.ms=0" in lines
    assert "$" not in rendered


def test_a_broken_template_is_a_stack_error() -> None:
    with pytest.raises(StackError, match="bad placeholder"):
        render_server_properties(
            "x=${nope}",
            kafka=Endpoint("127.0.0.1", 1),
            controller_port=2,
            data_dir=Path("/d"),
            partitions=1,
        )


def test_kafka_command_has_a_small_heap_the_stack_logs_and_all_jars(tmp_path: Path) -> None:
    paths = StackPaths.at(tmp_path)
    command = kafka_java_command("/usr/bin/java", Path("/cache/libs"), paths, "kafka.Kafka")
    assert command[0] == "/usr/bin/java"
    assert command[-1] == "kafka.Kafka"
    assert {"-Xms256m", "-Xmx512m"} <= set(command)
    assert command[command.index("-cp") + 1] == "/cache/libs/*"
    assert f"-Dkafka.logs.dir={tmp_path / 'kafka' / 'logs'}" in command
    assert f"-Dlog4j2.configurationFile={OPS_KAFKA_DIR / 'log4j2.properties'}" in command


def test_redis_command_is_loopback_only_and_never_persists(tmp_path: Path) -> None:
    command = redis_command("redis-server", Endpoint("127.0.0.1", 16379), StackPaths.at(tmp_path))
    pairs = dict(zip(command[1::2], command[2::2], strict=True))
    assert pairs["--port"] == "16379"
    assert pairs["--bind"] == "127.0.0.1"
    assert pairs["--save"] == ""
    assert pairs["--appendonly"] == "no"
    assert pairs["--daemonize"] == "no"


def test_cluster_ids_are_kafka_uuids() -> None:
    for _ in range(200):
        cluster_id = random_cluster_id()
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_stack_dir_is_made_absolute_from_the_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert stack_paths(Settings(stack_dir=".stack")).root == tmp_path / ".stack"


# --- checks ----------------------------------------------------------------------------------


def test_a_taken_port_is_named_in_the_error(listening: Endpoint) -> None:
    with pytest.raises(StackError) as caught:
        check_port_free(listening, "Kafka", "set KPI_KAFKA_BOOTSTRAP to a free port")
    message = str(caught.value)
    assert f"port {listening} for Kafka is already in use" in message
    assert "KPI_KAFKA_BOOTSTRAP" in message
    assert "\n" not in message


def test_a_free_port_passes_the_check() -> None:
    check_port_free(Endpoint("127.0.0.1", stack.free_port()), "Kafka", "")


def test_missing_redis_server_says_what_to_install(empty_path: Path) -> None:
    with pytest.raises(StackError, match="apt-get install redis-server"):
        find_redis_server()


def test_missing_java_says_which_version_is_needed(empty_path: Path) -> None:
    with pytest.raises(StackError, match=r"java not found: .*Java 17\+"):
        find_java(StackEnvironment(java_home=None))


def test_old_java_is_refused(empty_path: Path) -> None:
    _executable(empty_path / "java", """echo 'openjdk version "11.0.2" 2019-01-15' >&2""")
    with pytest.raises(StackError, match=r"is Java 11; the local Kafka needs Java 17\+"):
        find_java(StackEnvironment(java_home=None))


def test_java_home_wins_over_path(empty_path: Path, tmp_path: Path) -> None:
    _executable(empty_path / "java", """echo 'openjdk version "11.0.2"' >&2""")
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    _executable(home / "bin" / "java", """echo 'openjdk version "21.0.1"' >&2""")
    assert find_java(StackEnvironment(java_home=home)) == str(home / "bin" / "java")


def test_missing_mvn_says_how_to_get_the_jars(empty_path: Path, tmp_path: Path) -> None:
    env = StackEnvironment(kafka_home=None, kafka_cache=tmp_path / "cache")
    with pytest.raises(StackError, match="mvn not found: .*apt-get install maven.*KAFKA_HOME"):
        resolve_kafka_libs(env, echo=lambda _: None)


def test_a_resolved_cache_is_used_without_mvn(empty_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    # Mark the cache as resolved from the current pom, as a successful mvn run would.
    pom_hash = hashlib.sha256((OPS_KAFKA_DIR / "pom.xml").read_bytes()).hexdigest()
    (cache / ".resolved").write_text(pom_hash)
    env = StackEnvironment(kafka_home=None, kafka_cache=cache)
    assert resolve_kafka_libs(env, echo=lambda _: None) == cache


def test_a_cache_from_another_pom_is_resolved_again(empty_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".resolved").write_text("0" * 64)
    env = StackEnvironment(kafka_home=None, kafka_cache=cache)
    with pytest.raises(StackError, match="mvn not found"):
        resolve_kafka_libs(env, echo=lambda _: None)


@pytest.mark.parametrize(
    ("jar", "outcome"),
    [("kafka_2.13-4.1.1.jar", None), ("kafka_2.13-3.9.0.jar", "is Kafka 3.9.0; .* needs 4.x")],
)
def test_kafka_home_must_hold_kafka_4(tmp_path: Path, jar: str, outcome: str | None) -> None:
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / jar).touch()
    env = StackEnvironment(kafka_home=tmp_path)
    if outcome is None:
        assert resolve_kafka_libs(env) == tmp_path / "libs"
    else:
        with pytest.raises(StackError, match=outcome):
            resolve_kafka_libs(env)


def test_kafka_home_without_jars_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="has no libs/kafka_2.13"):
        resolve_kafka_libs(StackEnvironment(kafka_home=tmp_path))


def test_up_refuses_a_taken_port_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listening: Endpoint
) -> None:
    # Tools "found" without looking, so only the port check can stop it.
    monkeypatch.setattr(stack, "find_java", lambda env: "java")
    monkeypatch.setattr(stack, "resolve_kafka_libs", lambda env, echo: tmp_path / "libs")
    monkeypatch.setattr(stack, "find_redis_server", lambda: "redis-server")
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{stack.free_port()}",
        redis_url=f"redis://{listening}/0",
        stack_dir=str(tmp_path / "stack"),
    )
    with pytest.raises(StackError, match=f"port {listening} for Redis is already in use"):
        stack_up(settings, echo=lambda _: None)
    paths = stack_paths(settings)
    assert not paths.kafka_pid.exists()
    assert not paths.redis_pid.exists()
    assert not paths.kafka_data.exists()


# --- pid safety ------------------------------------------------------------------------------


def test_down_never_kills_a_process_that_is_not_ours(tmp_path: Path) -> None:
    settings = Settings(stack_dir=str(tmp_path / "stack"))
    paths = stack_paths(settings)
    paths.kafka_dir.mkdir(parents=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A stale pid file whose pid now belongs to an unrelated process.
        paths.kafka_pid.write_text(f"{stranger.pid}\n")
        lines: list[str] = []
        assert stack_down(settings, timeout_s=1, echo=lines.append) == ()
        assert stranger.poll() is None
        assert not paths.kafka_pid.exists()
        assert "kafka: not running (removed stale kafka.pid)" in lines
    finally:
        stranger.kill()
        stranger.wait()


def test_status_of_a_stack_never_started_is_stopped_on_the_configured_ports(
    tmp_path: Path,
) -> None:
    settings = Settings(
        kafka_bootstrap="localhost:19092",
        redis_url="redis://localhost:16379/2",
        stack_dir=str(tmp_path / "none"),
    )
    kafka, redis = stack_status(settings)
    assert (kafka.running, kafka.pid, kafka.endpoint) == (False, None, Endpoint("127.0.0.1", 19092))
    assert (redis.running, redis.pid, redis.endpoint) == (False, None, Endpoint("127.0.0.1", 16379))
    assert redis.describe().split()[:3] == ["redis", "stopped", "pid"]


def test_down_of_a_stack_never_started_is_quiet(tmp_path: Path) -> None:
    lines: list[str] = []
    assert stack_down(Settings(stack_dir=str(tmp_path / "none")), echo=lines.append) == ()
    assert lines == [f"stack: nothing to stop ({tmp_path / 'none'} does not exist)"]


# --- CLI -------------------------------------------------------------------------------------


def test_cli_status_exits_1_when_the_stack_is_down(tmp_path: Path) -> None:
    result = run_kpi(tmp_path, "stack", "status")
    assert result.returncode == 1
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["kafka", "stopped"],
        ["redis", "stopped"],
    ]


def test_cli_status_json_is_one_document_and_exit_1_when_down(tmp_path: Path) -> None:
    result = run_kpi(
        tmp_path,
        "stack",
        "status",
        "--json",
        KPI_KAFKA_BOOTSTRAP="127.0.0.1:19092",
        KPI_REDIS_URL="redis://127.0.0.1:16379/0",
    )
    assert result.returncode == 1 and result.stderr == ""
    assert result.stdout.count("\n") == 1
    stack = tmp_path / "stack"
    assert orjson.loads(result.stdout) == {
        "running": False,
        "services": [
            {
                "name": name,
                "running": False,
                "pid": None,
                "host": "127.0.0.1",
                "port": port,
                "security": None,
                "log": str(stack / log),
            }
            for name, port, log in (
                ("kafka", 19092, "kafka/logs/server.log"),
                ("redis", 16379, "redis/redis.log"),
            )
        ],
    }


def test_cli_turns_a_stack_error_into_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_kpi(tmp_path, "stack", "up", KPI_KAFKA_BOOTSTRAP="broker.example:9092")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kpi: error: KPI_KAFKA_BOOTSTRAP host 'broker.example' is not local: "
        "kpi stack only runs on localhost or 127.x.x.x"
    ]


def test_cli_reports_an_invalid_setting_in_one_line(tmp_path: Path) -> None:
    result = run_kpi(tmp_path, "stack", "status", KPI_PARTITIONS="lots")
    assert result.returncode == 2
    assert result.stderr.startswith("kpi: error: invalid setting KPI_PARTITIONS")
    assert len(result.stderr.strip().splitlines()) == 1
