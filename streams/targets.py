"""Targets as configuration: ``KPI_TARGETS_FILE``, a YAML file overriding the catalog's targets.

The built-in targets (``streams/kpis/*.py``) are the defaults; the file changes some fields
of some KPIs, and may give a scope (a dimension value) a target value of its own::

    dso: {value: 40, direction: at_most, windows: [1mo], scopes: {sales: 35}}
    invoice_error_rate: {value: 0.01}

The file is read with PyYAML's node API, so every error names its line. The worker (catalog
hash, target gauges), ``kpi rules``, ``kpi dashboards``, ``kpi get`` and ``kpi watch`` all
read the catalog through ``configured_catalog``. docs/OPERATIONS.md documents the format.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_args

import yaml

from schemas.errors import ConfigurationError
from streams.kpis.base import ROLLUP, WINDOWS, Direction, Kpi, Target

if TYPE_CHECKING:
    from streams.config import Settings

#: The variable naming the file (its errors start with it).
VARIABLE = "KPI_TARGETS_FILE"
#: The fields of one KPI's entry, in the order the docs list them.
FIELDS: tuple[str, ...] = ("value", "direction", "windows", "for", "severity", "goal", "scopes")
DIRECTIONS: tuple[str, ...] = get_args(Direction)
SEVERITIES: tuple[str, ...] = ("warning", "critical")
#: A dimension value (SPEC section 1); ``all`` is the roll-up's and never a scope here.
SCOPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

#: The shortest span of each tumbling window, in seconds: a clock change takes up to an hour
#: from a local day, week, month..., half an hour from a local hour (Australia/Lord_Howe);
#: the shortest fiscal quarter is February to April. The rolling 30d carries a miss on.
SHORTEST_SPAN_S = {
    "1h": 1800,
    "1d": 23 * 3600,
    "1w": 7 * 86400 - 3600,
    "1mo": 28 * 86400 - 3600,
    "1q": 89 * 86400 - 3600,
    "1y": 365 * 86400 - 3600,
}

_DURATION_PART = re.compile(r"(\d+)([smhdwy])")
_DURATION_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 365 * 86400}


def duration_seconds(duration: str) -> int:
    """Seconds of a Prometheus duration such as ``30m``, ``1d`` or ``1h30m``."""
    parts = _DURATION_PART.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        msg = f"not a Prometheus duration: {duration!r}"
        raise ValueError(msg)
    return sum(int(n) * _DURATION_UNIT_S[u] for n, u in parts)


def judging_problem(kpi: Kpi, window: str, for_: str) -> str | None:
    """Why ``kpi`` cannot be judged (alerted on) on ``window`` with ``for_``; None if it can.

    The window must be one of the KPI's (else there is no series to watch), and on a
    tumbling window ``for_`` must be shorter than its shortest span, else the miss could
    never last that long (the window starts afresh, a mean's series even vanishes).
    """
    if window not in kpi.windows:
        return (
            f"its target is judged on {window}, which is not one of its windows "
            f"({', '.join(kpi.windows)})"
        )
    shortest = SHORTEST_SPAN_S.get(window)
    if shortest is not None and duration_seconds(for_) >= shortest:
        return (
            f"a miss lasting for: {for_} never fits in its {window} window; judge it on a "
            "longer (or the rolling 30d) window"
        )
    return None


class TargetsError(ValueError):
    """A line of the targets file is wrong: ``<path>:<line>: <where>: <reason>``."""


def _fail(path: str, node: yaml.Node, where: str, reason: str) -> TargetsError:
    prefix = f"{where}: " if where else ""
    return TargetsError(f"{path}:{node.start_mark.line + 1}: {prefix}{reason}")


def _scalar(node: yaml.Node) -> Any:
    """A scalar node's value as YAML 1.1 (safe) reads it: int, float, bool, str or None."""
    if not isinstance(node, yaml.ScalarNode):
        return node  # the callers reject a collection where they want a scalar
    return yaml.SafeLoader("").construct_object(node)


def _mapping(path: str, node: yaml.Node, where: str, what: str) -> list[tuple[str, yaml.Node]]:
    """The entries of a mapping node, keys as written; a duplicate key is an error."""
    if not isinstance(node, yaml.MappingNode):
        raise _fail(path, node, where, f"expected {what}")
    seen: set[str] = set()
    entries = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise _fail(path, key, where, "a key must be a plain name")
        if key.value in seen:
            name = f"{where}.{key.value}" if where else key.value
            raise _fail(path, key, name, "given twice")
        seen.add(key.value)
        entries.append((key.value, value))
    return entries


def _number(path: str, node: yaml.Node, where: str) -> float:
    value = _scalar(node)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, node, where, f"expected a number, got {_shown(node)}")
    return value


def _choice(path: str, node: yaml.Node, where: str, choices: Sequence[str]) -> str:
    value = _scalar(node)
    if not isinstance(value, str) or value not in choices:
        raise _fail(path, node, where, f"expected one of {', '.join(choices)}, got {_shown(node)}")
    return value


def _shown(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _windows(path: str, node: yaml.Node, where: str) -> tuple[str, ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise _fail(path, node, where, f"expected a list of windows, e.g. [1d], got {_shown(node)}")
    windows: list[str] = []
    for item in node.value:
        name = item.value if isinstance(item, yaml.ScalarNode) else _shown(item)
        if name not in WINDOWS:
            raise _fail(path, item, where, f"unknown window {name!r} ({', '.join(WINDOWS)})")
        if name in windows:
            raise _fail(path, item, where, f"window {name} given twice")
        windows.append(name)
    return tuple(windows)


def _duration(path: str, node: yaml.Node, where: str) -> str:
    value = _scalar(node)
    if isinstance(value, str):
        try:
            duration_seconds(value)
        except ValueError:
            pass
        else:
            return value
    raise _fail(path, node, where, f"expected a duration such as 30m, 6h or 1d, got {_shown(node)}")


def _scopes(path: str, node: yaml.Node, where: str) -> tuple[tuple[str, float], ...]:
    scopes = []
    for scope, value in _mapping(path, node, where, "a mapping of scope: value"):
        if scope == ROLLUP:
            raise _fail(path, value, where, "all is the roll-up: its target is the KPI's value")
        if not SCOPE.match(scope):
            raise _fail(
                path,
                value,
                where,
                f"{scope!r} is not a dimension value (^[a-z0-9][a-z0-9_-]{{0,62}}$)",
            )
        scopes.append((scope, _number(path, value, f"{where}.{scope}")))
    return tuple(scopes)


def _target(path: str, kpi: Kpi, node: yaml.Node) -> Target:
    """The KPI's built-in target with the fields its entry gives."""
    name = kpi.name
    entries = _mapping(path, node, name, f"a mapping of target fields ({', '.join(FIELDS)})")
    given: dict[str, Any] = {}
    lines: dict[str, yaml.Node] = {}
    readers: Mapping[str, Callable[[str, yaml.Node, str], Any]] = {
        "value": _number,
        "direction": lambda p, n, w: _choice(p, n, w, DIRECTIONS),
        "windows": _windows,
        "for": _duration,
        "severity": lambda p, n, w: _choice(p, n, w, SEVERITIES),
        "goal": _goal,
        "scopes": _scopes,
    }
    for key, value in entries:
        reader = readers.get(key)
        if reader is None:
            raise _fail(path, value, name, f"unknown field {key!r} ({', '.join(FIELDS)})")
        given[key] = reader(path, value, f"{name}.{key}")
        lines[key] = value
    base = kpi.target
    # The built-in goal states the built-in number ("DSO <= 45"): a new value or direction
    # without a goal of its own leaves none rather than a wrong one.
    goal = base.goal
    if "value" in given or "direction" in given:
        goal = ""
    windows = given.get("windows", base.windows)
    target = dataclasses.replace(
        base,
        value=given.get("value", base.value),
        direction=given.get("direction", base.direction),
        window=windows[0],
        more_windows=windows[1:],
        for_=given.get("for", base.for_),
        severity=given.get("severity", base.severity),
        goal=given.get("goal", goal),
        scopes=given.get("scopes", base.scopes),
    )
    for window in target.windows:
        problem = judging_problem(kpi, window, target.for_)
        if problem is not None:
            field = "for" if "for" in lines and "windows" not in lines else "windows"
            raise _fail(path, lines.get(field, node), f"{name}.{field}", problem)
    return target


def _goal(path: str, node: yaml.Node, where: str) -> str:
    value = _scalar(node)
    if not isinstance(value, str):
        raise _fail(path, node, where, f"expected a text, got {_shown(node)}")
    return value


def parse_targets(text: str, path: str, catalog: Sequence[Kpi]) -> dict[str, Target]:
    """KPI name -> its target with the file's fields; ``TargetsError`` on the first problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}: " if mark is not None else ""
        reason = exc.problem or exc.context or "not YAML"
        msg = f"{path}:{line}not valid YAML: {reason}"
        raise TargetsError(msg) from None
    except yaml.YAMLError as exc:
        msg = f"{path}: not valid YAML: {exc}"
        raise TargetsError(msg) from None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.value == ""):
        return {}  # an empty file (or only comments): the built-in targets
    kpis = {k.name: k for k in catalog}
    targets = {}
    for name, node in _mapping(path, root, "", "a mapping of KPI names to their targets"):
        kpi = kpis.get(name)
        if kpi is None:
            raise _fail(path, node, "", f"unknown KPI {name!r} (one of {', '.join(kpis)})")
        targets[name] = _target(path, kpi, node)
    return targets


def load_targets(path: str, catalog: Sequence[Kpi]) -> dict[str, Target]:
    """The targets of the file at ``path`` (``TargetsError`` naming the path if unreadable)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        msg = f"cannot read {path}: {reason}"
        raise TargetsError(msg) from None
    return parse_targets(text, path, catalog)


def with_targets(catalog: Sequence[Kpi], targets: Mapping[str, Target]) -> tuple[Kpi, ...]:
    """The catalog with these targets in place of the built-in ones."""
    return tuple(
        dataclasses.replace(k, target=targets[k.name]) if k.name in targets else k for k in catalog
    )


def configured_catalog(settings: Settings) -> tuple[Kpi, ...]:
    """The catalog with ``KPI_TARGETS_FILE``'s targets (the built-in catalog without one)."""
    from streams.catalog import CATALOG

    if not settings.targets_file:
        return CATALOG
    try:
        targets = load_targets(settings.targets_file, CATALOG)
    except TargetsError as exc:  # the file changed since the settings were checked
        msg = f"bad setting {VARIABLE}: {exc}"
        raise ConfigurationError(msg) from None
    return with_targets(CATALOG, targets)
