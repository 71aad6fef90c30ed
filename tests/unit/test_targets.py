"""``KPI_TARGETS_FILE``: the parser's errors and overrides, and everything that follows the file.

The issue's "done when": changing a target in the YAML file changes the alert rule (run by
promtool against the worker's own target gauges), the dashboard threshold and the verdict,
with no code change. ``kpi get``'s verdict against a real Redis is in
tests/integration/test_targets_redis.py.
"""

from __future__ import annotations

import math
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streams import views
from streams.catalog import CATALOG, KPIS
from streams.config import Settings
from streams.sinks.metrics import Metrics
from streams.targets import TargetsError, configured_catalog, load_targets, parse_targets
from tests.cli import run_kpi
from tooling import dashboards, rules

REPO = Path(__file__).resolve().parents[2]


def parse(text: str) -> dict[str, Any]:
    return parse_targets(textwrap.dedent(text), "targets.yaml", CATALOG)


def catalog_with(tmp_path: Path, text: str, name: str = "targets.yaml") -> tuple[Any, ...]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return configured_catalog(Settings(targets_file=str(path)))


# -- the parser -------------------------------------------------------------------------


def test_a_partial_override_keeps_the_other_built_in_fields() -> None:
    targets = parse("invoice_error_rate: {value: 0.01}\n")
    base = KPIS["invoice_error_rate"].target
    target = targets["invoice_error_rate"]
    assert target.value == 0.01
    assert (target.direction, target.window, target.for_, target.severity) == (
        base.direction,
        base.window,
        base.for_,
        base.severity,
    )
    # The built-in goal states the built-in number: a new value drops it.
    assert base.goal and target.goal == ""
    assert list(targets) == ["invoice_error_rate"]


def test_every_field_and_a_scope_override() -> None:
    targets = parse(
        """\
        dso:
          value: 40
          direction: at_most
          windows: [1mo, 30d]
          for: 12h
          severity: critical
          goal: DSO of at most 40 days
          scopes: {sales: 35, eu-north_2: 50.5}
        """
    )
    dso = targets["dso"]
    assert (dso.value, dso.direction, dso.windows, dso.for_, dso.severity, dso.goal) == (
        40,
        "at_most",
        ("1mo", "30d"),
        "12h",
        "critical",
        "DSO of at most 40 days",
    )
    assert dso.scopes == (("sales", 35), ("eu-north_2", 50.5))
    assert dso.value_for("sales") == 35 and dso.value_for("hr") == 40
    assert dso.met(38, "sales") is False and dso.met(38, "hr") is True
    assert dso.met(38) is True  # the roll-up keeps the KPI's value


def test_an_empty_file_is_the_built_in_catalog(tmp_path: Path) -> None:
    assert parse("# nothing yet\n") == {}
    assert catalog_with(tmp_path, "") == CATALOG
    assert configured_catalog(Settings()) is CATALOG


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "dso:\n  value: 40\n  windows: [1m]\n",
            "targets.yaml:3: dso.windows: unknown window '1m' (1h, 1d, 1w, 1mo, 1q, 1y, 30d)",
        ),
        (
            "dso: {value: 40}\nnope: {value: 3}\n",
            "targets.yaml:2: unknown KPI 'nope' (one of invoice_processing_time,",
        ),
        (
            "dso:\n  value: 40\n  valu: 3\n",
            "targets.yaml:3: dso: unknown field 'valu' (value, direction, windows, for, "
            "severity, goal, scopes)",
        ),
        ("dso:\n  value: '40'\n", "targets.yaml:2: dso.value: expected a number, got '40'"),
        ("dso:\n  value: true\n", "targets.yaml:2: dso.value: expected a number, got 'true'"),
        ("dso:\n  value: .nan\n", "targets.yaml:2: dso.value: expected a number"),
        (
            "dso:\n\n  direction: below\n",
            "targets.yaml:3: dso.direction: expected one of at_most, at_least, got 'below'",
        ),
        ("dso:\n  windows: 1mo\n", "targets.yaml:2: dso.windows: expected a list of windows"),
        ("dso:\n  windows: [1mo, 1mo]\n", "targets.yaml:2: dso.windows: window 1mo given twice"),
        (
            "dso:\n  for: 30\n",
            "targets.yaml:2: dso.for: expected a duration such as 30m, 6h or 1d, got '30'",
        ),
        (
            "enps:\n  windows: [1d]\n",
            "targets.yaml:2: enps.windows: a miss lasting for: 1d never fits in its 1d window",
        ),
        (
            "dso:\n  scopes:\n    sales: 35\n    Sales: 30\n",
            "targets.yaml:4: dso.scopes: 'Sales' is not a dimension value "
            "(^[a-z0-9][a-z0-9_-]{0,62}$)",
        ),
        (
            "dso:\n  scopes: {all: 30}\n",
            "targets.yaml:2: dso.scopes: all is the roll-up: its target is the KPI's value",
        ),
        ("dso:\n  scopes: {sales: x}\n", "targets.yaml:2: dso.scopes.sales: expected a number"),
        ("dso:\n  scopes: [sales]\n", "targets.yaml:2: dso.scopes: expected a mapping"),
        ("dso: {value: 40}\ndso: {value: 41}\n", "targets.yaml:2: dso: given twice"),
        ("dso: 40\n", "targets.yaml:1: dso: expected a mapping of target fields"),
        ("- dso\n", "targets.yaml:1: expected a mapping of KPI names to their targets"),
        ("dso: {value: [40\n", "targets.yaml:2: not valid YAML"),
    ],
)
def test_each_error_is_one_line_with_its_line_number(text: str, error: str) -> None:
    with pytest.raises(TargetsError) as caught:
        parse_targets(text, "targets.yaml", CATALOG)
    message = str(caught.value)
    assert message.startswith(error), message
    assert "\n" not in message


def test_a_missing_file_names_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(TargetsError, match=f"cannot read {missing}: No such file or directory"):
        load_targets(str(missing), CATALOG)


@pytest.mark.parametrize(
    "command",
    [["rules", "--check"], ["dashboards", "--check"], ["get", "dso"], ["watch"], ["worker"]],
)
def test_every_command_using_targets_stops_at_start_with_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text("dso:\n  value: 40\n  windows: [1m]\n", encoding="utf-8")
    # Nothing listens on port 1: a command that connected first would fail differently.
    done = run_kpi(
        tmp_path,
        *command,
        KPI_TARGETS_FILE=str(path),
        KPI_REDIS_URL="redis://127.0.0.1:1/0",
        KPI_KAFKA_BOOTSTRAP="127.0.0.1:1",
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"kpi: error: bad setting KPI_TARGETS_FILE: {path}:3: dso.windows: unknown window "
        "'1m' (1h, 1d, 1w, 1mo, 1q, 1y, 30d)\n"
    )
    assert done.stdout == ""


# -- what follows the file -------------------------------------------------------------

SCOPED = """\
dso: {value: 40, direction: at_most, windows: [1mo], scopes: {sales: 35}}
"""


def test_the_catalog_entry_adds_windows_and_scopes_only_when_the_file_gives_them(
    tmp_path: Path,
) -> None:
    catalog = {k.name: k for k in catalog_with(tmp_path, SCOPED + "enps: {windows: [30d, 1y]}\n")}
    dso = orjson.loads(orjson.dumps(catalog["dso"].catalog_entry("USD")))["target"]
    assert dso == {
        "value": 40,
        "direction": "at_most",
        "goal": "",
        "window": "1mo",
        "scopes": {"sales": 35},
    }
    enps = catalog["enps"].catalog_entry("USD")["target"]
    assert isinstance(enps, dict)
    assert (enps["window"], enps["windows"]) == ("30d", ["30d", "1y"])
    assert "scopes" not in enps
    # Untouched KPIs keep the version-1 entry exactly.
    assert catalog["time_to_hire"].catalog_entry("USD") == KPIS["time_to_hire"].catalog_entry("USD")


def _samples(registry: CollectorRegistry, family: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value  # type: ignore[misc]
        for metric in registry.collect()
        if metric.name == family
        for s in metric.samples
    }


def test_the_target_gauges_follow_the_file(tmp_path: Path) -> None:
    default = CollectorRegistry()
    Metrics(default)
    # No file: no scope family at all (/metrics stays as it was).
    assert _samples(default, "backoffice_kpi_scope_target") == {}
    registry = CollectorRegistry()
    Metrics(registry, catalog_with(tmp_path, SCOPED))
    targets = _samples(registry, "backoffice_kpi_target")
    assert targets[(("kpi", "dso"), ("window", "1mo"))] == 40
    assert targets[(("kpi", "enps"), ("window", "30d"))] == KPIS["enps"].target.value
    scoped = _samples(registry, "backoffice_kpi_scope_target")
    assert scoped == {
        (("kpi", "dso"), ("scope", "sales"), ("window", w)): 35 for w in KPIS["dso"].windows
    }


def test_views_judge_a_scope_against_its_own_target(tmp_path: Path) -> None:
    dso = {k.name: k for k in catalog_with(tmp_path, SCOPED)}["dso"]
    assert views.meets(dso, 38, "sales") is False
    assert views.meets(dso, 38, "hr") is True
    assert views.meets(dso, 38) is True
    assert views.meets(dso, None, "sales") is None


# -- done when: a changed target changes rule, threshold and verdict -------------------


def _dso_stat_steps(catalog: tuple[Any, ...]) -> list[dict[str, Any]]:
    board = dashboards.build_dashboards("USD", catalog)["overview.json"]
    dso = KPIS["dso"]
    panel = next(
        p
        for p in dashboards._walk_panels(board)
        if p["type"] == "stat" and p["title"].startswith(dso.title)
    )
    steps: list[dict[str, Any]] = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return steps


def test_changing_a_target_in_the_file_changes_rules_dashboards_and_verdicts(
    tmp_path: Path,
) -> None:
    before = catalog_with(tmp_path, "dso: {value: 45}\n", "before.yaml")
    after = catalog_with(tmp_path, "dso: {value: 40}\n", "after.yaml")
    dso_before = {k.name: k for k in before}["dso"]
    dso_after = {k.name: k for k in after}["dso"]

    rules_before = rules.render_rules(before)[rules.KPI_FILE]
    rules_after = rules.render_rules(after)[rules.KPI_FILE]
    assert "judged on this window, is at most 45 days." in rules_before
    assert "judged on this window, is at most 40 days." in rules_after
    assert "at most 40 days" not in rules_before

    assert _dso_stat_steps(before)[1]["value"] == math.nextafter(45, math.inf)
    assert _dso_stat_steps(after)[1]["value"] == math.nextafter(40, math.inf)
    board = dashboards.build_dashboards("USD", after)["overview.json"]
    assert any("(≤ 40 days)" in p.get("title", "") for p in dashboards._walk_panels(board))

    assert views.meets(dso_before, 42) is True
    assert views.meets(dso_after, 42) is False


# -- promtool: the alert of an overridden scope --------------------------------------------


def _input_series(registry: CollectorRegistry, kpi: str) -> list[str]:
    """The worker's target gauges of ``kpi`` as promtool input series (held for 7h)."""
    lines = []
    for family in ("backoffice_kpi_target", "backoffice_kpi_scope_target"):
        for labels, value in _samples(registry, family).items():
            if dict(labels)["kpi"] != kpi:
                continue
            text = ",".join(
                f'{k}="{v}"'
                for k, v in (("job", "backoffice-kpi"), ("instance", "w:6066"), *labels)
            )
            lines.append(f"      - series: '{family}{{{text}}}'\n        values: '{value:g}+0x420'")
    return lines


def _dso(department: str, value: float) -> str:
    return (
        '      - series: \'backoffice_dso_days{job="backoffice-kpi",instance="w:6066",'
        f'window="1mo",department="{department}"}}\'\n        values: \'{value:g}+0x420\''
    )


def test_promtool_judges_an_overridden_scope_against_its_own_target(
    promtool: str, tmp_path: Path
) -> None:
    catalog = catalog_with(tmp_path, SCOPED)
    rules.write_rules(tmp_path / "rules", catalog, "targets.yaml")
    # The target series come from the worker's own gauges for the same file.
    registry = CollectorRegistry()
    Metrics(registry, catalog)
    series = "\n".join(
        [
            *_input_series(registry, "dso"),
            _dso("sales", 38),  # misses its own 35
            _dso("hr", 38),  # meets the default 40
            _dso("ops", 42),  # misses the default 40
            _dso("all", 39),  # the roll-up meets 40
        ]
    )
    labels = "job: backoffice-kpi\n              instance: w:6066\n              window: 1mo"
    test = f"""\
rule_files:
  - rules/kpi_targets.yml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{series}
    promql_expr_test:
      - expr: backoffice:kpi_miss{{kpi="dso", window="1mo"}}
        eval_time: 10m
        exp_samples:
          - labels: 'backoffice:kpi_miss{{kpi="dso",scope="sales",department="sales",job="backoffice-kpi",instance="w:6066",window="1mo"}}'
            value: 1
          - labels: 'backoffice:kpi_miss{{kpi="dso",scope="hr",department="hr",job="backoffice-kpi",instance="w:6066",window="1mo"}}'
            value: 0
          - labels: 'backoffice:kpi_miss{{kpi="dso",scope="ops",department="ops",job="backoffice-kpi",instance="w:6066",window="1mo"}}'
            value: 1
          - labels: 'backoffice:kpi_miss{{kpi="dso",scope="all",department="all",job="backoffice-kpi",instance="w:6066",window="1mo"}}'
            value: 0
    alert_rule_test:
      - eval_time: 5h50m
        alertname: DsoOffTarget
        exp_alerts: []
      - eval_time: 6h10m
        alertname: DsoOffTarget
        exp_alerts:
          - exp_labels:
              severity: warning
              kpi: dso
              {labels}
              department: ops
            exp_annotations:
              summary: 'Days sales outstanding misses its target for department ops in the current month (window 1mo)'
              description: 'Days sales outstanding (dso) for department ops is 42.0 days in the current month (window 1mo); the target, judged on this window, is at most 40 days. Off target for at least 6h.'
              runbook_url: 'docs/RUNBOOK.md#dsoofftarget'
              dashboard_url: 'http://localhost:3000/d/backoffice-finance'
          - exp_labels:
              severity: warning
              kpi: dso
              {labels}
              department: sales
            exp_annotations:
              summary: 'Days sales outstanding misses its target for department sales in the current month (window 1mo)'
              description: 'Days sales outstanding (dso) for department sales is 38.0 days in the current month (window 1mo); the target of department sales, judged on this window, is at most 35 days (the default is at most 40 days). Off target for at least 6h.'
              runbook_url: 'docs/RUNBOOK.md#dsoofftarget'
              dashboard_url: 'http://localhost:3000/d/backoffice-finance'
"""  # noqa: E501 (promtool's YAML: long label sets and alert texts, compared whole)
    (tmp_path / "dso_test.yml").write_text(test, encoding="utf-8")
    done = subprocess.run(
        [promtool, "test", "rules", "dso_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    check = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "rules" / rules.KPI_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_example_file_is_valid_and_overrides_something() -> None:
    example = REPO / "ops" / "targets.example.yaml"
    targets = load_targets(str(example), CATALOG)
    assert targets and any(t.scopes for t in targets.values())
