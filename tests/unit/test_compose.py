"""docker-compose.yml checked without a Docker engine: the compose-spec schema (vendored by
check-jsonschema, no network), the files it references, start-up order, ports, volumes, image
tags, the product's settings and commands, and the same ops/ files as ``make demo``."""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import typer
from ruamel.yaml import YAML

from kpi import cli as kpi_cli
from streams.config import Settings
from tooling import dashboards

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
PRODUCT_IMAGE = "backoffice-kpi:local"


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


COMPOSE: dict[str, Any] = load_yaml(COMPOSE_FILE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def compose_schema() -> dict[str, Any]:
    schema = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return dict(json.loads(schema.read_text(encoding="utf-8")))


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def mounts(service: dict[str, Any]) -> list[tuple[str, PurePosixPath]]:
    """(source, container path) of every volume entry, short or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found.append((source, PurePosixPath(target)))
    return found


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of every bind mount (a source starting with ./)."""
    return [
        ((REPO / source).resolve(), target)
        for source, target in mounts(service)
        if source.startswith((".", "/"))
    ]


def named_volumes(service: dict[str, Any]) -> dict[str, PurePosixPath]:
    """Named volume -> its container path."""
    return {s: t for s, t in mounts(service) if not s.startswith((".", "/"))}


#: ``${KPI_X_PORT:-1234}:5678``: a host port from a variable with a default.
PORT = re.compile(r"^\$\{(KPI_[A-Z]+_PORT):-(\d+)\}:(\d+)$")


def host_path(service: str, container_path: str) -> Path:
    """The file on this machine that a container path of a service is mounted from."""
    path = PurePosixPath(container_path)
    for source, target in bind_mounts(SERVICES[service]):
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    pytest.fail(f"{container_path} is not mounted into {service}")


def product_services() -> list[str]:
    return [name for name, s in SERVICES.items() if s.get("image") == PRODUCT_IMAGE]


def dockerfile_text() -> str:
    return (REPO / "Dockerfile").read_text(encoding="utf-8")


# -- schema --------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    assert schema_errors(COMPOSE) == []


def test_schema_check_can_fail() -> None:
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["worker"]["depends_on"]["kafka"]["condition"] = "service_ready"
    broken["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    assert len(schema_errors(broken)) >= 2


def test_check_jsonschema_cli_agrees_offline() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- referenced files ----------------------------------------------------------------------


def test_build_context_and_dockerfile_exist() -> None:
    for name in [n for n in product_services() if "build" in SERVICES[n]]:
        build = SERVICES[name]["build"]
        context = REPO / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (context / dockerfile).is_file(), name
    text = dockerfile_text()
    assert text.startswith("#")
    assert re.search(r"^USER (?!root)\S+", text, re.M), "the image runs as a non-root user"
    assert re.search(r"^EXPOSE 6066$", text, re.M)
    assert "/livez" in text and "HEALTHCHECK" in text
    assert 'CMD ["kpi", "worker"]' in text
    # The build context keeps what the Dockerfile copies.
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8")
    for copied in re.findall(r"^COPY (?!--from=)(.+) \S+$", text, re.M):
        for item in copied.split():
            assert f"!{item}" in ignore or f"!{item}/" in ignore, item
            assert (REPO / item).exists(), item


def dockerfile_stages() -> list[str]:
    """The Dockerfile's stages, each from its FROM line on."""
    return re.split(r"^(?=FROM )", dockerfile_text(), flags=re.M)[1:]


def test_image_is_built_in_two_stages_with_the_engine_compiled() -> None:
    builder, runtime = dockerfile_stages()
    version = re.search(r"^ARG PYTHON_VERSION=(\S+)$", dockerfile_text(), re.M)
    assert version and re.fullmatch(r"3\.\d+\.\d+", version.group(1)), "an exact Python"
    assert builder.startswith("FROM python:${PYTHON_VERSION}-bookworm AS builder")
    assert runtime.startswith("FROM python:${PYTHON_VERSION}-slim-bookworm\n")
    # The tested versions, the worker extra, mypyc's build, and a check that it compiled.
    assert "-c constraints.txt '.[worker]'" in builder
    assert "python -m tooling.build" in builder
    assert 'grep -q "engine compiled"' in builder
    # The runtime stage takes the builder's virtualenv and installs nothing itself.
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert "pip install" not in runtime and "mypy" not in runtime
    assert "apt-get" not in runtime and "gcc" not in runtime
    assert re.search(r"^ENV [^#]*PATH=/opt/venv/bin:\$PATH", runtime, re.M)
    # The simulator's state directory exists, owned by the image's user, for the volume.
    simulator_paths = named_volumes(SERVICES["simulator"]).values()
    assert [str(p) for p in simulator_paths] == ["/var/lib/kpi"]
    assert "chown kpi:kpi /var/lib/kpi" in runtime


def test_every_bind_mount_exists() -> None:
    for name, service in SERVICES.items():
        for source, _target in bind_mounts(service):
            assert source.exists(), f"{name}: {source} does not exist"


def test_prometheus_config_and_rules_resolve_through_the_mount() -> None:
    command = SERVICES["prometheus"]["command"]
    config_arg = next(a for a in command if a.startswith("--config.file="))
    config_path = host_path("prometheus", config_arg.split("=", 1)[1])
    assert config_path.is_file()
    config = load_yaml(config_path)
    for pattern in config["rule_files"]:
        assert sorted(config_path.parent.glob(pattern)), f"no rule file matches {pattern}"
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert targets == [f"worker:{Settings().web_port}"]
    assert "worker" in SERVICES


def test_grafana_provisioning_resolves_through_the_mounts() -> None:
    env = SERVICES["grafana"]["environment"]
    datasources = host_path("grafana", "/etc/grafana/provisioning/datasources")
    (source,) = load_yaml(datasources / "prometheus.yml")["datasources"]
    assert source["uid"] == dashboards.DATASOURCE_UID and source["type"] == "prometheus"
    # Grafana expands ${PROMETHEUS_URL} from its environment: compose must set it.
    assert source["url"] == "${PROMETHEUS_URL}"
    assert env["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert "prometheus" in SERVICES
    assert "9090" in str(SERVICES["prometheus"]["ports"])

    providers = host_path("grafana", "/etc/grafana/provisioning/dashboards")
    (provider,) = load_yaml(providers / "dashboards.yml")["providers"]
    board_dir = host_path("grafana", provider["options"]["path"])
    assert sorted(p.name for p in board_dir.glob("*.json")) == sorted(dashboards.build_dashboards())
    assert host_path("grafana", env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# -- start-up order and health -------------------------------------------------------------


def test_every_service_has_a_health_check() -> None:
    for name, service in SERVICES.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_depends_on_names_services_and_waits_for_health() -> None:
    for name, service in SERVICES.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            # Monitoring only waits for the worker to start (next test); the rest for health.
            expected = "service_started" if dependency == "worker" else "service_healthy"
            if name not in ("prometheus", "grafana"):
                expected = "service_healthy"
            assert spec["condition"] == expected, (name, dependency)
    # No cycles: a topological order exists.
    order: list[str] = []
    pending = dict.fromkeys(SERVICES)
    while pending:
        ready = [n for n in pending if all(d in order for d in SERVICES[n].get("depends_on", {}))]
        assert ready, f"depends_on cycle among {sorted(pending)}"
        order += ready
        for n in ready:
            del pending[n]
    assert order.index("kafka") < order.index("worker") < order.index("simulator")
    assert order.index("redis") < order.index("worker") < order.index("prometheus")
    assert order.index("prometheus") < order.index("grafana")


def healthy_dependencies(name: str) -> set[str]:
    """Every service ``name`` waits to be healthy for, directly or through another."""
    found: set[str] = set()
    for dependency, spec in SERVICES[name].get("depends_on", {}).items():
        if spec["condition"] == "service_healthy":
            found |= {dependency} | healthy_dependencies(dependency)
    return found


def test_monitoring_does_not_wait_for_a_healthy_worker() -> None:
    # Prometheus and Grafana must be up exactly when the worker is unhealthy.
    for name in ("prometheus", "grafana"):
        assert "worker" not in healthy_dependencies(name), name
    assert SERVICES["prometheus"]["depends_on"]["worker"]["condition"] == "service_started"
    # The simulator does wait: the worker creates the topics with KPI_PARTITIONS partitions.
    assert "worker" in healthy_dependencies("simulator")


def test_the_product_image_is_built_once() -> None:
    builders = [name for name, s in SERVICES.items() if "build" in s]
    assert builders == ["worker"]
    assert SERVICES["worker"]["image"] == PRODUCT_IMAGE
    others = [name for name in product_services() if name != "worker"]
    assert others == ["simulator"]
    for name in others:
        # Never pulled (it exists only locally), started after the building service.
        assert SERVICES[name]["pull_policy"] == "never"
        assert "worker" in SERVICES[name]["depends_on"]


def test_every_other_image_has_an_exact_tag() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        if image == PRODUCT_IMAGE:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image}"
    assert SERVICES["redis"]["image"].startswith("redis:7.")


def test_host_ports_come_from_variables_with_defaults() -> None:
    published: dict[str, str] = {}
    variables: set[str] = set()
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            match = PORT.match(str(port))
            assert match, f"{name}: {port} is not ${{KPI_..._PORT:-default}}:port"
            variable, host, _container = match.groups()
            assert variable not in variables, variable
            variables.add(variable)
            assert host not in published, f"{name} and {published[host]} both publish {host}"
            published[host] = name
    assert published["3000"] == "grafana"
    assert published["6066"] == "worker"
    assert published["6379"] == "redis"
    # Kafka advertises the host port it is published on, so it follows the variable.
    (kafka_port,) = SERVICES["kafka"]["ports"]
    assert (
        kafka_port.split(":")[0] in (SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    )


def test_data_is_on_named_volumes_declared_at_the_top() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used: dict[str, str] = {}
    for name, service in SERVICES.items():
        for volume in named_volumes(service):
            assert volume in declared, f"{name}: {volume} is not declared under volumes:"
            assert volume not in used, f"{volume} shared by {used[volume]} and {name}"
            used[volume] = name
    assert declared == set(used)
    # Each stateful service keeps its data on one (the paths their images store data in).
    expected = {
        "kafka": "/var/lib/kafka/data",
        "redis": "/data",
        "simulator": "/var/lib/kpi",
        "prometheus": "/prometheus",
        "grafana": "/var/lib/grafana",
    }
    for name, path in expected.items():
        assert PurePosixPath(path) in named_volumes(SERVICES[name]).values(), name
    assert SERVICES["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    storage = next(
        a for a in SERVICES["prometheus"]["command"] if a.startswith("--storage.tsdb.path=")
    )
    assert storage.split("=", 1)[1] == "/prometheus"


def test_the_docs_say_what_down_keeps() -> None:
    operations = (REPO / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\nname:")[0]
    for text in (operations, header):
        assert "docker compose down -v" in text or "compose down -v" in text
        assert "Nothing is kept on volumes" not in text


# -- the product: settings and commands ----------------------------------------------------


def test_product_services_use_known_settings_only() -> None:
    known = {f"KPI_{field.upper()}": field for field in Settings.model_fields}
    for name in product_services():
        env = SERVICES[name].get("environment", {})
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        values = {}
        for key, value in env.items():
            assert key in known, f"{name}: {key} is not a setting of streams/config.py"
            values[known[key]] = value
        Settings(**values)  # valid values too
    worker = SERVICES["worker"]["environment"]
    assert worker["KPI_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert worker["KPI_REDIS_URL"] == "redis://redis:6379/0"
    assert "kafka:9092" in COMPOSE["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


@functools.cache
def kpi_group() -> Any:
    kpi_cli._register()  # what `kpi` does before parsing: adds simulate, stack, ...
    return typer.main.get_command(kpi_cli.app)


@pytest.mark.parametrize("service", ["worker", "simulator"])
def test_commands_parse_as_kpi_commands(service: str) -> None:
    command = SERVICES[service]["command"]
    assert command[0] == "kpi"
    group = kpi_group()
    with group.make_context("kpi", [command[1]]) as parent:
        sub = group.get_command(parent, command[1])
        assert sub is not None, f"kpi has no command {command[1]}"
        # Parsing raises on an unknown option or a bad value; nothing runs.
        sub.make_context(command[1], list(command[2:]), parent=parent)


def test_simulator_runs_the_demo_company() -> None:
    demo = (REPO / "scripts" / "demo.sh").read_text(encoding="utf-8")
    # demo.sh: `"$BIN/kpi" simulate --seed 7 --start "$DEMO_START" ... >"$SIM_LOG"`, with
    # DEMO_START=${DEMO_START:-3d} and so on above it.
    (line,) = re.findall(r'kpi" simulate (.*?)>', demo.replace("\\\n", " "), re.S)
    defaults = dict(re.findall(r"^DEMO_(\w+)=\$\{DEMO_\w+:-([^}]+)\}", demo, re.M))
    words = line.split()
    demo_options = {
        flag: defaults[value[7:-1]] if value.startswith('"$DEMO_') else value
        for flag, value in zip(words[::2], words[1::2], strict=True)
    }
    command = SERVICES["simulator"]["command"]
    assert command[:2] == ["kpi", "simulate"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    # Only compose keeps the simulator's state (on its named volume): a restarted container
    # goes on with the same company instead of a new one with new event ids.
    state_file = PurePosixPath(options.pop("--state-file"))
    assert state_file.parent in named_volumes(SERVICES["simulator"]).values()
    assert options == demo_options
    assert options["--seed"] == "7"


# -- the same ops/ files as `make demo` ----------------------------------------------------


def test_compose_prometheus_config_is_the_demo_one_but_for_the_target() -> None:
    prom_dir = host_path("prometheus", "/etc/prometheus")
    demo_config = load_yaml(prom_dir / "prometheus.yml")
    docker_config = load_yaml(prom_dir / "prometheus.docker.yml")
    for config in (demo_config, docker_config):
        for job in config["scrape_configs"]:
            for static in job["static_configs"]:
                static["targets"] = ["<worker>"]
    assert docker_config == demo_config
    assert prom_dir == (REPO / "ops" / "prometheus").resolve()


def test_compose_grafana_uses_the_generated_dashboards() -> None:
    assert (
        host_path("grafana", "/var/lib/grafana/dashboards")
        == (REPO / dashboards.DEFAULT_OUT).resolve()
    )
    # Any ops/ file the demo script names is one compose mounts too.
    demo = (REPO / "scripts" / "demo.sh").read_text(encoding="utf-8")
    mounted = [source for s in SERVICES.values() for source, _ in bind_mounts(s)]
    for path in re.findall(r"\bops/(?:prometheus|grafana)[\w./-]*", demo):
        resolved = (REPO / path).resolve()
        assert any(resolved == m or m in resolved.parents for m in mounted), path
