"""The Grafana dashboards: committed JSON up to date, every KPI against its catalog target,
every query on a metric the worker exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from streams.catalog import CATALOG
from streams.kpis.base import WINDOWS, Kpi
from streams.sinks.metrics import Metrics
from tooling import dashboards

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / dashboards.DEFAULT_OUT
BOARDS = dashboards.build_dashboards()
EXPECTED_FILES = {"overview.json", "finance.json", "hr.json", "it.json", "operations.json"}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every non-row panel."""
    return [p for p in dashboards._walk_panels(board) if p["type"] != "row"]


def exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel.get("targets", [])]


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def colour_at(steps: list[dict[str, Any]], value: float) -> str:
    """Grafana's rule: the colour of the last step whose value is <= the value."""
    colour = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            colour = step["color"]
    return str(colour)


def exposed_sample_names() -> set[str]:
    """Every sample name the worker's /metrics can show: ours and faust's sensors."""
    registry = CollectorRegistry()
    Metrics(registry)
    FaustMetrics.create(registry, "faust")
    names = set()
    for family in registry.collect():
        names.add(family.name)
        # Sample names with their suffixes (_total, _bucket, ...), also before any sample
        # exists: prometheus_client knows them from the type.
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
            "gauge": [""],
        }[family.type]
        names.update(family.name + s for s in suffixes)
    return names


def kpi_stat(board: dict[str, Any], kpi: Kpi) -> dict[str, Any]:
    selector = f'{kpi.metric}{{window="$window", {kpi.dimension}="all"}}'
    found = [p for p in panels(board) if p["type"] == "stat" and selector in exprs(p)]
    assert len(found) == 1, f"{kpi.name}: {len(found)} roll-up stat panels"
    return found[0]


# -- generated files -----------------------------------------------------------------------


def test_committed_json_is_what_the_code_builds() -> None:
    assert dashboards.drift(COMMITTED) == [], "run: .venv/bin/kpi dashboards"
    assert {p.name for p in COMMITTED.glob("*.json")} == EXPECTED_FILES


def test_build_is_deterministic_with_fixed_unique_uids() -> None:
    again = dashboards.build_dashboards()
    assert {n: dashboards.render(b) for n, b in again.items()} == {
        n: dashboards.render(b) for n, b in BOARDS.items()
    }
    uids = {name: board["uid"] for name, board in BOARDS.items()}
    assert uids == {
        "overview.json": "backoffice-overview",
        "finance.json": "backoffice-finance",
        "hr.json": "backoffice-hr",
        "it.json": "backoffice-it",
        "operations.json": "backoffice-operations",
    }
    for board in BOARDS.values():
        ids = [p["id"] for p in dashboards._walk_panels(board)]
        assert ids == list(range(1, len(ids) + 1))


def test_panels_stay_on_the_grid() -> None:
    for name, board in BOARDS.items():
        for panel in dashboards._walk_panels(board):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])


# -- overview: every KPI against its target ------------------------------------------------


@pytest.mark.parametrize("kpi", CATALOG, ids=lambda k: k.name)
def test_overview_colours_every_kpi_by_its_catalog_target(kpi: Kpi) -> None:
    panel = kpi_stat(BOARDS["overview.json"], kpi)
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0]["value"] is None
    # The colour changes at the target (just above it for at_most, where the target
    # itself still meets the goal; a count's next value is target + 1).
    change = steps[1]["value"]
    if kpi.target.direction == "at_least" or kpi.unit != "count":
        assert change == pytest.approx(kpi.target.value, rel=1e-12, abs=0)
    else:
        assert change == kpi.target.value + 1
    # And the colours say what the catalog's Target.met says, at and around the target.
    target = kpi.target.value
    step = 1.0 if kpi.unit == "count" else max(abs(target) * 0.01, 1e-6)
    for value in (target - 10 * step, target - step, target, target + step, target + 10 * step):
        expected = "green" if kpi.target.met(value) else "red"
        assert colour_at(steps, value) == expected, (kpi.name, value)
    assert kpi.target.goal in panel["description"]


def test_overview_has_a_trend_per_kpi_and_a_window_variable() -> None:
    board = BOARDS["overview.json"]
    trends = [p for p in panels(board) if p["type"] == "timeseries"]
    for kpi in CATALOG:
        assert any(kpi.metric in e for p in trends for e in exprs(p)), kpi.name
    window = variables(board)["window"]
    assert [option["value"] for option in window["options"]] == list(WINDOWS)


READABLE = {
    "1h": "hour",
    "1d": "day",
    "1w": "ISO week",
    "1mo": "month",
    "1q": "fiscal quarter",
    "1y": "fiscal year",
    "30d": "rolling 30 days",
}


def grafana_custom_options(query: str) -> list[tuple[str, str]]:
    """``(text, value)`` of each option, as Grafana parses a custom variable's query.

    Grafana splits on commas, then a ``text : value`` item (blanks around the colon) is a
    pair; anything else is its own text and value.
    """
    out = []
    for item in query.split(","):
        pair = re.fullmatch(r"\s*(.+)\s:\s(.+)", item)
        text, value = pair.groups() if pair else (item, item)
        out.append((text.strip(), value.strip()))
    return out


@pytest.mark.parametrize("name", ["overview.json", "finance.json", "hr.json", "it.json"])
def test_the_window_selector_offers_the_seven_windows_by_readable_names(name: str) -> None:
    window = variables(BOARDS[name])["window"]
    assert window["type"] == "custom" and not window.get("multi")
    # The values stay the window label's values, which every panel query uses.
    assert grafana_custom_options(window["query"]) == list(
        (text, value) for value, text in READABLE.items()
    )
    assert [(o["text"], o["value"], o["selected"]) for o in window["options"]] == [
        (text, value, value == "1d") for value, text in READABLE.items()
    ]
    assert window["current"] == {"text": "day", "value": "1d", "selected": True}
    assert all('window="$window"' in e for p in panels(BOARDS[name]) for e in exprs(p))


# -- domain dashboards ---------------------------------------------------------------------


@pytest.mark.parametrize("domain", dashboards.DOMAINS, ids=lambda d: d.key)
def test_domain_dashboard_has_its_dimension_variables(domain: dashboards.Domain) -> None:
    board = BOARDS[f"{domain.key}.json"]
    found = variables(board)
    assert "window" in found
    expected_dims = {"finance": ["department"], "hr": ["department"], "it": ["service", "queue"]}
    assert list(domain.dimensions) == expected_dims[domain.key]
    for dim in domain.dimensions:
        var = found[dim]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == "${datasource}"
        assert var["query"].startswith("label_values(") and var["query"].endswith(f", {dim})")
        assert var["includeAll"] and var["allValue"] == ".*"
        # The roll-up value is excluded from the choices.
        assert re.fullmatch(var["regex"].strip("/"), "all") is None
        assert re.fullmatch(var["regex"].strip("/"), "sales") is not None
    for kpi in domain.kpis:
        assert kpi.metric in found[kpi.dimension]["query"]
        selector = f'{kpi.dimension}=~"${kpi.dimension}"'
        assert any(selector in e and kpi.metric in e for p in panels(board) for e in exprs(p))
        kpi_stat(board, kpi)
    # Only the domain's own KPIs.
    others = [k.metric for k in CATALOG if k.topic != domain.topic]
    assert not any(m in e for p in panels(board) for e in exprs(p) for m in others)


# -- every panel and query -----------------------------------------------------------------


def test_every_dashboard_has_a_prometheus_datasource_variable_first() -> None:
    for name, board in BOARDS.items():
        first = board["templating"]["list"][0]
        assert first["name"] == "datasource" and first["type"] == "datasource", name
        assert first["query"] == "prometheus"
        # Provisioned, it opens on the bundled Prometheus (its uid in provisioning).
        assert first["current"]["value"] == dashboards.DATASOURCE_UID


def test_no_dashboard_names_a_datasource_uid_but_through_the_variable() -> None:
    for name, board in BOARDS.items():
        text = json.dumps(board)
        uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {board["uid"]}
        assert uids == {"${datasource}"}, (name, uids)


def test_every_panel_has_the_datasource_and_well_formed_queries() -> None:
    known = exposed_sample_names()
    for name, board in BOARDS.items():
        for panel in panels(board):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                expr = target["expr"]
                assert target["datasource"]["uid"] == "${datasource}"
                for open_, close in ("()", "{}", "[]"):
                    assert expr.count(open_) == expr.count(close), expr
                assert expr.count('"') % 2 == 0, expr
                for metric in re.findall(r"\b(?:backoffice|faust)_\w+", expr):
                    assert metric in known, f"{name}: {metric} is not exposed by the worker"


def test_operations_dashboard_covers_the_pipeline() -> None:
    queries = [e for p in panels(BOARDS["operations.json"]) for e in exprs(p)]
    text = "\n".join(queries)
    for needle in (
        "rate(backoffice_events_in_total[$__rate_interval])",
        "by (topic, type)",
        "sum by (topic) (backoffice_consumer_lag_messages)",
        "sum by (reason) (rate(backoffice_dead_letters_total",
        'backoffice_dead_letters_total{reason="late"}',
        "backoffice_duplicates_total",
        "histogram_quantile(0.5, sum by (le) (rate(backoffice_event_to_kpi_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(backoffice_event_to_kpi_latency_seconds_bucket",
        "backoffice_redis_write_errors_total",
        "backoffice_redis_up",
        "time() - (backoffice_watermark_seconds > 0)",
    ):
        assert needle in text, needle


def test_all_panel_queries_have_no_variables_left() -> None:
    queries = dashboards.all_panel_queries()
    assert len(queries) == len(set(queries))
    written = {e for b in BOARDS.values() for p in panels(b) for e in exprs(p)}
    assert len(queries) == len({dashboards.substitute(e) for e in written})
    for query in queries:
        assert "$" not in query, query
    assert 'backoffice_dso_days{window="1d", department="all"}' in queries
    assert any('department=~".*", department!="all"' in q for q in queries)


def test_every_query_parses_as_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses the expr of every recording rule: an offline PromQL syntax check.
    rules = [
        {"record": f"dashboard_query_{i}", "expr": query}
        for i, query in enumerate(dashboards.all_panel_queries())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_substitute_refuses_unknown_variables() -> None:
    assert dashboards.substitute('x{a=~"${queue}"}[$__rate_interval]') == 'x{a=~".*"}[1m]'
    with pytest.raises(KeyError, match="nope"):
        dashboards.substitute('x{a="$nope"}')


# -- the command ---------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A group, so that `dashboards` is a subcommand as in `kpi`."""

    dashboards.register(app)
    return app


def test_command_writes_then_check_passes_and_fails_on_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "boards"
    result = runner.invoke(cli(), ["dashboards", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    assert runner.invoke(cli(), ["dashboards", "--out", str(out), "--check"]).exit_code == 0

    (out / "hr.json").write_text("{}\n")
    (out / "old.json").write_text("{}\n")
    result = runner.invoke(cli(), ["dashboards", "--out", str(out), "--check"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "hr.json differs" in lines[0] and "old.json not generated" in lines[0]

    # Writing again repairs the file and removes the stale one.
    assert runner.invoke(cli(), ["dashboards", "--out", str(out)]).exit_code == 0
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    assert dashboards.drift(out) == []


# -- percentiles and SLA attainment (SPEC version 2) ---------------------------------------

DURATIONS = [k for k in CATALOG if k.distribution]


def quantile_exprs(kpi: Kpi) -> list[str]:
    return [
        f'backoffice_{kpi.name}_quantile_seconds{{quantile="{q}", window="$window", '
        f'{kpi.dimension}="all"}}'
        for q in ("0.5", "0.9", "0.99")
    ]


@pytest.mark.parametrize("kpi", DURATIONS, ids=lambda k: k.name)
def test_every_duration_kpi_shows_its_percentiles_next_to_the_mean(kpi: Kpi) -> None:
    assert len(DURATIONS) == 5
    mean = f'{kpi.metric}{{window="$window", {kpi.dimension}="all"}}'
    domain = next(d for d in dashboards.DOMAINS if d.topic == kpi.topic)
    for name in ("overview.json", f"{domain.key}.json"):
        found = [p for p in panels(BOARDS[name]) if exprs(p) == [mean, *quantile_exprs(kpi)]]
        assert len(found) == 1, (name, kpi.name)
        panel = found[0]
        legends = [t["legendFormat"] for t in panel["targets"]]
        assert legends == ["mean", "p50", "p90", "p99"]
        assert panel["fieldConfig"]["defaults"]["unit"] == "s"
    band = next(
        p for p in panels(BOARDS[f"{domain.key}.json"]) if "mean and percentiles" in p["title"]
        and kpi.metric in exprs(p)[0]
    )  # fmt: skip
    (override,) = band["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byName", "options": "p99"}
    assert {"id": "custom.fillBelowTo", "value": "p50"} in override["properties"]


def test_no_other_kpi_has_percentile_queries() -> None:
    text = json.dumps(BOARDS)
    assert len(re.findall(r"backoffice_(\w+?)_quantile_seconds", text)) > 0
    assert {m for m in re.findall(r"backoffice_(\w+?)_quantile_seconds", text)} == {
        k.name for k in DURATIONS
    }


def sla_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [p for p in board["panels"] if p["type"] == "row"]
    if not any(r["title"] == "SLA attainment" for r in rows):
        return []
    start = next(i for i, p in enumerate(board["panels"]) if p.get("title") == "SLA attainment")
    after = board["panels"][start + 1 :]
    end = next(i for i, p in enumerate(after) if p["type"] == "row")
    return after[:end]


def test_the_it_dashboard_has_an_sla_attainment_panel_per_sla_with_its_target() -> None:
    found = sla_panels(BOARDS["it.json"])
    by_metric = {exprs(p)[0].split("{")[0]: p for p in found}
    assert set(by_metric) == {
        "backoffice_ticket_sla_attainment_ratio",
        "backoffice_incident_sla_attainment_ratio",
    }
    for kpi in (k for k in CATALOG if k.sla):
        panel = by_metric[kpi.metric]
        dim = kpi.dimension
        assert exprs(panel) == [
            f'{kpi.metric}{{window="$window", {dim}="all"}}',
            f'{kpi.metric}{{window="$window", {dim}=~"${dim}", {dim}!="all"}}',
        ]
        assert f"({kpi.target.window})" in panel["description"]
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == "percentunit"
        steps = defaults["thresholds"]["steps"]
        assert colour_at(steps, kpi.target.value) == "green"
        assert colour_at(steps, kpi.target.value - 0.01) == "red"
        assert defaults["custom"]["thresholdsStyle"]["mode"] != "off"
    assert [k.name for k in CATALOG if k.sla] == [
        "ticket_sla_attainment",
        "incident_sla_attainment",
    ]
    assert [k.target.window for k in CATALOG if k.sla] == [
        "1d",
        "30d",
    ]


@pytest.mark.parametrize("name", ["finance.json", "hr.json", "overview.json", "operations.json"])
def test_dashboards_without_slas_have_no_sla_row(name: str) -> None:
    assert sla_panels(BOARDS[name]) == []
