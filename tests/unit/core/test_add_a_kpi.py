"""Adding a KPI for an existing event type is its definition and its reference: done here.

A throw-away KPI (the share of AP invoices received at or above 10,000) is defined as one
``Kpi`` object and given to the engine beside the catalog, and to the batch reference as
an ``ExtraKpi``; no other code changes. The engine must then equal the reference for it
and for every catalog KPI, and everything derived from the catalog (metrics, Redis
catalog entry, alert rules, dashboards) must pick it up. docs/KPIS.md describes the steps.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from schemas.events import InvoiceReceived
from streams.catalog import CATALOG
from streams.core.engine import Engine
from streams.core.records import Message, WindowValue
from streams.kpis.base import WINDOWS, Delta, Feed, Kpi, Target, ratio
from streams.kpis.fact import Fact
from streams.sinks.base import SinkBatch
from streams.sinks.metrics import Metrics
from streams.sinks.prometheus import PrometheusSink
from tests import comparison, reference
from tests.eventgen import log_now, random_log
from tooling import dashboards, rules

LARGE = 10_000.0


def _large(e: InvoiceReceived, _fact: Fact) -> Delta | None:
    return (1.0 if e.amount >= LARGE else 0.0, 1.0), 0.0


LARGE_INVOICE_SHARE = Kpi(
    "large_invoice_share",
    "Large invoice share",
    "ratio",
    "department",
    "invoices",
    "backoffice_large_invoice_ratio",
    Target(0.25, "at_most", "1h", goal="At most a quarter of AP invoices are large", window="1d"),
    ("large", "n"),
    (Feed(InvoiceReceived, _large),),
    ratio,
    description="AP invoices received at or above 10,000 / all received, in the window.",
)

REFERENCE = reference.ExtraKpi(
    topic="invoices",
    dimension="department",
    measure={"invoice.received": lambda fields: 1.0 if fields["amount"] >= LARGE else 0.0},
    formula=lambda xs: sum(xs) / len(xs) if xs else None,
)


def test_a_throw_away_kpi_equals_its_reference_with_no_other_change() -> None:
    partitions = {"invoices": 3, "hiring": 2, "incidents": 2}
    start = 1_700_000_000.0
    messages = random_log(seed=5, n_events=3000, days=3, partitions=partitions, start=start)
    now = log_now(start, 3)
    engine = Engine(
        partitions=partitions,
        grace_s=3600,
        currency="USD",
        clock=lambda: now,
        catalog=(*CATALOG, LARGE_INVOICE_SHARE),
    )
    closed: list[WindowValue] = []
    for i in range(0, len(messages), 250):
        batch = [Message(m.topic, m.partition, m.offset, m.value) for m in messages[i : i + 250]]
        closed.extend(engine.process(batch).closed)
    result = reference.compute(
        messages,
        partitions=partitions,
        now=now,
        extra={LARGE_INVOICE_SHARE.name: REFERENCE},
    )
    expected = result.history
    new_keys = [k for k in expected if k[0] == LARGE_INVOICE_SHARE.name]
    # The log has large and small invoices in several departments, closed in every window.
    assert {k[1] for k in new_keys} == {"1h", "1d", "30d"} and len(new_keys) > 6
    comparison.assert_equal(result, comparison.collect(closed))
    shares = [v for k in new_keys for v, _n in expected[k].values() if v is not None]
    # Not trivially all small or all large: windows with a mix of both.
    assert any(0.0 < share < 1.0 for share in shares)


async def test_a_throw_away_kpi_is_exported_like_every_catalog_kpi() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, (*CATALOG, LARGE_INVOICE_SHARE))
    value = WindowValue(
        "large_invoice_share", "1h", "finance", 0, 3600, "1970-01-01T00", 0.5, 4, False
    )
    await PrometheusSink(metrics).write(SinkBatch(current=[value]))
    text = generate_latest(registry).decode()
    assert 'backoffice_large_invoice_ratio{department="finance",window="1h"} 0.5' in text
    assert 'backoffice_kpi_target{kpi="large_invoice_share",window="1d"} 0.25' in text
    entry = LARGE_INVOICE_SHARE.catalog_entry("EUR")
    assert entry["unit"] == "ratio" and entry["windows"] == list(WINDOWS)


def test_a_throw_away_kpi_gets_its_alert_rules_and_dashboard_panels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = (*CATALOG, LARGE_INVOICE_SHARE)
    rendered = "".join(rules.render_rules(catalog).values())
    assert "alert: LargeInvoiceShareOffTarget" in rendered
    assert 'backoffice_large_invoice_ratio{window="1d"}' in rendered
    # The dashboards read the catalog as the worker does: the KPI joins its topic's domain.
    monkeypatch.setattr(dashboards, "CATALOG", catalog)
    boards = dashboards.build_dashboards("USD")
    finance = list(dashboards.panel_queries(boards["finance.json"]))
    assert any("backoffice_large_invoice_ratio" in q for q in finance)
    titles = [p.get("title", "") for p in dashboards._walk_panels(boards["overview.json"])]
    assert "Large invoice share (≤ 25%)" in titles
