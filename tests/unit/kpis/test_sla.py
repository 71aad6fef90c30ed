"""SLA settings and the SLA attainment measure (SPEC sections 2 and 5)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas.decode import decode_message
from streams.config import Settings
from streams.core.lifecycle import apply_event
from streams.core.state import PartitionState
from streams.kpis.fact import Fact
from streams.kpis.it import INCIDENT_SLA_ATTAINMENT, TICKET_SLA_ATTAINMENT, with_slas
from streams.kpis.sla import DEFAULT_TICKET_SLA, TICKET_PRIORITIES, parse_slas
from streams.selection import selected_catalog
from tests.cli import run_kpi


def test_defaults_and_a_partial_setting() -> None:
    assert Settings().ticket_slas() == {
        "p1": 4 * 3600,
        "p2": 8 * 3600,
        "p3": 86400,
        "p4": 3 * 86400,
    }
    assert Settings().incident_slas()["sev4"] == 3 * 86400
    # A priority the setting does not name keeps its default; units s, m, h, d.
    slas = Settings(ticket_sla="p1=90m, p3=1.5d,p4=30s").ticket_slas()
    assert slas == {"p1": 5400, "p2": 8 * 3600, "p3": 1.5 * 86400, "p4": 30}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("p1=4", "'p1=4' is not <class>=<duration with a unit s, m, h or d>"),
        ("p9=4h", "unknown class 'p9' (one of p1, p2, p3, p4)"),
        ("p1=4h,p1=5h", "p1 is given twice"),
        ("p1=0h", "p1: the SLA must be longer than 0"),
        ("p1=-4h", "'p1=-4h' is not"),
    ],
)
def test_a_malformed_sla_names_its_reason(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_slas(value, TICKET_PRIORITIES, DEFAULT_TICKET_SLA)


@pytest.mark.parametrize("variable", ["KPI_TICKET_SLA", "KPI_INCIDENT_SLA"])
def test_a_bad_sla_setting_stops_a_command_in_one_line(tmp_path: Path, variable: str) -> None:
    done = run_kpi(tmp_path, "get", "dso", **{variable: "4h"})
    assert done.returncode == 2
    assert done.stderr == (
        f"kpi: error: bad setting {variable}: '4h' is not <class>=<duration with a unit"
        f" s, m, h or d> (e.g. {'p1' if 'TICKET' in variable else 'sev1'}=4h)\n"
    )


def _measure(kpi_name: str, settings: Settings) -> object:
    (kpi,) = [k for k in selected_catalog(settings) if k.name == kpi_name]
    return kpi.feeds[0].measure


def test_within_the_sla_is_at_most_it_and_the_settings_apply() -> None:
    measure = _measure("ticket_sla_attainment", Settings(ticket_sla="p1=2h"))
    assert measure(None, Fact("q", 7200.0, 0.0, "T-1", "p1")) == ((1.0, 1.0), 0.0)  # type: ignore[operator]
    assert measure(None, Fact("q", 7200.5, 0.0, "T-1", "p1")) == ((0.0, 1.0), 0.0)  # type: ignore[operator]
    assert measure(None, Fact("q", 7201.0, 0.0, "T-1", "p2")) == ((1.0, 1.0), 0.0)  # type: ignore[operator]
    # An entity kept before version 2 has no priority: not counted.
    assert measure(None, Fact("q", 1.0, 0.0, "T-1", "")) is None  # type: ignore[operator]
    measure = _measure("incident_sla_attainment", Settings(incident_sla="sev1=1m"))
    assert measure(None, Fact("svc", 61.0, 0.0, "I-1", "sev1")) == ((0.0, 1.0), 0.0)  # type: ignore[operator]


def test_with_slas_replaces_only_the_sla_kpis() -> None:
    catalog = (TICKET_SLA_ATTAINMENT, INCIDENT_SLA_ATTAINMENT)
    changed = with_slas(catalog, {"p1": 1.0}, {"sev1": 1.0})
    assert [k.name for k in changed] == [k.name for k in catalog]
    assert all(a.feeds[0].event is b.feeds[0].event for a, b in zip(catalog, changed, strict=True))


def _event(**fields: object) -> object:
    return decode_message(orjson.dumps(fields), "incidents", "USD")


def test_the_resolution_fact_carries_the_id_and_the_class_the_opening_gave() -> None:
    st = PartitionState("incidents", 0)
    opened = {"event_id": "e1", "occurred_at": "2026-03-08T10:00:00Z"}
    apply_event(
        st, _event(**opened, type="ticket.opened", ticket_id="T-1", queue="it", priority="p2"), 0.0
    )
    resolved = _event(
        event_id="e2", occurred_at="2026-03-08T11:00:00Z", type="ticket.resolved", ticket_id="T-1"
    )
    fact = apply_event(st, resolved, 3600.0)
    assert (fact.scope, fact.since_start_s, fact.entity, fact.klass) == ("it", 3600.0, "T-1", "p2")
    # A ticket opened before version 2 kept its priority has none.
    st.data["e|tkt|T-2"] = {"q": "it", "t": 0.0}
    resolved2 = _event(
        event_id="e3", occurred_at="2026-03-08T11:00:00Z", type="ticket.resolved", ticket_id="T-2"
    )
    assert apply_event(st, resolved2, 3600.0).klass == ""
