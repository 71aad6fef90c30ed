"""IT service management KPIs: uptime, incident response and resolution, tickets, security."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from schemas.events import (
    IncidentAcknowledged,
    IncidentOpened,
    IncidentResolved,
    ServiceDown,
    ServiceUp,
    TicketResolved,
)
from streams.kpis.base import (
    DURATION_PARTS,
    Delta,
    Feed,
    Kpi,
    Target,
    count,
    duration,
    mean,
    ratio,
)
from streams.kpis.fact import Fact
from streams.kpis.sla import (
    DEFAULT_INCIDENT_SLA,
    DEFAULT_TICKET_SLA,
    INCIDENT_SEVERITIES,
    TICKET_PRIORITIES,
    parse_slas,
)


def _down(_e: ServiceDown, _fact: Fact) -> Delta | None:
    return (1.0,), 0.0


def _up(_e: ServiceUp, _fact: Fact) -> Delta | None:
    return (0.0,), 0.0


def _security(e: IncidentOpened, _fact: Fact) -> Delta | None:
    return ((1.0,), 0.0) if e.category == "security" else None


def _mean_over_services(
    parts: Sequence[float], _b0: float, _b1: float, _days: float
) -> float | None:
    # Timeline parts: (sum over services of the fraction of the window up, services, n).
    value_sum, services = parts[0], parts[1]
    return value_sum / services if services else None


SYSTEM_UPTIME = Kpi(
    "system_uptime",
    "System uptime",
    "ratio",
    "service",
    "incidents",
    "backoffice_system_uptime_ratio",
    Target(
        0.999, "at_least", "15m", "critical", goal="Every service up 99.9% of the time", window="1d"
    ),
    ("value_sum", "services", "n"),
    (Feed(ServiceDown, _down), Feed(ServiceUp, _up)),
    _mean_over_services,
    description=(
        "1 - downtime / window length; the roll-up is the mean over services that sent "
        "a status event before the window end."
    ),
    kind="timeline",
    digits=4,  # 99.9% targets: the third decimal is the interesting one
)

INCIDENT_RESPONSE_TIME = Kpi(
    "incident_response_time",
    "Incident response time",
    "seconds",
    "service",
    "incidents",
    "backoffice_incident_response_time_seconds",
    Target(
        15 * 60,
        "at_most",
        "30m",
        goal="Incidents acknowledged within 15 minutes on average",
        window="1d",
    ),
    DURATION_PARTS,
    (Feed(IncidentAcknowledged, duration),),
    mean,
    distribution=True,
    description="Mean of acknowledged - opened, incidents acknowledged in the window.",
)

INCIDENT_RESOLUTION_TIME = Kpi(
    "incident_resolution_time",
    "Incident resolution time",
    "seconds",
    "service",
    "incidents",
    "backoffice_incident_resolution_time_seconds",
    Target(
        4 * 3600, "at_most", "1h", goal="Incidents resolved within 4 hours on average", window="1d"
    ),
    DURATION_PARTS,
    (Feed(IncidentResolved, duration),),
    mean,
    distribution=True,
    description="Mean of resolved - opened, incidents resolved in the window.",
)

TICKET_RESOLUTION_TIME = Kpi(
    "ticket_resolution_time",
    "Help-desk ticket resolution time",
    "seconds",
    "queue",
    "incidents",
    "backoffice_ticket_resolution_time_seconds",
    Target(
        8 * 3600, "at_most", "1h", goal="Tickets resolved within 8 hours on average", window="1d"
    ),
    DURATION_PARTS,
    (Feed(TicketResolved, duration),),
    mean,
    distribution=True,
    description="Mean of resolved - opened, tickets resolved in the window.",
)

SECURITY_INCIDENTS = Kpi(
    "security_incidents",
    "Security incidents",
    "count",
    "service",
    "incidents",
    "backoffice_security_incidents",
    Target(0, "at_most", "5m", "critical", goal="No security incidents", window="1d"),
    ("n",),
    (Feed(IncidentOpened, _security),),
    count,
    description="Number of incidents opened with category security in the window.",
)


def within_sla(slas: Mapping[str, float]) -> Callable[[object, Fact], Delta | None]:
    """Measure: 1 hit when the resolution took at most its class's SLA, of 1 resolution.

    An entity without a known class (started before version 2 kept it) is not counted.
    """
    limits = dict(slas)

    def measure(_e: object, fact: Fact) -> Delta | None:
        limit = limits.get(fact.klass)
        if limit is None:
            return None
        return (1.0 if fact.since_start_s <= limit else 0.0, 1.0), 0.0

    return measure


TICKET_SLA_ATTAINMENT = Kpi(
    "ticket_sla_attainment",
    "Ticket SLA attainment",
    "ratio",
    "queue",
    "incidents",
    "backoffice_ticket_sla_attainment_ratio",
    Target(
        0.9,
        "at_least",
        "1h",
        goal="90% of tickets resolved within the SLA of their priority",
        window="1d",
    ),
    ("within", "n"),
    (Feed(TicketResolved, within_sla(parse_slas("", TICKET_PRIORITIES, DEFAULT_TICKET_SLA))),),
    ratio,
    description=(
        "Share of the tickets resolved in the window whose resolution time is within the SLA"
        " of their priority (KPI_TICKET_SLA)."
    ),
    sla=True,
)

INCIDENT_SLA_ATTAINMENT = Kpi(
    "incident_sla_attainment",
    "Incident SLA attainment",
    "ratio",
    "service",
    "incidents",
    "backoffice_incident_sla_attainment_ratio",
    Target(
        0.95,
        "at_least",
        "1h",
        goal="95% of incidents resolved within the SLA of their severity",
        window="30d",
    ),
    ("within", "n"),
    (
        Feed(
            IncidentResolved,
            within_sla(parse_slas("", INCIDENT_SEVERITIES, DEFAULT_INCIDENT_SLA)),
        ),
    ),
    ratio,
    description=(
        "Share of the incidents resolved in the window whose resolution time is within the"
        " SLA of their severity (KPI_INCIDENT_SLA)."
    ),
    sla=True,
)

KPIS = (
    SYSTEM_UPTIME,
    INCIDENT_RESPONSE_TIME,
    INCIDENT_RESOLUTION_TIME,
    TICKET_RESOLUTION_TIME,
    SECURITY_INCIDENTS,
    TICKET_SLA_ATTAINMENT,
    INCIDENT_SLA_ATTAINMENT,
)


def with_slas(
    catalog: Sequence[Kpi], ticket: Mapping[str, float], incident: Mapping[str, float]
) -> tuple[Kpi, ...]:
    """The catalog with the SLA attainments measured against these SLAs (the settings')."""
    feeds: dict[str, Feed[Any]] = {
        TICKET_SLA_ATTAINMENT.name: Feed(TicketResolved, within_sla(ticket)),
        INCIDENT_SLA_ATTAINMENT.name: Feed(IncidentResolved, within_sla(incident)),
    }
    return tuple(
        dataclasses.replace(k, feeds=(feeds[k.name],)) if k.name in feeds else k for k in catalog
    )
