"""The one KPI catalog: every KPI of SPEC section 2, in the order they are shown and computed.

Each KPI is one object in its domain's module (``streams/kpis/``); computation, the Redis
``kpi:catalog`` hash, the Prometheus families, dashboards and alert rules all read this
tuple. docs/KPIS.md says what adding a KPI takes.
"""

from __future__ import annotations

from streams.kpis import finance, it, people
from streams.kpis.base import Kpi

CATALOG: tuple[Kpi, ...] = (*finance.KPIS, *people.KPIS, *it.KPIS)

KPIS: dict[str, Kpi] = {k.name: k for k in CATALOG}
