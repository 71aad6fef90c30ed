"""Finance KPIs (accounts payable and receivable): processing time, error rate, DSO, AP turnover.

Money comes from the ``Fact`` (the reporting currency: foreign invoices and their payments
are converted by the lifecycle), never from the event's own ``amount``.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.events import (
    InvoiceApproved,
    InvoiceIssued,
    InvoicePaid,
    InvoiceReceived,
    InvoiceRejected,
    PaymentReceived,
)
from streams.kpis.base import (
    DURATION_PARTS,
    Delta,
    Feed,
    Kpi,
    Target,
    duration,
    mean,
    ratio,
    turnover,
)
from streams.kpis.fact import Fact


def _approved(_e: InvoiceApproved, _fact: Fact) -> Delta | None:
    return (0.0, 1.0), 0.0


def _rejected(_e: InvoiceRejected, _fact: Fact) -> Delta | None:
    return (1.0, 1.0), 0.0


def _ap_received(_e: InvoiceReceived, fact: Fact) -> Delta | None:
    # Purchases, and the invoice's amount is owed from now on.
    return (fact.amount, 1.0), fact.amount


def _ap_rejected(_e: InvoiceRejected, fact: Fact) -> Delta | None:
    # A rejected invoice is owed no more.
    return (0.0, 1.0), -fact.amount


def _ap_paid(_e: InvoicePaid, fact: Fact) -> Delta | None:
    return (0.0, 1.0), -fact.amount


def _ar_issued(_e: InvoiceIssued, fact: Fact) -> Delta | None:
    # Credit sales, and the amount is receivable from now on.
    return (fact.amount, 1.0), fact.amount


def _ar_paid(_e: PaymentReceived, fact: Fact) -> Delta | None:
    return (0.0, 1.0), -fact.amount


def _dso(parts: Sequence[float], _ar_start: float, ar_end: float, days: float) -> float | None:
    credit_sales = parts[0]
    return ar_end / credit_sales * days if credit_sales else None


INVOICE_PROCESSING_TIME = Kpi(
    "invoice_processing_time",
    "Invoice processing time",
    "seconds",
    "department",
    "invoices",
    "backoffice_invoice_processing_time_seconds",
    Target(
        3 * 86400, "at_most", "2h", goal="AP invoices decided within 3 days on average", window="1d"
    ),
    DURATION_PARTS,
    (Feed(InvoiceApproved, duration), Feed(InvoiceRejected, duration)),
    mean,
    distribution=True,
    description="Mean of (approved or rejected) - received, AP invoices decided in the window.",
)

INVOICE_ERROR_RATE = Kpi(
    "invoice_error_rate",
    "Invoice error rate",
    "ratio",
    "department",
    "invoices",
    "backoffice_invoice_error_ratio",
    Target(
        0.05, "at_most", "2h", goal="At most 5% of AP invoices rejected for errors", window="1d"
    ),
    ("rejected", "n"),
    (Feed(InvoiceApproved, _approved), Feed(InvoiceRejected, _rejected)),
    ratio,
    description="Rejected / (approved + rejected), decisions in the window.",
)

DSO = Kpi(
    "dso",
    "Days sales outstanding",
    "days",
    "department",
    "invoices",
    "backoffice_dso_days",
    Target(45, "at_most", "6h", goal="Customers pay within 45 days (DSO <= 45)", window="30d"),
    ("credit_sales", "n"),
    (Feed(InvoiceIssued, _ar_issued), Feed(PaymentReceived, _ar_paid)),
    _dso,
    balance="ar",
    description="AR at window end / credit sales in the window x window days.",
)

AP_TURNOVER = Kpi(
    "ap_turnover",
    "Accounts payable turnover",
    "ratio",
    "department",
    "invoices",
    "backoffice_ap_turnover_ratio",
    Target(0.5, "at_least", "6h", goal="AP turnover of at least 0.5 per window", window="30d"),
    ("purchases", "n"),
    (
        Feed(InvoiceReceived, _ap_received),
        Feed(InvoiceRejected, _ap_rejected),
        Feed(InvoicePaid, _ap_paid),
    ),
    turnover,
    balance="ap",
    description="Purchases in the window / ((AP at start + AP at end) / 2).",
    share=False,  # times per window, not a share
)

KPIS = (INVOICE_PROCESSING_TIME, INVOICE_ERROR_RATE, DSO, AP_TURNOVER)
