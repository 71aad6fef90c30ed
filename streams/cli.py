"""The ``kpi`` command: one entry point for the stack, the worker, the simulator and readers."""

from __future__ import annotations

import sys

import typer

from streams.errors import KpiError

app = typer.Typer(
    name="kpi",
    help="backoffice-kpi: streaming back-office KPIs from Kafka to Redis and Prometheus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def worker(
    loglevel: str = typer.Option("info", help="Log level: debug, info, warning, error."),
) -> None:
    """Run the stream processor: consume the input topics, write Redis, serve /metrics."""
    from streams.config import Settings
    from streams.worker import run_worker

    run_worker(Settings(), loglevel=loglevel)


def _register() -> None:
    # Sub-commands live next to what they drive; each module exposes a Typer app or a command.
    from streams import stack

    app.add_typer(stack.stack_app, name="stack")
    app.command("worker")(worker)


def main() -> None:
    """Run the CLI; product errors become one line on stderr and exit code 2."""
    _register()
    try:
        app()
    except KpiError as exc:
        typer.echo(f"kpi: error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
