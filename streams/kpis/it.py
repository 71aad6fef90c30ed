"""IT service management KPIs: uptime, incident response and resolution, tickets, security."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.events import (
    IncidentAcknowledged,
    IncidentOpened,
    IncidentResolved,
    ServiceDown,
    ServiceUp,
    TicketResolved,
)
from streams.kpis.base import DURATION_PARTS, Delta, Feed, Kpi, Target, count, duration, mean
from streams.kpis.fact import Fact


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

KPIS = (
    SYSTEM_UPTIME,
    INCIDENT_RESPONSE_TIME,
    INCIDENT_RESOLUTION_TIME,
    TICKET_RESOLUTION_TIME,
    SECURITY_INCIDENTS,
)
