"""Prometheus rules generated from the catalog: committed = generated, and promtool agrees.

promtool comes from Debian's ``prometheus`` package (``make install`` installs it). Without
it these checks skip on a developer machine and fail under CI, where a skip would hide them.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streams.catalog import CATALOG, KPIS
from streams.kpis import units
from streams.kpis.base import Kpi, Target
from tooling import rules

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "ops" / "prometheus"
RULES_DIR = PROM_DIR / "rules"


def all_rules() -> list[rules.Rule]:
    return [r for groups in rules.rule_groups().values() for g in groups for r in g.rules]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


# -- drift ----------------------------------------------------------------------------


def test_committed_rule_files_equal_the_generated_ones() -> None:
    rendered = rules.render_rules()
    assert sorted(p.name for p in RULES_DIR.glob("*.yml")) == sorted(rendered)
    for name, text in rendered.items():
        committed = (RULES_DIR / name).read_text(encoding="utf-8")
        assert committed == text, f"{name} is out of date with streams/catalog.py: run `kpi rules`"


def test_rendering_is_deterministic() -> None:
    assert rules.render_rules() == rules.render_rules()


# -- what the catalog becomes ---------------------------------------------------------


def test_every_kpi_has_exactly_one_alert_with_its_target() -> None:
    alerts = {r.alert: r for r in all_rules() if r.alert}
    for kpi in CATALOG:
        alert = alerts[rules.alert_name(kpi)]
        window = kpi.target.window
        assert alert.for_ == kpi.target.for_
        assert alert.labels == {"severity": kpi.target.severity, "kpi": kpi.name}
        assert f'{kpi.metric}{{window="{window}"}}' in alert.expr
        assert f'backoffice_kpi_target{{kpi="{kpi.name}", window="{window}"}}' in alert.expr
        comparison = ">" if kpi.target.direction == "at_most" else "<"
        assert f"\n  {comparison} on(job, instance, window) group_left()\n" in alert.expr
        description = alert.annotations["description"]
        current = f"the current {units.WINDOW_TITLES[window]} (window {window})"
        for words in (kpi.title, f"{{{{ $labels.{kpi.dimension} }}}}", current, "$value"):
            assert words in description
        assert alert.annotations["summary"].endswith(f" in {current}")
        assert units.target_words(kpi) in description
    kpi_alerts = [r for r in all_rules() if r.alert and r.alert.endswith("OffTarget")]
    assert len(kpi_alerts) == len(CATALOG)
    text = rules.render_rules()[rules.KPI_FILE]
    assert len(re.findall(r"^      - alert: \w+OffTarget$", text, re.M)) == len(CATALOG)


def test_every_kpi_has_miss_and_gap_recording_rules() -> None:
    recorded = {(r.record, r.labels["kpi"]) for r in all_rules() if r.record}
    expected = {
        (record, k.name)
        for k in CATALOG
        for record in ("backoffice:kpi_miss", "backoffice:kpi_target_gap")
    }
    assert recorded == expected


def test_the_catalog_judges_balance_slow_and_sparse_kpis_on_30d_the_others_on_1d() -> None:
    windows = {k.name: k.target.window for k in CATALOG}
    monthly = {n for n, w in windows.items() if w == "30d"}
    balance = {"dso", "ap_turnover", "employee_turnover_rate"}
    # for: 1d, which could never elapse on a daily window that restarts at midnight.
    slow = {"time_to_hire", "employee_satisfaction", "enps", "training_cost"}
    # A share of few events a day per scope: a service has a handful of incidents a day, so
    # one miss in three reads 67% against 95%; SLAs are reported over a rolling month.
    sparse = {"incident_sla_attainment"}
    assert monthly == balance | slow | sparse
    assert set(windows.values()) == {"1d", "30d"}
    for kpi in CATALOG:
        assert rules.alert_window(kpi) == kpi.target.window
        if windows[kpi.name] == "1d":
            # A miss that starts by 18:00 can still fire the same day.
            assert rules.duration_seconds(kpi.target.for_) <= 6 * 3600


def _judged_on(kpi_name: str, window: str, for_: str | None = None) -> Kpi:
    kpi = KPIS[kpi_name]
    target = dataclasses.replace(kpi.target, window=window, for_=for_ or kpi.target.for_)
    return dataclasses.replace(kpi, target=target)


def test_the_alert_watches_the_window_the_catalog_target_names() -> None:
    kpi = _judged_on("ticket_resolution_time", "1q")
    alert = rules.kpi_alert(kpi)
    assert 'backoffice_ticket_resolution_time_seconds{window="1q"}' in alert.expr
    assert 'backoffice_kpi_target{kpi="ticket_resolution_time", window="1q"}' in alert.expr
    assert "in the current fiscal quarter (window 1q)" in alert.annotations["description"]
    assert "1d" not in alert.expr + alert.annotations["description"]
    assert "#   1q (fiscal quarter):\n#      ticket_resolution_time\n" in rules._kpi_header([kpi])


def test_a_target_window_the_kpi_does_not_keep_is_refused() -> None:
    kpi = dataclasses.replace(KPIS["dso"], windows=("1h", "1d"))
    with pytest.raises(
        ValueError,
        match=r"dso: its target is judged on 30d, which is not one "
        r"of its windows \(1h, 1d\)",
    ):
        rules.alert_window(kpi)


@pytest.mark.parametrize(
    ("window", "for_"), [("1h", "30m"), ("1d", "23h"), ("1d", "1d"), ("1w", "7d")]
)
def test_a_for_that_never_fits_in_a_tumbling_window_is_refused(window: str, for_: str) -> None:
    with pytest.raises(ValueError, match=f"for: {for_} never fits in its {window} window"):
        rules.alert_window(_judged_on("enps", window, for_))


@pytest.mark.parametrize(("window", "for_"), [("1h", "29m"), ("1d", "22h"), ("30d", "1w")])
def test_a_for_that_fits_is_kept(window: str, for_: str) -> None:
    assert rules.alert_window(_judged_on("enps", window, for_)) == window


def test_a_target_on_an_unknown_window_is_refused_where_it_is_declared() -> None:
    with pytest.raises(ValueError, match="target window '2w' is not a window"):
        Target(1.0, "at_most", window="2w")


@pytest.mark.parametrize(
    ("text", "seconds"), [("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)]
)
def test_duration_seconds(text: str, seconds: int) -> None:
    assert rules.duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1x", "h1", "1h 30m"])
def test_duration_seconds_rejects_non_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        rules.duration_seconds(text)


def test_targets_in_words() -> None:
    by_name = {k.name: k for k in CATALOG}
    assert units.target_words(by_name["invoice_processing_time"]) == "at most 3d"
    assert units.target_words(by_name["incident_response_time"]) == "at most 15m"
    assert units.target_words(by_name["system_uptime"]) == "at least 0.999"
    assert units.target_words(by_name["dso"]) == "at most 45 days"
    assert units.target_words(by_name["training_cost"]) == ("at most 250,000 (reporting currency)")


def test_pipeline_alerts() -> None:
    alerts = {r.alert: r for r in rules.pipeline_alerts()}
    assert set(alerts) == {
        "BackofficeKpiWorkerDown",
        "BackofficeKpiRedisWritesFailing",
        "BackofficeKpiRedisDataLost",
        "BackofficeKpiNoEvents",
        "BackofficeKpiDeadLettersHigh",
        "BackofficeKpiWatermarkStalled",
    }
    operations = {r.alert: r for r in rules.operations_alerts()}
    assert set(operations) == {
        "BackofficeKpiConsumerLagHigh",
        "BackofficeKpiLatencyHigh",
        "BackofficeKpiStalled",
        "BackofficeKpiDeadLetterRate",
    }
    assert "backoffice_consumer_lag_messages" in operations["BackofficeKpiConsumerLagHigh"].expr
    assert "backoffice_event_to_kpi_latency_seconds_bucket" in (
        operations["BackofficeKpiLatencyHigh"].expr
    )
    assert operations["BackofficeKpiStalled"].expr == "backoffice_stalled == 1"
    assert "by (job, instance, reason)" in operations["BackofficeKpiDeadLetterRate"].expr
    assert alerts["BackofficeKpiWorkerDown"].expr == 'up{job="backoffice-kpi"} == 0'
    assert alerts["BackofficeKpiWorkerDown"].for_ == "2m"
    assert alerts["BackofficeKpiRedisWritesFailing"].for_ == "2m"
    assert alerts["BackofficeKpiRedisDataLost"].expr.startswith(
        "increase(backoffice_redis_data_lost_total[1h])"
    )
    assert alerts["BackofficeKpiNoEvents"].for_ == "10m"
    assert "[15m]" in alerts["BackofficeKpiDeadLettersHigh"].expr
    assert alerts["BackofficeKpiDeadLettersHigh"].expr.endswith("> 0.05")
    assert alerts["BackofficeKpiWatermarkStalled"].for_ == "30m"


@pytest.mark.parametrize(
    ("text", "yaml"),
    [
        ("backoffice:kpi_miss", "backoffice:kpi_miss"),
        ("2h", "2h"),
        ("warning", "warning"),
        ("yes", "'yes'"),  # YAML 1.1 would read a bool
        ("10", "'10'"),
        ("worker:6066", "worker:6066"),
        ('up{job="x"} == 0', "'up{job=\"x\"} == 0'"),
        ("it's", '"it\'s"'),
    ],
)
def test_yaml_scalars_are_quoted_when_needed(text: str, yaml: str) -> None:
    assert rules._scalar(text) == yaml


# -- writing and checking -------------------------------------------------------------


def test_write_then_check_detects_changes_and_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "rules"
    written = rules.write_rules(out)
    assert sorted(p.name for p in written) == sorted(rules.render_rules())
    assert rules.outdated_rules(out) == []

    (out / rules.KPI_FILE).write_text("groups: []\n", encoding="utf-8")
    stale = out / "old.yml"
    stale.write_text(rules.GENERATED_MARKER + "\ngroups: []\n", encoding="utf-8")
    own = out / "hand_written.yml"
    own.write_text("groups: []\n", encoding="utf-8")
    assert rules.outdated_rules(out) == [rules.KPI_FILE, "old.yml"]

    rules.write_rules(out)
    assert rules.outdated_rules(out) == []
    assert not stale.exists()
    assert own.exists()  # not generated: never deleted
    assert rules.outdated_rules(tmp_path / "missing") == sorted(rules.render_rules())


def test_rules_command_writes_and_checks(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A stand-in for the kpi application."""

    rules.register(app)
    runner = CliRunner()
    out = tmp_path / "rules"

    result = runner.invoke(app, ["rules", "--out", str(out), "--check"])
    assert result.exit_code == 1
    assert "out of date" in result.output and len(result.output.strip().splitlines()) == 1

    result = runner.invoke(app, ["rules", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert rules.outdated_rules(out) == []

    result = runner.invoke(app, ["rules", "--out", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


# -- promtool -------------------------------------------------------------------------


def test_promtool_accepts_the_generated_rules(promtool: str, tmp_path: Path) -> None:
    paths = rules.write_rules(tmp_path)
    result = run(promtool, "check", "rules", *map(str, paths))
    assert result.returncode == 0, result.stdout + result.stderr
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", result.stdout))
    assert found == len(all_rules())


def test_promtool_accepts_the_prometheus_configs(promtool: str) -> None:
    configs = sorted(PROM_DIR.glob("prometheus*.yml"))
    assert [p.name for p in configs] == ["prometheus.docker.yml", "prometheus.yml"]
    result = run(promtool, "check", "config", *map(str, configs))
    assert result.returncode == 0, result.stdout + result.stderr
    # Both load every generated rule file.
    n_files = len(rules.render_rules())
    assert result.stdout.count(f"SUCCESS: {n_files} rule files found") == len(configs)


def test_promtool_unit_tests_of_the_alerts(promtool: str) -> None:
    tests = sorted(str(p) for p in (PROM_DIR / "tests").glob("*.yml"))
    assert len(tests) >= 2
    result = run(promtool, "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_operations_doc_lists_every_alert() -> None:
    doc = (REPO / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    alerts_section = doc.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    for rule in all_rules():
        if rule.alert:
            assert f"`{rule.alert}`" in alerts_section, f"docs/OPERATIONS.md: add {rule.alert}"


# -- links: runbook and dashboard -------------------------------------------------------


def test_every_alert_links_its_runbook_section_and_its_dashboard() -> None:
    from tooling import dashboards

    uids = {board["uid"] for board in dashboards.build_dashboards().values()}
    runbook = (REPO / "docs" / "RUNBOOK.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,3} (\w+)$", runbook, re.M))
    alerts = [r for r in all_rules() if r.alert]
    assert alerts
    for rule in alerts:
        url = rule.annotations["runbook_url"]
        assert url == f"docs/RUNBOOK.md#{rule.alert.lower()}"
        # GitHub's anchor of a heading "## Name" is "#name".
        assert rule.alert in headings, f"docs/RUNBOOK.md: add a section ## {rule.alert}"
        dashboard = rule.annotations["dashboard_url"]
        assert dashboard.startswith("http://localhost:3000/d/")
        assert dashboard.removeprefix("http://localhost:3000/d/") in uids
    by_name = {r.alert: r for r in alerts}
    assert by_name["DsoOffTarget"].annotations["dashboard_url"].endswith("/d/backoffice-finance")
    assert (
        by_name["BackofficeKpiStalled"]
        .annotations["dashboard_url"]
        .endswith("/d/backoffice-operations")
    )


def test_the_links_follow_the_command_options_and_environment(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A stand-in for the kpi application."""

    rules.register(app)
    runner = CliRunner()
    out = tmp_path / "rules"
    args = ["rules", "--out", str(out), "--runbook-base", "https://wiki.example/kpi/runbook"]
    result = runner.invoke(app, [*args, "--grafana-url", "https://grafana.example/"])
    assert result.exit_code == 0, result.output
    text = (out / rules.PIPELINE_FILE).read_text(encoding="utf-8")
    assert "runbook_url: 'https://wiki.example/kpi/runbook#backofficekpistalled'" in text
    assert "dashboard_url: 'https://grafana.example/d/backoffice-operations'" in text
    assert "docs/RUNBOOK.md" not in text and "localhost:3000" not in text
    # --check compares with the same links; the defaults differ.
    assert runner.invoke(app, ["rules", "--out", str(out), "--check"]).exit_code == 1
    env = {"KPI_RUNBOOK_BASE": "https://wiki.example/kpi/runbook"}
    env["KPI_GRAFANA_URL"] = "https://grafana.example/"
    result = runner.invoke(app, ["rules", "--out", str(out), "--check"], env=env)
    assert result.exit_code == 0, result.output
