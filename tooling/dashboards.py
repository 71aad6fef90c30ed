"""Grafana dashboards as code, derived from the KPI catalog and the metric declarations.

``kpi dashboards`` writes ``ops/grafana/dashboards/*.json`` (provisioned into Grafana by
``ops/grafana/provisioning``); ``--check`` fails when the committed JSON is out of date.
The dashboards are built with the grafana-foundation-sdk builders, so every field they set
is one the SDK's Grafana schema knows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from streams.catalog import CATALOG
from streams.kpis import units
from streams.kpis.base import ROLLUP, Dimension, Kpi
from streams.sinks.metrics import QUANTILES, quantile_metric

#: The uid ``ops/grafana/provisioning/datasources/prometheus.yml`` gives the datasource:
#: the datasource variable's initial choice, so the provisioned dashboards open on it.
DATASOURCE_UID = "prometheus"
#: Every panel and query variable reads the Prometheus the ``datasource`` variable selects,
#: not a fixed uid: a dashboard imported into a Grafana whose Prometheus has another uid
#: works (it offers every Prometheus datasource there).
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")
DEFAULT_OUT = Path("ops/grafana/dashboards")
#: The job name ``ops/prometheus/prometheus*.yml`` scrape the worker under.
SCRAPE_JOB = "backoffice-kpi"
#: Every window any KPI has, in catalog order; the window variable offers these.
WINDOWS: tuple[str, ...] = tuple(dict.fromkeys(w for k in CATALOG for w in k.windows))
DEFAULT_WINDOW = "1d"
#: Concrete values for the template variables, so that every panel query can be run
#: against a live Prometheus (``all_panel_queries``). Dimension variables are used with
#: ``=~``, so ``.*`` selects every value, as Grafana's "All" does.
TEST_VARIABLES: dict[str, str] = {
    "window": DEFAULT_WINDOW,
    "department": ".*",
    "service": ".*",
    "queue": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
}
# The roll-up series carry this dimension value (SPEC section 4).
_GRID_WIDTH = 24
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Domain:
    """A business domain: one input topic, one dashboard."""

    key: str
    title: str
    topic: str

    @property
    def kpis(self) -> tuple[Kpi, ...]:
        """The domain's KPIs, in catalog order."""
        return self.kpis_of(CATALOG)

    def kpis_of(self, catalog: Sequence[Kpi]) -> tuple[Kpi, ...]:
        """The domain's KPIs in ``catalog`` (e.g. with ``KPI_TARGETS_FILE``'s targets)."""
        return tuple(k for k in catalog if k.topic == self.topic)

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        """The dimensions of the domain's KPIs, in order of first appearance."""
        return tuple(dict.fromkeys(k.dimension for k in self.kpis))


DOMAINS: tuple[Domain, ...] = (
    Domain("finance", "Finance (AP/AR)", "invoices"),
    Domain("hr", "HR and recruiting", "hiring"),
    Domain("it", "IT service management", "incidents"),
)

# -- helpers -------------------------------------------------------------------------------


def threshold_steps(kpi: Kpi) -> list[model.Threshold]:
    """Threshold steps from the catalog target: green where the goal is met, red where not.

    Grafana colours a step from its value upwards, inclusive. That is right for ``at_least``
    (the target itself meets the goal). For ``at_most`` the target itself meets it too, so
    red starts just above it: at target + 1 for counts (integers), else at the next float
    (an error ratio of exactly 1/20 against a 5% target is common, and green).
    """
    target = kpi.target
    if target.direction == "at_least":
        return [model.Threshold(None, "red"), model.Threshold(target.value, "green")]
    if kpi.unit == "count":
        breach = target.value + 1
    else:
        breach = math.nextafter(target.value, math.inf)
    return [model.Threshold(None, "green"), model.Threshold(breach, "red")]


def _thresholds(steps: list[model.Threshold]) -> builders.ThresholdsConfig:
    return builders.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)


def _query(expr: str, legend: str = "__auto", ref_id: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .datasource(DATASOURCE)
    )


def _widths(n: int) -> list[int]:
    """``n`` panel widths that fill a grid line exactly (the SDK lays out left to right)."""
    base, extra = divmod(_GRID_WIDTH, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _line_sizes(n: int, most: int) -> list[int]:
    """Split ``n`` panels into as few lines of at most ``most`` as possible, evenly (5 -> 3, 2)."""
    lines = -(-n // most)
    base, extra = divmod(n, lines)
    return [base + (1 if i < extra else 0) for i in range(lines)]


def _selector(kpi: Kpi, scope: str, *, regex: bool = False) -> str:
    """``metric{window="$window", dim="all"}`` or, per dimension value, ``=~"$dim"``."""
    dim = kpi.dimension
    if regex:
        # The roll-up is a series of its own; with "All" selected it must not be a line.
        return f'{kpi.metric}{{window="$window", {dim}=~"{scope}", {dim}!="{ROLLUP}"}}'
    return f'{kpi.metric}{{window="$window", {dim}="{scope}"}}'


def _quantile_selector(kpi: Kpi, quantile: str) -> str:
    """A duration KPI's roll-up percentile: ``..._quantile_seconds{quantile="0.9", ...}``."""
    return (
        f'{quantile_metric(kpi)}{{quantile="{quantile}", window="$window", '
        f'{kpi.dimension}="{ROLLUP}"}}'
    )


def _percentile_queries(kpi: Kpi) -> list[tuple[str, str]]:
    """``(expr, legend)`` of the roll-up's p50, p90 and p99 (a duration KPI's)."""
    return [(_quantile_selector(kpi, q), f"p{float(q) * 100:g}") for q in QUANTILES]


def _window_variable() -> builders.CustomVariable:
    """The window selector: readable names ("fiscal quarter") for the ``window`` label values.

    Grafana reads ``text : value`` pairs from a custom variable's query; the options are
    written out too, because Grafana does not fill them from the query when it loads a
    provisioned or imported dashboard.
    """
    titles = {w: units.WINDOW_TITLES[w] for w in WINDOWS}
    return (
        builders.CustomVariable("window")
        .label("Window")
        .description(
            "KPI window: each gauge holds the newest window of this kind, in the business "
            "calendar (KPI_TIMEZONE; quarter and year of the fiscal year)."
        )
        .values(",".join(f"{title} : {w}" for w, title in titles.items()))
        .options(
            [
                model.VariableOption(selected=w == DEFAULT_WINDOW, text=title, value=w)
                for w, title in titles.items()
            ]
        )
        .current(
            model.VariableOption(selected=True, text=titles[DEFAULT_WINDOW], value=DEFAULT_WINDOW)
        )
    )


def _dimension_variable(dimension: Dimension, metrics: Sequence[str]) -> builders.QueryVariable:
    # Every KPI of the dimension, not one: a value that only some KPIs have so far (a
    # department with invoices issued but none decided yet) still becomes a choice.
    selector = f'{{__name__=~"{"|".join(metrics)}"}}'
    return (
        builders.QueryVariable(dimension)
        .label(dimension.capitalize())
        .datasource(DATASOURCE)
        .query(f"label_values({selector}, {dimension})")
        # The roll-up value "all" is shown in its own stat row, not as a choice.
        .regex(f"/^(?!{ROLLUP}$).+$/")
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


def _datasource_variable() -> builders.DatasourceVariable:
    """The Prometheus every panel queries: the provisioned one first, any other on import."""
    return (
        builders.DatasourceVariable(DATASOURCE_VARIABLE)
        .label("Data source")
        .type("prometheus")
        .current(model.VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID))
    )


def _dashboard(uid: str, title: str, tags: Sequence[str], description: str) -> builders.Dashboard:
    return (
        builders.Dashboard(title)
        .with_variable(_datasource_variable())
        .uid(uid)
        .description(description)
        .tags(["backoffice-kpi", *tags])
        .time("now-24h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .readonly()
    )


# -- panels --------------------------------------------------------------------------------


def _kpi_stat(kpi: Kpi, currency: str, width: int) -> stat.Panel:
    """The roll-up's newest window, coloured against the target."""
    return (
        stat.Panel()
        .title(f"{kpi.title} ({units.target_badge(kpi, currency)})")
        .description(f"{kpi.description} Goal: {kpi.target.goal}.")
        .datasource(DATASOURCE)
        .with_target(_query(_selector(kpi, ROLLUP), legend=kpi.title))
        .unit(units.grafana_unit(kpi, currency))
        .thresholds(_thresholds(threshold_steps(kpi)))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .no_value("no window yet")
        .height(5)
        .span(width)
    )


def _kpi_trend(kpi: Kpi, currency: str, width: int, *, by_dimension: bool) -> timeseries.Panel:
    """The newest window's value over time; the target is the dashed threshold line.

    The roll-up's trend of a duration KPI has its percentiles next to the mean.
    """
    if by_dimension:
        expr, legend = _selector(kpi, f"${kpi.dimension}", regex=True), f"{{{{{kpi.dimension}}}}}"
        title = f"{kpi.title} by {kpi.dimension}"
        percentiles = []
    else:
        expr, legend, title = _selector(kpi, ROLLUP), kpi.title, f"{kpi.title}: trend"
        percentiles = _percentile_queries(kpi) if kpi.distribution else []
    description = (
        "The gauge holds the newest window, so a line restarts when a window closes; "
        "closed windows are in Redis (kpi get NAME --history N)."
    )
    if percentiles:
        legend = "mean"
        description += (
            " p50, p90 and p99: the percentiles of the same durations (within 1%); "
            "kpi why NAME lists the longest."
        )
    panel = _kpi_timeseries(kpi, currency, width, title, description, _query(expr, legend=legend))
    for i, (q_expr, q_legend) in enumerate(percentiles, start=1):
        panel.with_target(_query(q_expr, legend=q_legend, ref_id=chr(ord("A") + i)))
    return panel


def _kpi_timeseries(
    kpi: Kpi, currency: str, width: int, title: str, description: str, first: prometheus.Dataquery
) -> timeseries.Panel:
    """A KPI's time series panel with its first query; its target is the dashed threshold."""
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(first)
        .unit(units.grafana_unit(kpi, currency))
        .thresholds(_thresholds(threshold_steps(kpi)))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
        .height(8)
        .span(width)
    )


def _kpi_percentiles(kpi: Kpi, currency: str, width: int) -> timeseries.Panel:
    """A duration KPI's roll-up: the mean and the p50-p99 band around it."""
    scope = f"all {kpi.dimension}s"
    panel = _kpi_timeseries(
        kpi,
        currency,
        width,
        f"{kpi.title}: mean and percentiles ({scope})",
        f"Mean, p50, p90 and p99 of the durations of the newest window over {scope} "
        "(percentiles within 1% relative error). The band from p50 up to p99 is shaded; "
        f"kpi why {kpi.name} lists the ten longest.",
        _query(_selector(kpi, ROLLUP), legend="mean"),
    )
    queries = _percentile_queries(kpi)
    for i, (expr, legend) in enumerate(queries, start=1):
        panel.with_target(_query(expr, legend=legend, ref_id=chr(ord("A") + i)))
    # The band: p99 filled down to p50 (Grafana's "fill below to" override).
    p50, p99 = queries[0][1], queries[-1][1]
    panel.override_by_name(
        p99,
        [
            model.DynamicConfigValue(id_val="custom.fillBelowTo", value=p50),
            model.DynamicConfigValue(id_val="custom.fillOpacity", value=15),
        ],
    )
    return panel


def _sla_panel(kpi: Kpi, currency: str, width: int) -> timeseries.Panel:
    """An SLA attainment over time: the roll-up and each scope, against the target."""
    dim = kpi.dimension
    judged = units.WINDOW_TITLES[kpi.target.window]
    return (
        timeseries.Panel()
        .title(f"{kpi.title} ({units.target_badge(kpi, currency)})")
        .description(
            f"{kpi.description} The shaded area below the target misses it; the target is "
            f"judged (and alerted on) on the {judged} window ({kpi.target.window}). "
            f"Goal: {kpi.target.goal}."
        )
        .datasource(DATASOURCE)
        .with_target(_query(_selector(kpi, ROLLUP), legend=f"all {dim}s"))
        .with_target(
            _query(_selector(kpi, f"${dim}", regex=True), legend=f"{{{{{dim}}}}}", ref_id="B")
        )
        .unit(units.grafana_unit(kpi, currency))
        .min(0)
        .max(1)
        .thresholds(_thresholds(threshold_steps(kpi)))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.LINE_AND_AREA
            )
        )
        .height(8)
        .span(width)
    )


def _kpi_bars(kpi: Kpi, currency: str, width: int) -> bargauge.Panel:
    """The newest window per dimension value, coloured against the target."""
    dim = kpi.dimension
    return (
        bargauge.Panel()
        .title(f"{kpi.title} now, by {dim}")
        .datasource(DATASOURCE)
        .with_target(
            _query(_selector(kpi, f"${dim}", regex=True), legend=f"{{{{{dim}}}}}").instant()
        )
        .unit(units.grafana_unit(kpi, currency))
        .thresholds(_thresholds(threshold_steps(kpi)))
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .height(8)
        .span(width)
    )


def _ts(
    title: str,
    description: str,
    queries: Sequence[tuple[str, str]],
    unit: str,
    width: int = 12,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(width)
    )
    for i, (expr, legend) in enumerate(queries):
        panel.with_target(_query(expr, legend=legend, ref_id=chr(ord("A") + i)))
    return panel


def _op_stat(
    title: str, description: str, expr: str, unit: str, steps: list[model.Threshold], width: int
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(_query(expr, legend=title))
        .unit(unit)
        .thresholds(_thresholds(steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .height(4)
        .span(width)
    )


# -- dashboards ----------------------------------------------------------------------------


def _overview(currency: str, catalog: Sequence[Kpi]) -> builders.Dashboard:
    board = _dashboard(
        "backoffice-overview",
        "Back-office KPIs: overview",
        ["overview"],
        "Every KPI's roll-up (all departments, services, queues) against its target.",
    ).with_variable(_window_variable())
    for domain in DOMAINS:
        kpis = domain.kpis_of(catalog)
        board.with_row(builders.Row(domain.title))
        for kpi, width in zip(kpis, _widths(len(kpis)), strict=True):
            board.with_panel(_kpi_stat(kpi, currency, width))
        widths = [w for size in _line_sizes(len(kpis), 3) for w in _widths(size)]
        for kpi, width in zip(kpis, widths, strict=True):
            board.with_panel(_kpi_trend(kpi, currency, width, by_dimension=False))
    return board


def _domain_dashboard(domain: Domain, currency: str, catalog: Sequence[Kpi]) -> builders.Dashboard:
    dims = " and ".join(f"{d}s" for d in domain.dimensions)
    board = _dashboard(
        f"backoffice-{domain.key}",
        f"Back-office KPIs: {domain.title}",
        [domain.key],
        f"{domain.title} KPIs (topic {domain.topic}) by {dims}, against their targets.",
    ).with_variable(_window_variable())
    for dim in domain.dimensions:
        metrics = [k.metric for k in domain.kpis_of(catalog) if k.dimension == dim]
        board.with_variable(_dimension_variable(dim, metrics))
    kpis = domain.kpis_of(catalog)
    board.with_row(builders.Row(f"Roll-up over all {dims}"))
    for kpi, width in zip(kpis, _widths(len(kpis)), strict=True):
        board.with_panel(_kpi_stat(kpi, currency, width))
    slas = [k for k in kpis if k.sla]
    if slas:
        board.with_row(builders.Row("SLA attainment"))
        for kpi, width in zip(slas, _widths(len(slas)), strict=True):
            board.with_panel(_sla_panel(kpi, currency, width))
    for kpi in kpis:
        board.with_row(builders.Row(f"{kpi.title} by {kpi.dimension}"))
        board.with_panel(_kpi_bars(kpi, currency, 8))
        board.with_panel(_kpi_trend(kpi, currency, 16, by_dimension=True))
        if kpi.distribution:
            board.with_panel(_kpi_percentiles(kpi, currency, _GRID_WIDTH))
    return board


def _operations() -> builders.Dashboard:
    rate = "$__rate_interval"
    board = _dashboard(
        "backoffice-operations",
        "Back-office KPIs: operations",
        ["operations"],
        "The worker: throughput, consumer lag, dead letters, freshness, Redis.",
    )
    green_red = [model.Threshold(None, "green"), model.Threshold(1, "red")]
    neutral = [model.Threshold(None, "blue")]

    board.with_row(builders.Row("Input"))
    board.with_panel(
        _op_stat(
            "Worker up",
            "Workers Prometheus scrapes successfully (job backoffice-kpi).",
            f'sum(up{{job="{SCRAPE_JOB}"}})',
            "none",
            [model.Threshold(None, "red"), model.Threshold(1, "green")],
            5,
        )
    )
    board.with_panel(
        _op_stat(
            "Events in",
            "Input messages per second, all topics.",
            f"sum(rate(backoffice_events_in_total[{rate}]))",
            "cps",
            neutral,
            5,
        )
    )
    board.with_panel(
        _op_stat(
            "Consumer lag",
            "Input messages waiting, all partitions (high-water mark - next to process).",
            "sum(backoffice_consumer_lag_messages)",
            "short",
            [model.Threshold(None, "green"), model.Threshold(10_000, "orange")],
            5,
        )
    )
    board.with_panel(
        _op_stat(
            "Redis",
            "1 when the worker's last Redis write succeeded, 0 while Redis is unreachable.",
            "min(backoffice_redis_up)",
            "none",
            [model.Threshold(None, "red"), model.Threshold(1, "green")],
            5,
        ).mappings(
            [
                model.ValueMap(
                    {
                        "0": model.ValueMappingResult(text="DOWN", color="red"),
                        "1": model.ValueMappingResult(text="UP", color="green"),
                    }
                )
            ]
        )
    )
    board.with_panel(
        _op_stat(
            "Late events",
            "Events dead-lettered as late (beyond grace) in the dashboard's time range.",
            # "or vector(0)": no late event yet means no series, which is 0, not "no data".
            'sum(increase(backoffice_dead_letters_total{reason="late"}[$__range])) or vector(0)',
            "short",
            green_red,
            4,
        )
    )
    board.with_panel(
        _ts(
            "Throughput by topic and type",
            "Input messages per second; dead-lettered ones are type 'invalid'.",
            [
                (
                    f"sum by (topic, type) (rate(backoffice_events_in_total[{rate}]))",
                    "{{topic}} {{type}}",
                )
            ],
            "cps",
        )
    )
    board.with_panel(
        _ts(
            "Consumer lag by topic",
            "Input messages waiting (high-water mark - next offset to process), per topic.",
            [("sum by (topic) (backoffice_consumer_lag_messages)", "{{topic}}")],
            "short",
        )
    )

    board.with_row(builders.Row("Data quality"))
    board.with_panel(
        _ts(
            "Dead letters by reason",
            "Messages per second sent to kpi.dead-letter, by reason (docs/CONTRACT.md).",
            [(f"sum by (reason) (rate(backoffice_dead_letters_total[{rate}]))", "{{reason}}")],
            "cps",
            8,
        )
    )
    board.with_panel(
        _ts(
            "Late events",
            "Dead letters with reason late: more than the grace period behind the watermark.",
            [(f'sum(rate(backoffice_dead_letters_total{{reason="late"}}[{rate}]))', "late")],
            "cps",
            8,
        )
    )
    board.with_panel(
        _ts(
            "Duplicates dropped by topic",
            "Redelivered events whose event_id was already applied.",
            [(f"sum by (topic) (rate(backoffice_duplicates_total[{rate}]))", "{{topic}}")],
            "cps",
            8,
        )
    )

    board.with_row(builders.Row("Freshness"))
    latency = f"sum by (le) (rate(backoffice_event_to_kpi_latency_seconds_bucket[{rate}]))"
    board.with_panel(
        _ts(
            "Event-to-KPI latency",
            "From an input message's Kafka timestamp to its effect written to Redis.",
            [
                (f"histogram_quantile(0.5, {latency})", "p50"),
                (f"histogram_quantile(0.99, {latency})", "p99"),
            ],
            "s",
        )
    )
    board.with_panel(
        _ts(
            "Event-time lag by partition",
            # A partition reports 0 before its first applied event: not a 56-year lag.
            "Wall clock - watermark (largest occurred_at applied) of each input partition.",
            [
                (
                    "time() - (backoffice_watermark_seconds > 0)",
                    "{{topic}}/{{partition}}",
                )
            ],
            "s",
        )
    )
    board.with_panel(
        _ts(
            "Windows closed",
            "Closed windows written to Redis history per second, by window size.",
            [(f"sum by (window) (rate(backoffice_windows_closed_total[{rate}]))", "{{window}}")],
            "cps",
        )
    )
    board.with_panel(
        _ts(
            "Batch size",
            "Messages per processed batch (faust take_events, at most 2000).",
            [
                (
                    "histogram_quantile(0.5, sum by (le) "
                    f"(rate(backoffice_batch_messages_bucket[{rate}])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(backoffice_batch_messages_bucket[{rate}])))",
                    "p99",
                ),
            ],
            "short",
        )
    )

    board.with_row(builders.Row("Redis"))
    board.with_panel(
        _ts(
            "Redis write errors",
            "Failed Redis write attempts per second; the batch is retried until it succeeds.",
            [(f"sum(rate(backoffice_redis_write_errors_total[{rate}]))", "errors")],
            "cps",
        )
    )
    board.with_panel(
        _ts(
            "Redis up",
            "1 when the last Redis write succeeded, 0 while Redis is unreachable.",
            [("min(backoffice_redis_up)", "up")],
            "none",
        )
    )
    _process_row(board)
    return board


def _process_row(board: builders.Dashboard) -> None:
    """The worker process: memory, CPU, stalls (prometheus_client's process collector)."""
    rate = "$__rate_interval"
    board.with_row(builders.Row("Process"))
    board.with_panel(
        _ts(
            "Memory (RSS)",
            "Resident memory of each worker process (process_resident_memory_bytes).",
            [(f'process_resident_memory_bytes{{job="{SCRAPE_JOB}"}}', "{{instance}}")],
            "bytes",
            8,
        )
    )
    board.with_panel(
        _ts(
            "CPU",
            "CPU seconds per second of each worker process (1 = one core).",
            [
                (
                    f'rate(process_cpu_seconds_total{{job="{SCRAPE_JOB}"}}[{rate}])',
                    "{{instance}}",
                )
            ],
            "percentunit",
            8,
        )
    )
    board.with_panel(
        _ts(
            "Stalled",
            "1 while a worker is stalled: work waiting, no batch completed for "
            "KPI_STALL_SECONDS (docs/RUNBOOK.md).",
            [("max by (instance) (backoffice_stalled)", "{{instance}}")],
            "none",
            8,
        )
    )


def _to_json(board: Builder[model.Dashboard]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    # Stable panel ids (the SDK leaves them unset): links like ?viewPanel=N keep working.
    for number, panel in enumerate(_walk_panels(data), start=1):
        panel["id"] = number
    return data


def _walk_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def build_dashboards(
    currency: str = "USD", catalog: Sequence[Kpi] | None = None
) -> dict[str, dict[str, Any]]:
    """Every dashboard: file name -> dashboard JSON (deterministic; uids are fixed).

    Thresholds and target badges follow the catalog's (default) targets: give it
    ``KPI_TARGETS_FILE``'s (``streams.targets.configured_catalog``); None: the module's
    ``CATALOG``, read at call time.
    """
    if catalog is None:
        catalog = CATALOG
    boards: dict[str, Builder[model.Dashboard]] = {"overview.json": _overview(currency, catalog)}
    for domain in DOMAINS:
        boards[f"{domain.key}.json"] = _domain_dashboard(domain, currency, catalog)
    boards["operations.json"] = _operations()
    return {name: _to_json(board) for name, board in boards.items()}


def render(board: dict[str, Any]) -> str:
    """The committed text of a dashboard: stable indentation, trailing newline."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def write_dashboards(
    directory: Path, currency: str = "USD", catalog: Sequence[Kpi] | None = None
) -> list[Path]:
    """Write every dashboard into ``directory``; remove JSON files no longer generated.

    The directory is Grafana's provisioning source: a stale file would keep a dashboard
    alive that the code no longer builds, so it holds generated files only.
    """
    directory.mkdir(parents=True, exist_ok=True)
    boards = build_dashboards(currency, catalog)
    written = []
    for name, board in boards.items():
        path = directory / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    for stale in sorted(directory.glob("*.json")):
        if stale.name not in boards:
            stale.unlink()
    return written


def drift(
    directory: Path, currency: str = "USD", catalog: Sequence[Kpi] | None = None
) -> list[str]:
    """File names in ``directory`` that differ from what ``build_dashboards`` gives."""
    boards = build_dashboards(currency, catalog)
    problems = []
    for name, board in boards.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} missing")
        elif path.read_text(encoding="utf-8") != render(board):
            problems.append(f"{name} differs")
    problems += [
        f"{path.name} not generated"
        for path in sorted(directory.glob("*.json"))
        if path.name not in boards
    ]
    return problems


def panel_queries(board: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of a dashboard's panel targets, as written (with variables)."""
    for panel in _walk_panels(board):
        for target in panel.get("targets", []):
            yield str(target["expr"])


def substitute(expr: str, variables: dict[str, str] = TEST_VARIABLES) -> str:
    """Replace ``$name`` / ``${name}`` with concrete values; unknown variables are an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            msg = f"no test value for the dashboard variable ${name} in {expr!r}"
            raise KeyError(msg)
        return variables[name]

    return _VARIABLE.sub(value, expr)


def all_panel_queries() -> list[str]:
    """Every panel query of every dashboard, variables substituted, without duplicates.

    For running against a live Prometheus: each must parse and evaluate there.
    """
    queries = (
        substitute(expr) for board in build_dashboards().values() for expr in panel_queries(board)
    )
    return list(dict.fromkeys(queries))


# -- CLI -----------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add the ``dashboards`` command to the ``kpi`` application."""
    from streams.config import environment_help

    app.command("dashboards", epilog=environment_help("currency", "targets_file"))(dashboards)


def dashboards(
    out: Annotated[
        Path, typer.Option("--out", help="Directory of the generated dashboard JSON.")
    ] = DEFAULT_OUT,
    check: Annotated[
        bool, typer.Option("--check", help="Only compare: exit 1 when the files are stale.")
    ] = False,
) -> None:
    """Generate the Grafana dashboards from the KPI catalog (or --check the committed ones).

    Thresholds follow ``KPI_TARGETS_FILE`` when set: give it the same file as the worker.
    """
    from streams.config import Settings
    from streams.targets import configured_catalog

    settings = Settings()
    currency = settings.currency
    catalog = configured_catalog(settings)
    if check:
        problems = drift(out, currency, catalog)
        if problems:
            typer.echo(
                f"kpi: dashboards in {out} are stale ({', '.join(problems)}); run: kpi dashboards",
                err=True,
            )
            raise typer.Exit(1)
        typer.echo(f"dashboards in {out} are up to date")
        return
    for path in write_dashboards(out, currency, catalog):
        typer.echo(f"wrote {path}")
