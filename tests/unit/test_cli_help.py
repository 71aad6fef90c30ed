"""What ``kpi ... --help`` says about the environment: the ``KPI_*`` variables each command
reads, generated from ``Settings``, and the exit codes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from kpi import cli
from streams.config import SECRET_SETTINGS, Settings, setting_variables
from tests.cli import run_kpi

_VARIABLE = re.compile(r"\bKPI_[A-Z0-9_]+\b")


def _commands() -> Iterator[tuple[str, ...]]:
    """The path of every command and group of ``kpi``, as typed after ``kpi``."""
    cli._register()
    root = get_command(cli.app)

    def walk(command: object, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, (*path, name))

    yield from walk(root, ())


def _help(*path: str) -> str:
    cli._register()
    result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": "200"}, color=False)
    assert result.exit_code == 0, result.output
    return result.output


def _known_variables() -> set[str]:
    plain = {f"KPI_{name.upper()}" for name in Settings.model_fields}
    return plain | {f"KPI_{name.upper()}_FILE" for name in SECRET_SETTINGS}


def _option_variables() -> set[str]:
    """The variables commands' own options read (``kpi rules --runbook-base``...)."""
    cli._register()
    found: set[str] = set()

    def walk(command: object) -> None:
        for param in getattr(command, "params", ()):
            envvar = getattr(param, "envvar", None)
            found.update([envvar] if isinstance(envvar, str) else envvar or ())
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(get_command(cli.app))
    return found


def test_the_reader_commands_list_the_redis_settings(tmp_path: Path) -> None:
    text = run_kpi(tmp_path, "get", "--help").stdout
    for variable in ("KPI_REDIS_URL", "KPI_REDIS_URL_FILE", "KPI_REDIS_PREFIX", "KPI_CURRENCY"):
        assert variable in text
    assert "KPI_KAFKA_BOOTSTRAP" not in text  # get reads no Kafka


def test_the_worker_lists_every_setting() -> None:
    listed = set(_VARIABLE.findall(_help("worker")))
    assert "KPI_KAFKA_BOOTSTRAP" in listed
    assert listed == _known_variables()


def test_an_option_a_setting_can_give_shows_its_variable() -> None:
    assert "[env var: KPI_TIMEZONE]" in _help("simulate")


@pytest.mark.parametrize(
    ("path", "variables"),
    [
        (("simulate",), {"KPI_KAFKA_BOOTSTRAP", "KPI_KAFKA_SASL_PASSWORD_FILE", "KPI_TIMEZONE"}),
        (("publish",), {"KPI_KAFKA_BOOTSTRAP", "KPI_TOPIC_PREFIX", "KPI_GRACE_SECONDS"}),
        (("stack", "status"), {"KPI_STACK_DIR", "KPI_KAFKA_BOOTSTRAP", "KPI_REDIS_URL"}),
        (("stack", "up"), {"KPI_STACK_DIR", "KPI_TOPIC_PREFIX", "KPI_APP_ID"}),
        (("dashboards",), {"KPI_CURRENCY"}),
        (("why",), {"KPI_REDIS_URL"}),
        (("watch",), {"KPI_REDIS_URL"}),
    ],
)
def test_commands_that_read_settings_say_which(path: tuple[str, ...], variables: set[str]) -> None:
    text = _help(*path)
    assert "Environment: " in text
    assert variables <= set(_VARIABLE.findall(text))


def test_every_variable_any_help_names_is_a_setting() -> None:
    known = _known_variables() | _option_variables()
    paths = list(_commands())
    assert len(paths) > 10
    for path in paths:
        named = set(_VARIABLE.findall(_help(*path)))
        assert named <= known, (path, named - known)


def test_a_name_that_is_no_setting_cannot_be_listed() -> None:
    with pytest.raises(ValueError, match="not settings: redis_password"):
        setting_variables("redis_url", "redis_password")
    assert setting_variables("redis_url", "currency") == (
        "KPI_REDIS_URL",
        "KPI_REDIS_URL_FILE",
        "KPI_CURRENCY",
    )


def test_the_root_help_gives_the_exit_codes(tmp_path: Path) -> None:
    text = " ".join(run_kpi(tmp_path, "--help").stdout.split())
    assert "Exit codes: 0 done; 1 nothing to show or a check failed; 2 " in text
    assert "130 interrupted" in text
