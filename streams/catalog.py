"""The one KPI catalog: every KPI declared once, everything else derived from it.

Computation (parts and how a value is read from them), the Redis ``kpi:catalog`` hash, the
Prometheus families, dashboards and alert rules all read this module. Adding a KPI is one
``KpiDef`` here plus the rule in ``streams/core/measures.py`` that turns events into parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from streams.core.windows import WINDOW_SPECS, WindowSpec

#: The scope of a KPI over all dimension values (SPEC section 3).
ROLLUP = "all"

Dimension = Literal["department", "service", "queue"]
Direction = Literal["at_most", "at_least"]

#: Reads a window's value from its summed parts, the balance at the window start and end
#: (only for balance KPIs, else 0) and the window spec. ``None`` means undefined.
Reader = Callable[[Sequence[float], float, float, WindowSpec], float | None]


@dataclass(frozen=True, slots=True)
class Target:
    """A SMART goal: the value a KPI should stay at most / at least at, per window."""

    value: float
    direction: Direction
    #: How long a miss must last before the alert fires (Prometheus ``for:``).
    for_: str = "30m"
    severity: Literal["warning", "critical"] = "warning"
    #: Human wording of the goal, for docs, dashboards and alert descriptions.
    goal: str = ""

    def met(self, value: float) -> bool:
        """True when ``value`` meets the goal."""
        return value <= self.value if self.direction == "at_most" else value >= self.value


@dataclass(frozen=True, slots=True)
class KpiDef:
    """One KPI of SPEC section 2."""

    name: str
    title: str
    unit: str
    dimension: Dimension
    topic: str
    metric: str
    target: Target
    #: Names of the additive parts kept per pane; the last is always ``n``, the count of
    #: events that contributed (the Redis ``count``).
    parts: tuple[str, ...]
    read: Reader
    #: Name of the balance whose value at window start and end the reader needs, if any.
    balance: str | None = None
    windows: tuple[str, ...] = ("1h", "1d", "30d")
    description: str = ""
    specs: tuple[WindowSpec, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "specs", tuple(WINDOW_SPECS[w] for w in self.windows))

    def catalog_entry(self) -> dict[str, object]:
        """The JSON object stored in the Redis ``kpi:catalog`` hash (SPEC section 3)."""
        return {
            "name": self.name,
            "title": self.title,
            "unit": self.unit,
            "dimension": self.dimension,
            "windows": list(self.windows),
            "target": {
                "value": self.target.value,
                "direction": self.target.direction,
                "goal": self.target.goal,
            },
        }


# -- readers: pure functions of summed parts -------------------------------------------


def _mean(parts: Sequence[float], _b0: float, _b1: float, _spec: WindowSpec) -> float | None:
    total, n = parts
    return total / n if n else None


def _ratio(parts: Sequence[float], _b0: float, _b1: float, _spec: WindowSpec) -> float | None:
    hits, n = parts
    return hits / n if n else None


def _total(parts: Sequence[float], _b0: float, _b1: float, _spec: WindowSpec) -> float | None:
    return parts[0]


def _count(parts: Sequence[float], _b0: float, _b1: float, _spec: WindowSpec) -> float | None:
    return parts[-1]


def _enps(parts: Sequence[float], _b0: float, _b1: float, _spec: WindowSpec) -> float | None:
    promoters, detractors, n = parts
    return (promoters / n - detractors / n) * 100.0 if n else None


def _dso(parts: Sequence[float], _ar_start: float, ar_end: float, spec: WindowSpec) -> float | None:
    credit_sales = parts[0]
    return ar_end / credit_sales * spec.size_days if credit_sales else None


def _turnover(parts: Sequence[float], start: float, end: float, _spec: WindowSpec) -> float | None:
    # ap_turnover: purchases / average AP; employee_turnover_rate: separations / average HC.
    average = (start + end) / 2.0
    return parts[0] / average if average else None


def _uptime(parts: Sequence[float], _b0: float, _b1: float, _spec: WindowSpec) -> float | None:
    # Uptime is read by streams/core/uptime.py; parts here are (value_sum, services, n).
    value_sum, services = parts[0], parts[1]
    return value_sum / services if services else None


MEAN = ("sum_s", "n")

CATALOG: tuple[KpiDef, ...] = (
    KpiDef(
        "invoice_processing_time",
        "Invoice processing time",
        "seconds",
        "department",
        "invoices",
        "backoffice_invoice_processing_time_seconds",
        Target(3 * 86400, "at_most", "2h", goal="AP invoices decided within 3 days on average"),
        MEAN,
        _mean,
        description="Mean of (approved or rejected) - received, AP invoices decided in the window.",
    ),
    KpiDef(
        "invoice_error_rate",
        "Invoice error rate",
        "ratio",
        "department",
        "invoices",
        "backoffice_invoice_error_ratio",
        Target(0.05, "at_most", "2h", goal="At most 5% of AP invoices rejected for errors"),
        ("rejected", "n"),
        _ratio,
        description="Rejected / (approved + rejected), decisions in the window.",
    ),
    KpiDef(
        "dso",
        "Days sales outstanding",
        "days",
        "department",
        "invoices",
        "backoffice_dso_days",
        Target(45, "at_most", "6h", goal="Customers pay within 45 days (DSO <= 45)"),
        ("credit_sales", "n"),
        _dso,
        balance="ar",
        description="AR at window end / credit sales in the window x window days.",
    ),
    KpiDef(
        "ap_turnover",
        "Accounts payable turnover",
        "ratio",
        "department",
        "invoices",
        "backoffice_ap_turnover_ratio",
        Target(0.5, "at_least", "6h", goal="AP turnover of at least 0.5 per window"),
        ("purchases", "n"),
        _turnover,
        balance="ap",
        description="Purchases in the window / ((AP at start + AP at end) / 2).",
    ),
    KpiDef(
        "time_to_hire",
        "Time to hire",
        "seconds",
        "department",
        "hiring",
        "backoffice_time_to_hire_seconds",
        Target(45 * 86400, "at_most", "1d", goal="Vacancies filled within 45 days on average"),
        MEAN,
        _mean,
        description="Mean of offer accepted - requisition opened, for requisitions filled.",
    ),
    KpiDef(
        "employee_turnover_rate",
        "Employee turnover rate",
        "ratio",
        "department",
        "hiring",
        "backoffice_employee_turnover_ratio",
        Target(0.1, "at_most", "1d", goal="At most 10% of headcount leaves per window"),
        ("separations", "n"),
        _turnover,
        balance="hc",
        description="Separations / ((headcount at start + headcount at end) / 2).",
    ),
    KpiDef(
        "employee_satisfaction",
        "Employee satisfaction",
        "score",
        "department",
        "hiring",
        "backoffice_employee_satisfaction_score",
        Target(7.0, "at_least", "1d", goal="Mean satisfaction score of at least 7 out of 10"),
        ("sum", "n"),
        _mean,
        description="Mean survey score (0-10) in the window.",
    ),
    KpiDef(
        "enps",
        "Employee net promoter score",
        "score",
        "department",
        "hiring",
        "backoffice_enps_score",
        Target(20, "at_least", "1d", goal="eNPS of at least +20"),
        ("promoters", "detractors", "n"),
        _enps,
        description="(share of 9-10 - share of 0-6) x 100, surveys in the window.",
    ),
    KpiDef(
        "training_cost",
        "Training cost",
        "currency",
        "department",
        "hiring",
        "backoffice_training_cost",
        Target(250_000, "at_most", "1d", goal="Training spend within budget per window"),
        ("sum", "n"),
        _total,
        description="Sum of training costs in the window, in the reporting currency.",
    ),
    KpiDef(
        "system_uptime",
        "System uptime",
        "ratio",
        "service",
        "incidents",
        "backoffice_system_uptime_ratio",
        Target(0.999, "at_least", "15m", "critical", goal="Every service up 99.9% of the time"),
        ("value_sum", "services", "n"),
        _uptime,
        description=(
            "1 - downtime / window length; the roll-up is the mean over services that sent "
            "a status event before the window end."
        ),
    ),
    KpiDef(
        "incident_response_time",
        "Incident response time",
        "seconds",
        "service",
        "incidents",
        "backoffice_incident_response_time_seconds",
        Target(
            15 * 60, "at_most", "30m", goal="Incidents acknowledged within 15 minutes on average"
        ),
        MEAN,
        _mean,
        description="Mean of acknowledged - opened, incidents acknowledged in the window.",
    ),
    KpiDef(
        "incident_resolution_time",
        "Incident resolution time",
        "seconds",
        "service",
        "incidents",
        "backoffice_incident_resolution_time_seconds",
        Target(4 * 3600, "at_most", "1h", goal="Incidents resolved within 4 hours on average"),
        MEAN,
        _mean,
        description="Mean of resolved - opened, incidents resolved in the window.",
    ),
    KpiDef(
        "ticket_resolution_time",
        "Help-desk ticket resolution time",
        "seconds",
        "queue",
        "incidents",
        "backoffice_ticket_resolution_time_seconds",
        Target(8 * 3600, "at_most", "1h", goal="Tickets resolved within 8 hours on average"),
        MEAN,
        _mean,
        description="Mean of resolved - opened, tickets resolved in the window.",
    ),
    KpiDef(
        "security_incidents",
        "Security incidents",
        "count",
        "service",
        "incidents",
        "backoffice_security_incidents",
        Target(0, "at_most", "5m", "critical", goal="No security incidents"),
        ("n",),
        _count,
        description="Number of incidents opened with category security in the window.",
    ),
)

KPIS: dict[str, KpiDef] = {k.name: k for k in CATALOG}
