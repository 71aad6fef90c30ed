"""The ``kpi`` command: one entry point for the stack, the worker, the simulator and readers."""

from __future__ import annotations

import asyncio
import sys

import typer
from pydantic import ValidationError

from schemas.errors import ConfigurationError, KpiError
from streams import engine_build

try:  # typer >= 0.24 vendors click: usage errors live there, Abort/Exit in typer
    from typer._click.exceptions import ClickException
    from typer.exceptions import Abort, Exit
except ImportError:  # pragma: no cover - older typer with click as a dependency
    from click.exceptions import Abort, ClickException, Exit  # type: ignore[assignment]

app = typer.Typer(
    name="kpi",
    help="backoffice-kpi: streaming back-office KPIs from Kafka to Redis and Prometheus.",
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


@app.command()
def worker(
    loglevel: str = typer.Option("info", help="Log level: debug, info, warning, error."),
) -> None:
    """Run the stream processor: consume the input topics, write Redis, serve /metrics."""
    from streams.config import Settings
    from streams.worker import run_worker

    run_worker(Settings(), loglevel=loglevel)


#: The window of ``kpi get NAME`` without ``-w``.
DEFAULT_WINDOW = "30d"
_WINDOWS_HELP = "1h, 1d, 1w (ISO week), 1mo, 1q (fiscal quarter), 1y (fiscal year) or 30d"


@app.command()
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
) -> None:
    """Print a KPI's current value from Redis (or a table of all of them)."""
    from streams.config import Settings
    from streams.views import print_all, print_one

    settings = Settings()
    if all_:
        asyncio.run(print_all(settings, window=window, watch_s=watch))
        return
    if not name:
        msg = "give a KPI name, or --all"
        raise ConfigurationError(msg)
    asyncio.run(print_one(settings, name, window or DEFAULT_WINDOW, scope, history))


@app.command()
def watch(
    interval: float = typer.Option(2.0, "--interval", "-n", min=0.2, help="Seconds per redraw."),
    window: str | None = typer.Option(
        None, "--window", "-w", help=f"Only this window: {_WINDOWS_HELP} (default: all)."
    ),
) -> None:
    """A live terminal dashboard: every KPI's newest value against its target (Ctrl-C ends)."""
    from streams.config import Settings
    from streams.views import print_all

    asyncio.run(print_all(Settings(), window=window, watch_s=interval))


@app.command()
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
) -> None:
    """The worst entities behind a duration KPI: its ten longest measurements, longest first.

    Exit 1 (one line) when the window has none; exit 2 on errors (no value yet, no such
    closed window, a KPI without durations).
    """
    from streams.config import Settings
    from streams.views import print_worst

    if not asyncio.run(print_worst(Settings(), name, window, scope, label)):
        raise Exit(1)


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
    """Run the CLI; errors become one line on stderr (exit 2), never a traceback."""
    # Before any command imports the engine (the generators do, to register).
    engine_build.select()
    _register()
    try:
        # Without standalone mode click returns (not raises) a command's exit code.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except Abort:
        typer.echo("kpi: aborted", err=True)
        sys.exit(130)
    except ClickException as exc:
        # Usage errors (bad option, bad value): one line instead of click's usage box.
        message = exc.format_message()
        if message:  # empty for "no arguments: here is the help"
            typer.echo(f"kpi: error: {message}", err=True)
        sys.exit(exc.exit_code)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "settings"
        # pydantic words a validator's own ValueError "Value error, <its message>".
        reason = str(first["msg"]).removeprefix("Value error, ")
        typer.echo(f"kpi: error: bad setting KPI_{where.upper()}: {reason}", err=True)
        sys.exit(2)
    except KpiError as exc:
        typer.echo(f"kpi: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
