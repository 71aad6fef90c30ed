"""How a KPI's values and targets are shown: to people, in Grafana and in alert texts.

Every unit of the catalog (``seconds``, ``ratio``, ``days``, ``score``, ``count``,
``currency``) is formatted here and nowhere else. A ``ratio`` KPI is a share of a whole
(shown as a percentage in Grafana) unless its ``Kpi.share`` is False (AP turnover: times
per window).
"""

from __future__ import annotations

from streams.kpis.base import Kpi

#: Each window as people call it: Grafana's window selector, alert and terminal texts. A
#: quarter and a year are the fiscal ones (``KPI_FISCAL_YEAR_START``).
WINDOW_TITLES: dict[str, str] = {
    "1h": "hour",
    "1d": "day",
    "1w": "ISO week",
    "1mo": "month",
    "1q": "fiscal quarter",
    "1y": "fiscal year",
    "30d": "rolling 30 days",
}

# Grafana unit ids. "s" scales to minutes, hours and days; Grafana's "d" would show DSO in
# weeks, so days are a plain number with a suffix.
_GRAFANA = {
    "seconds": "s",
    "ratio": "percentunit",
    "days": "suffix: days",
    "score": "none",
    "count": "none",
}
# Currencies with a Grafana unit of their own (a symbol); others get the code as a suffix.
_GRAFANA_CURRENCIES = {"USD", "EUR", "GBP", "JPY"}
#: How an alert prints the KPI's value (Go template over ``$value``). Ratios stay plain
#: numbers: an error rate reads well as a percentage, AP turnover (0.5) does not.
_ALERT_VALUE = {
    "seconds": "{{ $value | humanizeDuration }}",
    "ratio": '{{ $value | printf "%.4g" }}',
    "days": '{{ $value | printf "%.1f" }} days',
    "score": '{{ $value | printf "%.1f" }}',
    "currency": '{{ $value | printf "%.0f" }} (reporting currency)',
    "count": '{{ $value | printf "%.0f" }}',
}


def _whole(seconds: float, units: tuple[tuple[int, str], ...]) -> tuple[float, str] | None:
    """``seconds`` in the largest of ``units`` it is a whole multiple of, if any."""
    for size, suffix in units:
        if seconds >= size and seconds % size == 0:
            return seconds / size, suffix
    return None


def value_text(kpi: Kpi, value: float | None, currency: str) -> str:
    """A value as the terminal shows it (``kpi get``): ``2.5 h``, ``0.042``, ``1,200.00 USD``."""
    if value is None:
        return "-"
    if kpi.unit == "seconds":
        if value >= 86400:
            return f"{value / 86400:.1f} d"
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 60:
            return f"{value / 60:.1f} min"
        return f"{value:.0f} s"
    if kpi.unit == "ratio":
        return f"{value:.{kpi.digits}f}"
    if kpi.unit == "currency":
        return f"{value:,.2f} {currency}"
    if kpi.unit == "days":
        return f"{value:.1f} d"
    if kpi.unit == "count":
        return f"{value:.0f}"
    return f"{value:.2f}"


def grafana_unit(kpi: Kpi, currency: str) -> str:
    """The Grafana unit id of a KPI's panels."""
    if kpi.unit == "ratio" and not kpi.share:
        return "none"
    if kpi.unit == "currency":
        return f"currency{currency}" if currency in _GRAFANA_CURRENCIES else f"suffix: {currency}"
    return _GRAFANA[kpi.unit]


def target_badge(kpi: Kpi, currency: str) -> str:
    """The target as a dashboard title shows it: ``≤ 3 d``, ``≥ 99.9%``."""
    sign = "≤" if kpi.target.direction == "at_most" else "≥"
    return f"{sign} {_target_value(kpi, currency)}"


def target_words(kpi: Kpi, value: float | None = None) -> str:
    """The target in an alert's words, for any currency: ``at most 3d``, ``at least 0.999``.

    ``value``: a scope's own target value instead of the KPI's (same direction).
    """
    return f"{kpi.target.direction.replace('_', ' ')} {_target_value(kpi, None, value)}"


def _target_value(kpi: Kpi, currency: str | None, value: float | None = None) -> str:
    """The target's value: for a dashboard in ``currency``, or (None) for an alert text."""
    if value is None:
        value = kpi.target.value
    badge = currency is not None
    if kpi.unit == "seconds":
        whole = _whole(value, ((86400, "d"), (3600, "h"), (60, "min" if badge else "m")))
        if whole is None:
            return f"{value:g} s" if badge else f"{value:g}s"
        return f"{whole[0]:g} {whole[1]}" if badge else f"{int(whole[0])}{whole[1]}"
    if badge and kpi.unit == "ratio" and kpi.share:
        return f"{value * 100:g}%"
    if kpi.unit == "days":
        return f"{value:g} days"
    if kpi.unit == "currency":
        return f"{value:,.0f} {currency}" if badge else f"{value:,.0f} (reporting currency)"
    return f"{value:g}"


def alert_value(kpi: Kpi) -> str:
    """The Go template an alert prints the KPI's value with."""
    return _ALERT_VALUE.get(kpi.unit, "{{ $value }}")
