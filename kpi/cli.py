"""The ``kpi`` command: one entry point for the stack, the worker, the simulator and readers."""

from __future__ import annotations

import asyncio
import functools
import sys

import typer
from pydantic import ValidationError

from schemas.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    ConfigurationError,
    KpiError,
    NothingToShow,
)
from streams import engine_build
from streams.config import environment_help, redis_settings

try:  # typer >= 0.24 vendors click: usage errors live there, Abort/Exit in typer
    from typer._click.exceptions import ClickException
    from typer.exceptions import Abort, Exit
except ImportError:  # pragma: no cover - older typer with click as a dependency
    from click.exceptions import Abort, ClickException, Exit  # type: ignore[assignment]

#: Every command's exit codes (README, "Exit codes"); decided in ``main``.
EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 nothing to show or a check failed; 2 a usage error, a bad "
    "setting or Kafka/Redis unreachable; 130 interrupted (Ctrl-C)."
)
#: The settings of the commands that read KPIs from Redis.
_READER_ENVIRONMENT = environment_help(*redis_settings(), "currency", "targets_file")

app = typer.Typer(
    name="kpi",
    help="backoffice-kpi: streaming back-office KPIs from Kafka to Redis and Prometheus.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        engine = engine_build.current()
        python = ".".join(str(part) for part in sys.version_info[:3])
        typer.echo(f"kpi {version('backoffice-kpi')} (engine {engine}, Python {python})")
        raise typer.Exit


@app.callback()
def _root(
    _version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version (and whether the compiled engine runs) and exit.",
    ),
) -> None:
    """backoffice-kpi: streaming back-office KPIs from Kafka to Redis and Prometheus."""


@app.command(epilog=environment_help())
def worker(
    loglevel: str = typer.Option("info", help="Log level: debug, info, warning, error."),
    log_format: str | None = typer.Option(
        None,
        "--log-format",
        help="text, or json (one JSON object a line) [env var: KPI_LOG_FORMAT; default: text]",
    ),
) -> None:
    """Run the stream processor: consume the input topics, write Redis, serve /metrics."""
    from streams.config import Settings
    from streams.worker import run_worker

    if log_format is not None and log_format not in ("text", "json"):
        msg = f"--log-format must be text or json, not {log_format!r}"
        raise ConfigurationError(msg)
    settings = Settings() if log_format is None else Settings(log_format=log_format)
    run_worker(settings, loglevel=loglevel)


#: The window of ``kpi get NAME`` without ``-w``.
DEFAULT_WINDOW = "30d"
_WINDOWS_HELP = "1h, 1d, 1w (ISO week), 1mo, 1q (fiscal quarter), 1y (fiscal year) or 30d"
_JSON_HELP = (
    "Print one JSON document instead (fields: README, 'Scripting'); with --watch, one per "
    "redraw, a line each (JSON Lines)."
)


@app.command(epilog=_READER_ENVIRONMENT)
def get(
    name: str = typer.Argument(None, help="KPI name, e.g. dso (see --all for every KPI)."),
    window: str | None = typer.Option(
        None,
        "--window",
        "-w",
        help=f"{_WINDOWS_HELP}; default {DEFAULT_WINDOW} (with --all: every window).",
    ),
    scope: str = typer.Option("all", "--scope", "-s", help="A dimension value, or all."),
    all_: bool = typer.Option(False, "--all", help="A table of every KPI's current value."),
    history: int = typer.Option(0, "--history", help="Also print the last N closed windows."),
    watch: float = typer.Option(0, "--watch", help="With --all: redraw every N seconds."),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Print a KPI's current value from Redis (or a table of all of them).

    Exit 1 when the KPI has no value yet in that window and scope.
    """
    from streams.config import Settings
    from streams.views import print_all, print_one

    settings = Settings()
    if all_:
        asyncio.run(print_all(settings, window=window, watch_s=watch, as_json=as_json))
        return
    if not name:
        msg = "give a KPI name, or --all"
        raise ConfigurationError(msg)
    window = window or DEFAULT_WINDOW
    asyncio.run(print_one(settings, name, window, scope, history, as_json=as_json))


@app.command(epilog=_READER_ENVIRONMENT)
def watch(
    interval: float = typer.Option(2.0, "--interval", "-n", min=0.2, help="Seconds per redraw."),
    window: str | None = typer.Option(
        None, "--window", "-w", help=f"Only this window: {_WINDOWS_HELP} (default: all)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="A JSON document per redraw, one a line (JSON Lines), no table."
    ),
) -> None:
    """A live terminal dashboard: every KPI's newest value against its target (Ctrl-C ends).

    Ctrl-C ends it with exit code 130.
    """
    from streams.config import Settings
    from streams.views import print_all

    asyncio.run(print_all(Settings(), window=window, watch_s=interval, as_json=as_json))


@app.command(epilog=_READER_ENVIRONMENT)
def why(
    name: str = typer.Argument(..., help="A duration KPI, e.g. ticket_resolution_time."),
    window: str = typer.Option(
        DEFAULT_WINDOW, "--window", "-w", help=f"{_WINDOWS_HELP}; default {DEFAULT_WINDOW}."
    ),
    scope: str = typer.Option("all", "--scope", "-s", help="A dimension value, or all."),
    label: str | None = typer.Option(
        None,
        "--label",
        "-l",
        help="A closed window by its label (2026-03-08, 2026-W10, 2026-03...), from the "
        "history; default: the newest window.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON document instead (fields: README, 'Scripting')."
    ),
) -> None:
    """The worst entities behind a duration KPI: its ten longest measurements, longest first.

    Exit 1 when there is nothing to list: the window has no measurement, no value yet, no
    such closed window. Exit 2 for a KPI without durations.
    """
    from streams.config import Settings
    from streams.views import print_worst

    settings = Settings()
    if not asyncio.run(print_worst(settings, name, window, scope, label, as_json=as_json)):
        raise Exit(EXIT_NOTHING)


@functools.cache  # once per process, however often asked (the help tests ask too)
def _register() -> None:
    # Sub-commands live next to what they drive; each module exposes a Typer app or a command.
    from producers import backfill
    from producers import cli as producers_cli
    from schemas import cli as schemas_cli
    from tooling import dashboards, dlq, rules, stack

    app.add_typer(stack.stack_app, name="stack")
    producers_cli.register(app)
    backfill.register(app)
    schemas_cli.register(app)
    rules.register(app)
    dashboards.register(app)
    dlq.register(app)


def main() -> None:
    """Run the CLI; errors become one line on stderr, never a traceback.

    The exit code says what happened (README, "Exit codes"): 0 done, 1 nothing to show or a
    check failed, 2 a usage, setting or connection error, 130 interrupted.
    """
    try:
        # Before any command imports the engine (the generators do, to register). In the
        # try: a Ctrl-C during these imports is an interruption too.
        engine_build.select()
        _register()
        # Without standalone mode click returns (not raises) a command's exit code.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except Abort:
        typer.echo("kpi: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except ClickException as exc:
        # Usage errors (bad option, bad value): one line instead of click's usage box.
        message = exc.format_message()
        if message:  # empty for "no arguments: here is the help"
            typer.echo(f"kpi: error: {message}", err=True)
        # Click gives 1 to the few that are not usage errors (a file it cannot open): bad
        # input all the same.
        sys.exit(EXIT_ERROR)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "settings"
        # pydantic words a validator's own ValueError "Value error, <its message>".
        reason = str(first["msg"]).removeprefix("Value error, ")
        typer.echo(f"kpi: error: bad setting KPI_{where.upper()}: {reason}", err=True)
        sys.exit(EXIT_ERROR)
    except NothingToShow as exc:
        typer.echo(f"kpi: {exc}", err=True)
        sys.exit(EXIT_NOTHING)
    except KpiError as exc:
        typer.echo(f"kpi: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C: asyncio.run cancels the command's task and raises KeyboardInterrupt once it
        # has ended; a CancelledError that escapes instead (a task that swallowed the
        # interrupt's cancellation and was cancelled again) means the same.
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
