"""Resolution SLAs: ``KPI_TICKET_SLA`` by ticket priority, ``KPI_INCIDENT_SLA`` by severity.

A setting is a comma-separated list of ``<class>=<duration>``, the duration a number with
a unit (``s``, ``m``, ``h``, ``d``): ``p1=4h,p2=8h,p3=24h,p4=72h``. A class the setting does
not name keeps its default. SPEC section 2.
"""

from __future__ import annotations

import re

TICKET_PRIORITIES = ("p1", "p2", "p3", "p4")
INCIDENT_SEVERITIES = ("sev1", "sev2", "sev3", "sev4")
DEFAULT_TICKET_SLA = "p1=4h,p2=8h,p3=24h,p4=72h"
DEFAULT_INCIDENT_SLA = "sev1=4h,sev2=8h,sev3=24h,sev4=72h"

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ITEM = re.compile(r"^([a-z0-9]+)=([0-9]+(?:\.[0-9]+)?)([smhd])$")


def parse_slas(text: str, classes: tuple[str, ...], default: str) -> dict[str, float]:
    """Seconds allowed per class; ``ValueError`` with a one-line reason when malformed."""
    slas = _parse(default, classes) if default else {}
    slas.update(_parse(text, classes))
    return slas


def _parse(text: str, classes: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        match = _ITEM.match(item)
        if match is None:
            msg = (
                f"{item!r} is not <class>=<duration with a unit s, m, h or d>"
                f" (e.g. {classes[0]}=4h)"
            )
            raise ValueError(msg)
        name, number, unit = match.groups()
        if name not in classes:
            msg = f"unknown class {name!r} (one of {', '.join(classes)})"
            raise ValueError(msg)
        if name in out:
            msg = f"{name} is given twice"
            raise ValueError(msg)
        seconds = float(number) * _UNITS[unit]
        if seconds <= 0:
            msg = f"{name}: the SLA must be longer than 0"
            raise ValueError(msg)
        out[name] = seconds
    return out
