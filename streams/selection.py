"""Which KPIs and windows a worker computes: the catalog, restricted by its settings."""

from __future__ import annotations

import dataclasses

from schemas.errors import ConfigurationError
from streams.config import Settings
from streams.kpis.base import WINDOWS, Kpi
from streams.kpis.it import with_slas
from streams.targets import configured_catalog


def selected_catalog(settings: Settings) -> tuple[Kpi, ...]:
    """The catalog with the settings' SLAs and targets, restricted by ``KPI_ONLY_*``."""
    catalog = configured_catalog(settings)
    names = {n.strip() for n in settings.only_kpis.split(",") if n.strip()}
    windows = tuple(w.strip() for w in settings.only_windows.split(",") if w.strip())
    unknown = names - {k.name for k in catalog}
    if unknown:
        msg = f"KPI_ONLY_KPIS names unknown KPIs: {', '.join(sorted(unknown))}"
        raise ConfigurationError(msg)
    odd = [w for w in windows if w not in WINDOWS]
    if odd:
        msg = (
            f"KPI_ONLY_WINDOWS names unknown windows: {', '.join(odd)}"
            f" (one of {', '.join(WINDOWS)})"
        )
        raise ConfigurationError(msg)
    chosen = []
    for kpi in with_slas(catalog, settings.ticket_slas(), settings.incident_slas()):
        if names and kpi.name not in names:
            continue
        if windows:
            kept = tuple(w for w in kpi.windows if w in windows)
            if not kept:
                continue
            kpi = dataclasses.replace(kpi, windows=kept)
        chosen.append(kpi)
    if not chosen:
        msg = "KPI_ONLY_KPIS / KPI_ONLY_WINDOWS leave no KPI to compute"
        raise ConfigurationError(msg)
    return tuple(chosen)
