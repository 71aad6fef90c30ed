"""``kpi schema export DIR``: the files it writes, and that they agree with the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from producers.simulator import CompanySimulator, Faults
from schemas import MODEL_OF_TYPE, decode
from schemas import cli as schema_cli
from schemas.errors import ConfigurationError, InvalidEvent
from schemas.events import TOPIC_OF_TYPE

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def make_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    schema_cli.register(app)

    @app.callback()
    def main() -> None:
        """Keep ``schema`` a command group, as under ``kpi``."""

    return app


@pytest.fixture
def app() -> typer.Typer:
    return make_app()


@pytest.fixture(scope="module")
def validators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Draft202012Validator]:
    """The exported schemas, written once by the command for the module."""
    directory = tmp_path_factory.mktemp("exported")
    result = CliRunner().invoke(make_app(), ["schema", "export", str(directory)])
    assert result.exit_code == 0, result.output
    validators = {}
    for event_type in MODEL_OF_TYPE:
        schema = orjson.loads((directory / f"{event_type}.schema.json").read_bytes())
        Draft202012Validator.check_schema(schema)
        validators[event_type] = Draft202012Validator(schema)
    return validators


def simulated(
    count: int, faults: Faults | None = None, currencies: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    # A fifth of the activity, so that a few thousand events span a month (after the initial
    # workforce's hires): enough for the slow lifecycles (payments, offers) to show up.
    clock = START + 365 * 86400
    sim = CompanySimulator(
        11, START, clock=lambda: clock, faults=faults, scale=0.2, currencies=currencies
    )
    events: list[dict[str, Any]] = []
    for emission in sim:
        if isinstance(emission.payload, dict):
            events.append(emission.payload)
        if len(events) == count:
            return events
    raise AssertionError("the simulator ran dry")


def test_export_writes_the_files_and_says_which(app: typer.Typer, tmp_path: Path) -> None:
    target = tmp_path / "new" / "schemas"
    result = CliRunner().invoke(app, ["schema", "export", str(target)])
    assert result.exit_code == 0, result.output
    expected = [target / f"{t}.schema.json" for t in MODEL_OF_TYPE] + [target / "index.json"]
    assert sorted(target.iterdir()) == sorted(expected)
    lines = result.output.splitlines()
    assert lines[:-1] == [str(p) for p in expected]
    assert lines[-1].startswith(f"kpi schema export: wrote {len(MODEL_OF_TYPE)} event schemas")
    index = orjson.loads((target / "index.json").read_bytes())
    assert {e["type"]: e["topic"] for e in index["events"]} == TOPIC_OF_TYPE


def test_export_into_a_file_is_one_line_error(app: typer.Typer, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("not a directory")
    result = CliRunner().invoke(app, ["schema", "export", str(target)])
    assert isinstance(result.exception, ConfigurationError)
    assert str(result.exception) == f"cannot write JSON Schemas to {target}: not a directory"


@pytest.fixture(scope="module")
def company() -> list[dict[str, Any]]:
    return simulated(4000)


def test_exported_schemas_accept_the_simulated_company(
    validators: dict[str, Draft202012Validator], company: list[dict[str, Any]]
) -> None:
    assert {e["type"] for e in company} == set(MODEL_OF_TYPE)  # every type is exercised
    for event in company:
        errors = list(validators[event["type"]].iter_errors(event))
        assert not errors, (event, [e.message for e in errors])


def test_exported_schemas_reject_what_the_decoder_calls_schema(
    validators: dict[str, Draft202012Validator],
) -> None:
    # The simulator's schema faults: naive time, bad or missing dimension, missing event id,
    # negative or non-numeric amount, score out of range or not an integer, upper-case enum.
    events = simulated(3000, Faults.spread(invalid=0.2, reasons=["schema"]))
    broken = 0
    for event in events:
        try:
            decode(orjson.dumps(event), topic=TOPIC_OF_TYPE[event["type"]], currency="USD")
        except InvalidEvent as exc:
            assert exc.reason == "schema", exc
            broken += 1
            assert not validators[event["type"]].is_valid(event), event
        else:
            assert validators[event["type"]].is_valid(event), event
    assert broken > 100


@pytest.mark.parametrize(
    "change",
    [
        {"occurred_at": "2026-01-02T09:00:00"},
        {"department": "all"},
        {"amount": -5},
        {"amount": "a lot"},
        {"currency": "usd"},
        {"event_id": ""},
        {"invoice_id": 42},
    ],
)
def test_exported_schemas_reject_broken_simulated_events(
    validators: dict[str, Draft202012Validator],
    company: list[dict[str, Any]],
    change: dict[str, Any],
) -> None:
    received = next(e for e in company if e["type"] == "invoice.received")
    assert validators["invoice.received"].is_valid(received)
    assert not validators["invoice.received"].is_valid({**received, **change})
    without_amount = {k: v for k, v in received.items() if k != "amount"}
    assert not validators["invoice.received"].is_valid(without_amount)


def test_exported_schemas_show_and_accept_reporting_amounts(
    validators: dict[str, Draft202012Validator],
) -> None:
    foreign = 0
    for event in simulated(4000, currencies=("EUR", "CHF")):
        schema = validators[event["type"]].schema
        assert ("reporting_amount" in schema["properties"]) == ("currency" in event)
        errors = list(validators[event["type"]].iter_errors(event))
        assert not errors, (event, [e.message for e in errors])
        decoded = decode(orjson.dumps(event), topic=TOPIC_OF_TYPE[event["type"]], currency="USD")
        if "reporting_amount" in event:
            foreign += 1
            assert getattr(decoded, "reporting_amount", None) == event["reporting_amount"]
    assert foreign > 100
