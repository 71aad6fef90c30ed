"""The generated rules on a real Prometheus scraping a real worker fed all three topics.

Debian's ``prometheus`` binary runs on a free loopback port with a temporary config that
loads ``ops/prometheus/rules/*.yml`` and scrapes the worker every second. Every recording
and alerting rule's expression must be valid PromQL against the real series (the HTTP API
answers ``status: error`` otherwise), every rule must evaluate without error, and every KPI
gauge family and recording rule must return data: a join on labels the worker does not
expose would be valid but empty.

Dashboards are checked the same way: add their panel queries to ``EXTRA_QUERIES``.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from streams.catalog import CATALOG
from streams.config import Settings
from streams.sinks.metrics import quantile_metric
from tests.eventgen import random_log
from tests.integration.helpers import REPO, Worker, publish, wait_until
from tooling import dashboards, rules
from tooling.stack import free_port

DAYS = 2
DAY = 86400
RULES_DIR = REPO / "ops" / "prometheus" / "rules"

#: More PromQL to check against the live series (e.g. Grafana panel queries, whose
#: ``$__rate_interval``-style variables must be substituted first).
EXTRA_QUERIES: list[str] = []


def recent_start() -> float:
    """The UTC midnight that makes a log of ``DAYS`` days end an hour or more before now.

    Without flush events the newest windows are then the log's last full day and hour,
    which hold data for every KPI whatever the time of day the test runs.
    """
    return float((time.time() - DAYS * DAY - 3600) // DAY * DAY)


@contextmanager
def running_prometheus(binary: str, scrape_target: str, workdir: Path) -> Iterator[str]:
    """Prometheus scraping ``scrape_target`` every second; yields its base URL."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "rule_files:\n"
        f"  - {RULES_DIR}/*.yml\n"
        "scrape_configs:\n"
        f"  - job_name: {rules.JOB}\n"
        "    static_configs:\n"
        f"      - targets: ['{scrape_target}']\n",
        encoding="utf-8",
    )
    log_path = workdir / "prometheus.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"prometheus exited with {proc.returncode}: {log_path.read_text()[-3000:]}"
            )
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout_s=30)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def query(prom_url: str, promql: str) -> dict[str, Any]:
    """The API's JSON answer for an instant query at the current time."""
    response = httpx.get(f"{prom_url}/api/v1/query", params={"query": promql}, timeout=10)
    body: dict[str, Any] = response.json()
    return body


def check_queries(prom_url: str, queries: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Run every query; fail listing each one Prometheus rejects. Query -> its result."""
    results: dict[str, list[dict[str, Any]]] = {}
    errors = []
    for promql in queries:
        body = query(prom_url, promql)
        if body.get("status") != "success":
            errors.append(f"{promql}\n  -> {body.get('errorType')}: {body.get('error')}")
        else:
            results[promql] = body["data"]["result"]
    assert not errors, "invalid PromQL:\n" + "\n".join(errors)
    return results


def all_rules() -> list[rules.Rule]:
    return [r for groups in rules.rule_groups().values() for g in groups for r in g.rules]


def rule_queries() -> list[str]:
    """The expression of every generated recording and alerting rule."""
    return [r.expr for r in all_rules()]


def test_rules_run_on_a_real_prometheus(kpi_env: Settings, tmp_path: Path, prometheus: str) -> None:
    partitions = dict.fromkeys(("invoices", "hiring", "incidents"), kpi_env.partitions)
    # `now`: the generator's "future" faults are a day past the real clock, so they are
    # dead-lettered and never move a watermark.
    messages = random_log(
        seed=11,
        n_events=1500,
        days=DAYS,
        partitions=partitions,
        start=recent_start(),
        now=time.time(),
        flush=False,
    )
    worker = Worker(kpi_env, tmp_path / "worker.log").start()
    try:
        with running_prometheus(prometheus, f"127.0.0.1:{kpi_env.web_port}", tmp_path) as prom:
            publish(kpi_env, [(m.topic, m.partition, m.value) for m in messages])

            # Every KPI gauge family has samples in Prometheus (some window, some scope), and
            # so has every duration KPI's percentile family.
            families = [k.metric for k in CATALOG] + [
                quantile_metric(k) for k in CATALOG if k.distribution
            ]

            def families_scraped() -> list[str]:
                missing = [m for m in families if not query(prom, m)["data"]["result"]]
                return [] if missing else families

            try:
                wait_until(families_scraped, timeout_s=60, interval_s=1.0)
            except AssertionError:
                missing = [m for m in families if not query(prom, m)["data"]["result"]]
                raise AssertionError(f"no samples of {missing}: {worker.log()[-2000:]}") from None

            # Prometheus loaded every generated rule, and each evaluates without error
            # (health stays "unknown" until the first evaluation).
            expected = sorted(r.name for r in all_rules())

            def rules_evaluated() -> list[dict[str, Any]]:
                groups = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
                loaded = [r for g in groups for r in g["rules"]]
                if any(r["health"] == "unknown" for r in loaded):
                    return []
                return loaded

            loaded = wait_until(rules_evaluated, timeout_s=20, interval_s=0.5)
            assert sorted(r["name"] for r in loaded) == expected
            unhealthy = [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
            assert not unhealthy

            # Every Grafana panel's query is valid and returns data (issue 5's bar). rate() and
            # increase() need two samples of a counter: a scrape or two after it appeared.
            def panels_without_data() -> list[str]:
                panels = check_queries(prom, dashboards.all_panel_queries())
                return sorted(q for q, r in panels.items() if not r)

            try:
                wait_until(lambda: not panels_without_data(), timeout_s=30, interval_s=1.0)
            except AssertionError:
                no_data = panels_without_data()
                assert not no_data, f"dashboard panels without data: {no_data}"
            results = check_queries(prom, rule_queries() + EXTRA_QUERIES)
            # The joins match the worker's real labels: every KPI's miss/gap rules yield data.
            for kpi in CATALOG:
                for rule in rules.kpi_recording_rules(kpi):
                    assert results[rule.expr], f"{rule.record} for {kpi.name} is empty"
            # The alerts' joins match too, on the window each alerts on: with `bool` the
            # comparison yields every series, missed or met.
            met_or_missed = {
                kpi.name: re.sub(r"\n  ([<>]) on\(", r"\n  \1 bool on(", rules.kpi_alert(kpi).expr)
                for kpi in CATALOG
            }
            joined = check_queries(prom, met_or_missed.values())
            empty = [name for name, expr in met_or_missed.items() if not joined[expr]]
            assert not empty, f"alert expressions match no series: {empty}"
            # The worker is up and writing: the pipeline alerts that say otherwise are quiet.
            alerts = {r.alert: r.expr for r in rules.pipeline_alerts()}
            # One scrape of a busy worker can time out (up 0); the next one answers.
            up = f'up{{job="{rules.JOB}"}}'

            def scraped_up() -> list[str]:
                return [r["value"][1] for r in query(prom, up)["data"]["result"]]

            wait_until(lambda: scraped_up() == ["1"], timeout_s=30, interval_s=1.0)
            quiet = check_queries(prom, alerts.values())
            assert quiet[alerts["BackofficeKpiWorkerDown"]] == []
            assert quiet[alerts["BackofficeKpiRedisWritesFailing"]] == []
            assert quiet[alerts["BackofficeKpiRedisDataLost"]] == []
    finally:
        worker.stop()
