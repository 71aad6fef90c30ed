"""Publish the event contract as JSON Schema files, one per type plus an index, for source systems.

Run ``python -m schemas.export DIRECTORY``. The schemas accept what ``schemas.decode`` accepts
as closely as JSON Schema (2020-12) allows; ``DECODER_STRICTER`` lists where the decoder is
stricter, and the index repeats it so that nobody has to read this code to learn it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

import orjson

from schemas.events import MODEL_OF_TYPE, TOPIC_OF_TYPE

__all__ = ["DECODER_STRICTER", "INDEX_FILE", "export_json_schemas", "json_schema_of", "main"]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
INDEX_FILE: Final = "index.json"

#: What the decoder checks and the exported schemas cannot (or do not) express.
DECODER_STRICTER: Final[tuple[str, ...]] = (
    "currency must be the configured reporting currency (KPI_CURRENCY, default USD), or "
    "another ISO 4217 code on an event that has reporting_amount (the amount or cost in the "
    "reporting currency, ignored in the reporting currency); otherwise the reason is "
    "'currency', also for a currency string that is not three letters A-Z",
    "a type is only accepted on its own topic (see 'topic'); elsewhere the reason is "
    "'unknown_type'",
    "ids must be printable in the sense of Python's str.isprintable (the schema only excludes "
    "control characters; the decoder also refuses format, private-use, unassigned and "
    "non-space separator characters)",
    "occurred_at must be a date that exists (no February 30), without leap second (second 60), "
    "and within years 1-9999 once converted to UTC; fractions beyond microseconds are "
    "truncated",
    "a numeric-string amount must also be > 0 and <= 1e12 once parsed (the schema checks its "
    "spelling and sign only); JSON numbers beyond the IEEE double range (1e400) are invalid "
    "JSON",
    "score must be written as an integer: JSON Schema counts 7.0 as an integer, the decoder "
    "does not",
)


def json_schema_of(event_type: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one event type of the contract."""
    model = MODEL_OF_TYPE[event_type]
    schema = model.model_json_schema(mode="validation")
    # Extra fields are ignored by the decoder, so the schema must allow them too (which is
    # the JSON Schema default); say it explicitly so no generator "helpfully" closes it.
    schema["additionalProperties"] = True
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{event_type}.schema.json",
        "title": event_type,
        **{k: v for k, v in schema.items() if k != "title"},
    }


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<type>.schema.json`` for every event type and ``index.json``; return the paths.

    Output is deterministic (sorted keys, two-space indent), so it can be committed and diffed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    entries: list[dict[str, str]] = []
    for event_type, model in MODEL_OF_TYPE.items():
        path = directory / f"{event_type}.schema.json"
        _write_json(path, json_schema_of(event_type))
        written.append(path)
        entries.append(
            {
                "type": event_type,
                "topic": TOPIC_OF_TYPE[event_type],
                "key": model.key_field,
                "schema": path.name,
            }
        )
    index = {
        "dialect": JSON_SCHEMA_DIALECT,
        "events": entries,
        "decoder_stricter_than_schema": list(DECODER_STRICTER),
    }
    index_path = directory / INDEX_FILE
    _write_json(index_path, index)
    written.append(index_path)
    return written


def _write_json(path: Path, document: object) -> None:
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    path.write_bytes(text + b"\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m schemas.export DIRECTORY``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m schemas.export DIRECTORY\n")
        return 2
    for path in export_json_schemas(Path(args[0])):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
