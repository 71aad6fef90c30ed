"""``kpi schema export DIR``: the event contract as JSON Schema files, for source systems."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.errors import ConfigurationError
from schemas.export import INDEX_FILE, export_json_schemas

schema_app = typer.Typer(
    help="The event contract (SPEC section 1) as JSON Schema, for source systems.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``schema`` command group to the ``kpi`` application."""
    app.add_typer(schema_app, name="schema")


@schema_app.command("export")
def export_command(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Directory to write into (created if missing; existing files are replaced).",
            show_default=False,
        ),
    ],
) -> None:
    """Write one JSON Schema (2020-12) per event type, and an index, into DIRECTORY."""
    if directory.exists() and not directory.is_dir():
        msg = f"cannot write JSON Schemas to {directory}: not a directory"
        raise ConfigurationError(msg)
    try:
        written = export_json_schemas(directory)
    except OSError as exc:
        msg = f"cannot write JSON Schemas to {directory}: {exc.strerror or exc}"
        raise ConfigurationError(msg) from None
    for path in written:
        typer.echo(str(path))
    typer.echo(
        f"kpi schema export: wrote {len(written) - 1} event schemas and {INDEX_FILE} "
        f"(types, topics, keys, and what the worker checks beyond the schemas) to {directory}"
    )
