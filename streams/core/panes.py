"""Panes: the additive parts of a KPI per pane kind, scope, partition and pane start.

A pane is the state key ``p|<kpi>|<kind>|<scope>|<start>`` holding the KPI's parts vector
(and, for a balance KPI, the balance change after the parts); the kinds are the local hour
(``1h``), day (``1d``) and month (``1mo``) of the calendar, and each window is read from the
panes of one kind (``streams/core/windows.py``). The index here points at the
very lists in the partition states (or replicas), mutated in place, so a window is read
without building or hashing a single key string. A window's parts are the sum of its panes
in partition order, panes in time order, so a value depends only on each partition's log:
replays give bit-identical results.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from streams.core import distributions, keys
from streams.core.calendar import Calendar
from streams.core.distributions import Aggregate, Dist, Summary
from streams.core.state import Partitions, PartitionState
from streams.core.windows import PANE_NAMES, Window
from streams.kpis.base import ROLLUP, Kpi

_UNTIL_MAX = 4096
#: A pane in the index: its state key and its parts vector (the list in the state).
Pane = tuple[str, list[float]]
#: Pane kind, vector width, has a balance, and (scope, key prefix, the partition's panes)
#: for the scope and the roll-up: what ``contribute`` needs per pane kind.
_Target = tuple[int, int, bool, tuple[tuple[str, str, dict[int, Pane]], ...]]
#: A pane's distribution in the index: its state key and its value (``distributions``).
DistPane = tuple[str, Dist]
#: Pane kind, the scope's key prefix and its partition's distributions, and the aggregates
#: of each window reading the kind, of the scope and of the roll-up.
_DistTarget = tuple[int, str, dict[int, DistPane], tuple[list[Aggregate], ...]]
#: At most this many aggregates per KPI, window and scope: the newest window's and those
#: still to close (``_MAX_AGGREGATES - 1`` of them within the grace period is plenty).
_MAX_AGGREGATES = 4


class Panes:
    """The pane index of every KPI kept in panes, and reading windows from it."""

    def __init__(
        self,
        catalog: dict[str, Kpi],
        specs: dict[str, tuple[Window, ...]],
        partitions: Partitions,
        calendar: Calendar,
    ) -> None:
        self.catalog = catalog
        self.specs = specs
        self.partitions = partitions
        self.calendar = calendar
        #: Per KPI, the pane kinds its windows read, each with those windows.
        self.kinds: dict[str, dict[int, tuple[Window, ...]]] = {}
        for name, windows in specs.items():
            kinds: dict[int, tuple[Window, ...]] = {}
            for w in windows:
                kinds[w.pane] = (*kinds.get(w.pane, ()), w)
            self.kinds[name] = dict(sorted(kinds.items()))
        #: (kpi, pane kind name, scope) -> partition -> pane start -> pane.
        self.by_window: dict[tuple[str, str, str], dict[int, dict[int, Pane]]] = defaultdict(dict)
        # Per pane kind, the bounds of the pane the last event fell in: events come in
        # about time order, so most find their pane here.
        self._last: list[list[float]] = [[0.0, 0.0] for _ in PANE_NAMES]
        # (kpi, pane kind) -> pane start -> when the pane may go (asked every batch).
        self._until: dict[tuple[str, int], dict[int, int]] = {}
        #: Per KPI, every scope it has panes or a balance for.
        self.scopes: dict[str, set[str]] = defaultdict(set)
        # (kpi, scope, partition) -> where a contribution goes, per window spec.
        self._targets: dict[tuple[str, str, int], tuple[_Target, ...]] = {}
        #: Duration KPIs: (kpi, pane kind name, scope) -> partition -> pane start -> the
        #: pane's distribution (beside its pane, created and pruned with it).
        self.dists: dict[tuple[str, str, str], dict[int, dict[int, DistPane]]] = defaultdict(dict)
        self._dist_targets: dict[tuple[str, str, int], tuple[_DistTarget, ...]] = {}
        # (kpi, window, scope) -> the aggregates of the windows read lately (never replaced,
        # only emptied: the targets above hold them).
        self._aggregates: dict[tuple[str, str, str], list[Aggregate]] = defaultdict(list)

    def index(self, partition: int, key: str, value: Any) -> tuple[str, str] | None:
        """Keep the index in step with one pane or balance key (``value`` None: gone).

        Returns the (kpi, scope) of a pane or balance key, None for other keys.
        """
        kind = keys.kind(key)
        if kind == keys.PANE or kind == keys.DISTRIBUTION:
            kpi, window, scope, start = keys.parse_pane(key)
            if window not in PANE_NAMES:
                return None  # version 1's own 30d panes: see ``obsolete``
            if kind == keys.PANE:
                panes = self.by_window[(kpi, window, scope)]
            else:
                panes = self.dists[(kpi, window, scope)]
                self._drop_aggregates(kpi, window, scope, start)
            if value is not None:
                panes.setdefault(partition, {})[start] = (key, value)
                self.scopes[kpi].add(scope)
            else:
                of_partition = panes.get(partition)
                if of_partition is not None:
                    of_partition.pop(start, None)
            return kpi, scope
        if kind == keys.BALANCE:
            kpi, window, scope = keys.parse_balance(key)
            if window not in PANE_NAMES:
                return None
            if value is not None:
                self.scopes[kpi].add(scope)
            return kpi, scope
        return None

    # -- applying ----------------------------------------------------------------------

    def contribute(
        self,
        st: PartitionState,
        kpi: str,
        scope: str,
        t: float,
        parts: tuple[float, ...],
        balance: float,
    ) -> None:
        """Add one event's parts (and balance change) to its pane of every kind."""
        targets = self._targets.get((kpi, scope, st.partition))
        if targets is None:
            targets = self._targets[(kpi, scope, st.partition)] = self._pane_targets(
                kpi, scope, st.partition
            )
        n = len(parts)
        for kind, width, has_balance, scoped in targets:
            pane = self._pane_start(kind, t)
            for s, prefix, panes in scoped:
                entry = panes.get(pane)
                if entry is None:
                    key = prefix + str(pane)
                    vec: list[float] = [0.0] * width
                    st.put(key, vec)
                    panes[pane] = (key, vec)
                    self.scopes[kpi].add(s)
                else:
                    vec = st.edit(entry[0])
                # Unrolled: a loop over the parts cost more than the additions.
                if n == 2:
                    vec[0] += parts[0]
                    vec[1] += parts[1]
                else:
                    for i in range(n):
                        vec[i] += parts[i]
                if has_balance:
                    vec[-1] += balance

    def _pane_start(self, kind: int, t: float) -> int:
        """The start of the pane of ``kind`` holding ``t``.

        Per pane kind, the bounds of the pane the last event fell in are kept: events come
        in about time order, so most find their pane there.
        """
        last = self._last[kind]
        if last[0] <= t < last[1]:
            return int(last[0])
        pane, end = self.calendar.pane(kind, t)
        last[0] = pane
        last[1] = end
        return pane

    def distribute(
        self, st: PartitionState, kpi: str, scope: str, t: float, seconds: float, entity: str
    ) -> None:
        """Add one duration (of ``entity``) to its pane's distribution of every kind."""
        targets = self._dist_targets.get((kpi, scope, st.partition))
        if targets is None:
            targets = self._dist_targets[(kpi, scope, st.partition)] = self._distribution_targets(
                kpi, scope, st.partition
            )
        index = distributions.bucket(seconds) if seconds > 0.0 else 0
        for kind, prefix, dists, aggregates in targets:
            pane = self._pane_start(kind, t)
            entry = dists.get(pane)
            if entry is None:
                key = prefix + str(pane)
                dist = distributions.new()
                st.put(key, dist)
                dists[pane] = (key, dist)
            else:
                dist = st.edit(entry[0])
            distributions.add(dist, seconds, index, entity)
            for of_window in aggregates:
                for aggregate in of_window:
                    if aggregate.start <= pane < aggregate.end:
                        aggregate.add(seconds, index, entity)

    def _distribution_targets(
        self, kpi_name: str, scope: str, partition: int
    ) -> tuple[_DistTarget, ...]:
        return tuple(
            (
                kind,
                keys.distribution_prefix(kpi_name, PANE_NAMES[kind], scope),
                self.dists[(kpi_name, PANE_NAMES[kind], scope)].setdefault(partition, {}),
                tuple(
                    self._aggregates[(kpi_name, w.name, s)]
                    for s in (scope, ROLLUP)
                    for w in windows
                ),
            )
            for kind, windows in self.kinds[kpi_name].items()
        )

    def _drop_aggregates(self, kpi: str, pane_kind: str, scope: str, start: int) -> None:
        """A pane's distribution changed other than by ``distribute``: rebuild what read it."""
        kinds = self.kinds.get(kpi)
        if kinds is None:
            return
        for w in kinds.get(PANE_NAMES.index(pane_kind), ()):
            for s in (scope, ROLLUP):
                aggregates = self._aggregates.get((kpi, w.name, s))
                if aggregates:
                    aggregates[:] = [a for a in aggregates if not a.start <= start < a.end]

    def _pane_targets(self, kpi_name: str, scope: str, partition: int) -> tuple[_Target, ...]:
        kpi = self.catalog[kpi_name]
        has_balance = kpi.balance is not None
        out = []
        for kind in self.kinds[kpi_name]:
            name = PANE_NAMES[kind]
            scoped = tuple(
                (
                    s,
                    keys.pane_prefix(kpi_name, name, s),
                    # The per-partition dicts of the index are never replaced, only emptied.
                    self.by_window[(kpi_name, name, s)].setdefault(partition, {}),
                )
                for s in (scope, ROLLUP)
            )
            out.append((kind, kpi.width, has_balance, scoped))
        return tuple(out)

    # -- reading -----------------------------------------------------------------------

    def value(self, kpi: Kpi, spec: Window, scope: str, end: int) -> tuple[float | None, int]:
        """The value and event count of the window ending at ``end``."""
        parts, b0, b1 = self._parts(kpi, spec, scope, end)
        return kpi.read(parts, b0, b1, spec.days(end)), int(parts[-1])

    def distribution(
        self, kpi: Kpi, spec: Window, scope: str, end: int, *, closing: bool = False
    ) -> Summary:
        """Percentiles and worst entities of the window ending at ``end`` (duration KPIs).

        ``closing``: the window is read for the last time (closed and written), so its
        aggregate goes, and none is built for it.
        """
        aggregates = self._aggregates[(kpi.name, spec.name, scope)]
        for i, aggregate in enumerate(aggregates):
            if aggregate.end == end:
                if closing:
                    del aggregates[i]
                return aggregate.summary()
        dists = self._window_dists(kpi, spec, scope, end)
        if closing:
            return distributions.summarize(dists)
        aggregate = Aggregate(spec.start_of(end), end, dists)
        if len(aggregates) >= _MAX_AGGREGATES:
            del aggregates[0]
        aggregates.append(aggregate)
        return aggregate.summary()

    def distribution_from_panes(self, kpi: Kpi, spec: Window, scope: str, end: int) -> Summary:
        """``distribution`` merged from the panes again, without aggregates (for tests)."""
        return distributions.summarize(self._window_dists(kpi, spec, scope, end))

    def _window_dists(self, kpi: Kpi, spec: Window, scope: str, end: int) -> list[Dist]:
        """The distributions of the panes of the window ending at ``end``.

        The roll-up keeps none of its own: its window reads every scope's (counts add and
        ten-longest lists merge, exactly, across scopes as across partitions), which keeps
        the densest sketches out of the state and its changelog.
        """
        scopes = [scope] if scope != ROLLUP else sorted(self.scopes[kpi.name] - {ROLLUP})
        starts = spec.pane_starts(end)
        found: list[Dist] = []
        n_partitions = self.partitions.n_partitions[kpi.topic]
        for s in scopes:
            by_partition = self.dists.get((kpi.name, spec.pane_name, s))
            if by_partition:
                found.extend(_in_order(by_partition, n_partitions, starts))
        return found

    def _parts(
        self, kpi: Kpi, spec: Window, scope: str, end: int
    ) -> tuple[list[float], float, float]:
        """Summed parts of the window ending at ``end`` plus balances at its start and end."""
        width = kpi.width
        by_partition = self.by_window.get((kpi.name, spec.pane_name, scope), {})
        starts = spec.pane_starts(end)
        # Partitions in order, panes in time order: the float sums depend on that order.
        vecs = _in_order(by_partition, self.partitions.n_partitions[kpi.topic], starts)
        total = _sum_vectors(vecs, width)
        if kpi.balance is None:
            return total, 0.0, 0.0
        # Panes are aligned, so "ends at or before ``end``" is "starts before ``end``"; the
        # balance at the window start is the one at its end less the window's own deltas.
        balance_end = self._balance_end(kpi, spec, scope, end)
        return total[:-1], balance_end - total[-1], balance_end

    def _balance_end(self, kpi: Kpi, spec: Window, scope: str, end: int) -> float:
        """Balance at ``end``: every partition's base plus its retained panes before ``end``.

        Per partition a left fold in time order (base, then panes by start), then the
        partitions in order: the base is itself that fold over the panes pruned so far, so
        the float result does not depend on where batches happened to prune.
        """
        topic = kpi.topic
        base_key = keys.balance(kpi.name, spec.pane_name, scope)
        by_partition = self.by_window.get((kpi.name, spec.pane_name, scope), {})
        total = 0.0
        for p in range(self.partitions.n_partitions[topic]):
            st = self.partitions.view(topic, p)
            if st is None:
                continue
            partition_balance = st.data.get(base_key, 0.0)
            panes = by_partition.get(p)
            if panes:
                for start in sorted(s for s in panes if s < end):
                    partition_balance += panes[start][1][-1]
            total += partition_balance
        return total

    def window_ends(
        self, kpi: Kpi, spec: Window, scope: str, after: float, upto: float
    ) -> list[int]:
        """Ends ``e`` of the windows with ``after < e <= upto`` that hold at least one pane."""
        starts: set[int] = set()
        for panes in self.by_window.get((kpi.name, spec.pane_name, scope), {}).values():
            starts.update(panes)
        if not starts:
            return []
        # None ends at or before the first pane, nor after the last window of the last pane.
        last = min(upto, spec.window_end_of_pane(max(starts)))
        ends = []
        for e in spec.window_ends_between(max(after, min(starts)), last):
            if any(start in starts for start in spec.pane_starts(e)):
                ends.append(e)
        return ends

    # -- pruning -----------------------------------------------------------------------

    def prune(self, kpi: Kpi, upto: float) -> None:
        """Fold the panes of our own partitions whose every window ends by ``upto``.

        A balance KPI's pane moves its balance change into the balance base first.
        """
        for kind, windows in self.kinds[kpi.name].items():
            name = PANE_NAMES[kind]
            for scope in list(self.scopes[kpi.name]):
                by_partition = self.by_window.get((kpi.name, name, scope))
                if not by_partition:
                    continue
                for p in sorted(by_partition):
                    st = self.partitions.own.get((kpi.topic, p))
                    panes = by_partition[p]
                    if st is None or not panes:
                        continue
                    # In time order: the base is a float sum, and a replay must fold in the
                    # same order. The last window of a pane ends no earlier than that of an
                    # earlier pane, so the done panes come first.
                    for start in sorted(panes):
                        if self._kept_until(kpi.name, kind, windows, start) > upto:
                            break
                        key, vec = panes.pop(start)
                        if kpi.balance:
                            base_key = keys.balance(kpi.name, name, scope)
                            st.put(base_key, st.data.get(base_key, 0.0) + vec[-1])
                        st.delete(key)
                        if kpi.distribution:
                            dist = self.dists[(kpi.name, name, scope)].get(p, {}).pop(start, None)
                            if dist is not None:
                                st.delete(dist[0])
                                self._drop_aggregates(kpi.name, name, scope, start)

    def _kept_until(self, kpi: str, kind: int, windows: tuple[Window, ...], start: int) -> int:
        """When a pane may go: the end of the last window (of those reading it) holding it."""
        until = self._until.setdefault((kpi, kind), {})
        found = until.get(start)
        if found is None:
            if len(until) >= _UNTIL_MAX:
                until.clear()
            found = until[start] = max(w.window_end_of_pane(start) for w in windows)
        return found


def _in_order(
    by_partition: dict[int, dict[int, tuple[str, Any]]], n_partitions: int, starts: Sequence[int]
) -> list[Any]:
    """The values of the panes starting at ``starts``: partitions in order, panes in time order."""
    found: list[Any] = []
    for p in range(n_partitions):
        panes = by_partition.get(p)
        if panes:
            for start in starts:
                entry = panes.get(start)
                if entry is not None:
                    found.append(entry[1])
    return found


def _sum_vectors(vecs: Sequence[Sequence[float]], width: int) -> list[float]:
    """Element-wise sum, each element folded left from 0.0 in the order of ``vecs``.

    Unrolled for the usual widths (a Python loop over ``range(width)`` per vector cost
    more than the additions).
    """
    if width == 2:
        a = b = 0.0
        for v in vecs:
            a += v[0]
            b += v[1]
        return [a, b]
    if width == 3:
        a = b = c = 0.0
        for v in vecs:
            a += v[0]
            b += v[1]
            c += v[2]
        return [a, b, c]
    total = [0.0] * width
    for v in vecs:
        for i in range(width):
            total[i] += v[i]
    return total
