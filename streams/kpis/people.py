"""People KPIs (HR and recruiting): time to hire, turnover, satisfaction, eNPS, training cost."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.events import (
    EmployeeHired,
    EmployeeLeft,
    OfferAccepted,
    SurveySubmitted,
    TrainingCompleted,
)
from streams.kpis.base import (
    DURATION_PARTS,
    Delta,
    Feed,
    Kpi,
    Target,
    duration,
    mean,
    total,
    turnover,
)
from streams.kpis.fact import Fact


def _hired(_e: EmployeeHired, _fact: Fact) -> Delta | None:
    return (0.0, 1.0), 1.0  # one more on the headcount


def _left(_e: EmployeeLeft, _fact: Fact) -> Delta | None:
    return (1.0, 1.0), -1.0  # a separation, one fewer on the headcount


def _score(e: SurveySubmitted, _fact: Fact) -> Delta | None:
    return (float(e.score), 1.0), 0.0


def _promoter_or_detractor(e: SurveySubmitted, _fact: Fact) -> Delta | None:
    score = e.score
    promoter = 1.0 if score >= 9 else 0.0
    detractor = 1.0 if score <= 6 else 0.0
    return (promoter, detractor, 1.0), 0.0


def _cost(_e: TrainingCompleted, fact: Fact) -> Delta | None:
    return (fact.amount, 1.0), 0.0  # the cost in the reporting currency


def _enps(parts: Sequence[float], _b0: float, _b1: float, _days: float) -> float | None:
    promoters, detractors, n = parts
    return (promoters / n - detractors / n) * 100.0 if n else None


TIME_TO_HIRE = Kpi(
    "time_to_hire",
    "Time to hire",
    "seconds",
    "department",
    "hiring",
    "backoffice_time_to_hire_seconds",
    Target(
        45 * 86400, "at_most", "1d", goal="Vacancies filled within 45 days on average", window="30d"
    ),
    DURATION_PARTS,
    (Feed(OfferAccepted, duration),),
    mean,
    distribution=True,
    description="Mean of offer accepted - requisition opened, for requisitions filled.",
)

EMPLOYEE_TURNOVER_RATE = Kpi(
    "employee_turnover_rate",
    "Employee turnover rate",
    "ratio",
    "department",
    "hiring",
    "backoffice_employee_turnover_ratio",
    Target(0.1, "at_most", "1d", goal="At most 10% of headcount leaves per window", window="30d"),
    ("separations", "n"),
    (Feed(EmployeeHired, _hired), Feed(EmployeeLeft, _left)),
    turnover,
    balance="hc",
    description="Separations / ((headcount at start + headcount at end) / 2).",
)

EMPLOYEE_SATISFACTION = Kpi(
    "employee_satisfaction",
    "Employee satisfaction",
    "score",
    "department",
    "hiring",
    "backoffice_employee_satisfaction_score",
    Target(
        7.0, "at_least", "1d", goal="Mean satisfaction score of at least 7 out of 10", window="30d"
    ),
    ("sum", "n"),
    (Feed(SurveySubmitted, _score),),
    mean,
    description="Mean survey score (0-10) in the window.",
)

ENPS = Kpi(
    "enps",
    "Employee net promoter score",
    "score",
    "department",
    "hiring",
    "backoffice_enps_score",
    Target(20, "at_least", "1d", goal="eNPS of at least +20", window="30d"),
    ("promoters", "detractors", "n"),
    (Feed(SurveySubmitted, _promoter_or_detractor),),
    _enps,
    description="(share of 9-10 - share of 0-6) x 100, surveys in the window.",
)

TRAINING_COST = Kpi(
    "training_cost",
    "Training cost",
    "currency",
    "department",
    "hiring",
    "backoffice_training_cost",
    Target(250_000, "at_most", "1d", goal="Training spend within budget per window", window="30d"),
    ("sum", "n"),
    (Feed(TrainingCompleted, _cost),),
    total,
    description="Sum of training costs in the window, in the reporting currency.",
)

KPIS = (TIME_TO_HIRE, EMPLOYEE_TURNOVER_RATE, EMPLOYEE_SATISFACTION, ENPS, TRAINING_COST)
