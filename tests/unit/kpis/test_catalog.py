"""The catalog's entries as downstream services read them (the Redis ``kpi:catalog`` hash)."""

from __future__ import annotations

import orjson

from streams.catalog import CATALOG, KPIS
from streams.kpis import units
from streams.kpis.base import WINDOWS


def test_each_entry_lists_the_windows_and_the_one_its_target_is_judged_on() -> None:
    for kpi in CATALOG:
        entry = orjson.loads(orjson.dumps(kpi.catalog_entry("USD")))
        assert entry["windows"] == list(WINDOWS), kpi.name
        assert entry["target"] == {
            "value": kpi.target.value,
            "direction": kpi.target.direction,
            "goal": kpi.target.goal,
            "window": kpi.target.window,
        }
        assert entry["target"]["window"] in entry["windows"]
    assert KPIS["dso"].catalog_entry("USD")["target"] == {
        "value": 45,
        "direction": "at_most",
        "goal": "Customers pay within 45 days (DSO <= 45)",
        "window": "30d",
    }
    assert (
        orjson.loads(orjson.dumps(KPIS["system_uptime"].catalog_entry("EUR")))["target"]["window"]
        == "1d"
    )


def test_every_window_has_a_title_for_people() -> None:
    assert tuple(units.WINDOW_TITLES) == WINDOWS
    assert units.WINDOW_TITLES["1q"] == "fiscal quarter"
    assert len(set(units.WINDOW_TITLES.values())) == len(WINDOWS)
