"""The keys of a partition's state (and of its changelog), built and parsed here only.

A key starts with its kind and ``|``; the rest is ``|``-separated. Dimension values and
ids never contain ``|`` (the schemas' patterns forbid it), so the split is exact.

======================================  ================================================
key                                     value
======================================  ================================================
``e|<entity kind>|<id>``                an entity's lifecycle (invoice, requisition ...)
``p|<kpi>|<window>|<scope>|<start>``    a pane: the KPI's parts (and balance change)
``b|<kpi>|<window>|<scope>``            balance base: the folded balance of pruned panes
``q|<kpi>|<window>|<scope>|<start>``    a pane's distribution (duration KPIs: sketch, worst)
``s|<service>``                         a service's status timeline (``uptime``)
``d|<commit seq>|<offset>``             a group of applied event ids (duplicates)
``c|<dimension>``                       the dimension values admitted (cardinality)
``k|calendar``                          the calendar the panes were cut in (time zone)
``m``                                   the commit's meta record (changelog only)
======================================  ================================================
"""

from __future__ import annotations

from typing import Final

ENTITY: Final = "e|"
PANE: Final = "p|"
BALANCE: Final = "b|"
DISTRIBUTION: Final = "q|"
TIMELINE: Final = "s|"
APPLIED: Final = "d|"
ADMITTED: Final = "c|"
META: Final = "m"
#: The calendar (``<time zone> <fiscal year start>``) a partition's panes are cut in.
CALENDAR: Final = "k|calendar"

#: Entity kinds (the second field of an entity key).
INVOICE: Final = "inv"
REQUISITION: Final = "req"
EMPLOYEE: Final = "emp"
INCIDENT: Final = "inc"
TICKET: Final = "tkt"


def kind(key: str) -> str:
    """The kind of a key: one of the prefixes above."""
    return key[:2]


def is_view(key: str) -> bool:
    """Whether windows are read from this key (what a replica of a partition keeps)."""
    prefix = key[:2]
    return prefix == PANE or prefix == BALANCE or prefix == TIMELINE or prefix == DISTRIBUTION


def entity(entity_kind: str, entity_id: str) -> str:
    """The key of one entity's lifecycle."""
    return f"e|{entity_kind}|{entity_id}"


def pane_prefix(kpi: str, window: str, scope: str) -> str:
    """Every pane key of one KPI, window and scope: this plus the pane start."""
    return f"p|{kpi}|{window}|{scope}|"


def distribution_prefix(kpi: str, window: str, scope: str) -> str:
    """Every distribution key of one KPI, window and scope: this plus the pane start."""
    return f"q|{kpi}|{window}|{scope}|"


def window_of(key: str) -> str:
    """The window (pane kind) named in a pane or balance key."""
    return key.split("|")[2]


def parse_pane(key: str) -> tuple[str, str, str, int]:
    """``(kpi, window, scope, pane start)`` of a pane (or a pane's distribution) key."""
    _, kpi, window, scope, start = key.split("|")
    return kpi, window, scope, int(start)


def balance(kpi: str, window: str, scope: str) -> str:
    """The key of a balance base."""
    return f"b|{kpi}|{window}|{scope}"


def parse_balance(key: str) -> tuple[str, str, str]:
    """``(kpi, window, scope)`` of a balance base key."""
    _, kpi, window, scope = key.split("|")
    return kpi, window, scope


def timeline(service: str) -> str:
    """The key of a service's status timeline."""
    return TIMELINE + service


def timeline_service(key: str) -> str:
    """The service of a timeline key."""
    return key[2:]


def applied_group(seq: int, offset: int) -> str:
    """The key of a group of applied ids, opened by commit ``seq`` at input ``offset``."""
    return f"d|{seq}|{offset}"


def applied_group_order(key: str) -> tuple[int, int]:
    """Sort key of applied-id groups: the order they were opened in."""
    _, seq, offset = key.split("|")
    return int(seq), int(offset)


def admitted(dimension: str) -> str:
    """The key of the values admitted for one dimension."""
    return ADMITTED + dimension


def admitted_dimension(key: str) -> str:
    """The dimension of an admitted-values key."""
    return key[2:]
