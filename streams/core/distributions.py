"""Distributions of the duration KPIs: a relative-error sketch and the worst entities per pane.

SPEC section 2 asks, for each window and scope of a duration KPI, the percentiles ``p50``,
``p90``, ``p99`` of its durations within 1% relative error, and its ten longest
measurements exactly. Both must merge across the panes a window reads and across input
partitions, as the parts do; both do:

- **The sketch** (DDSketch's logarithmic mapping): a duration ``x > 0`` falls in bucket
  ``i = ceil(log_gamma(x))``, the interval ``(gamma^(i-1), gamma^i]``; a bucket is reported
  as ``2 gamma^i / (gamma + 1)``, which is within ``alpha = (gamma - 1) / (gamma + 1)`` of
  every value in it. Counts add, so the sketch of a window is the bucket-wise sum of its
  panes' sketches, exact to the same bound: the q-percentile's rank ``k = floor(q (n - 1))``
  is found among exact counts, and the reported value is within ``alpha`` of the duration
  of that rank. ``alpha`` is 0.99%, under the SPEC's 1% with room for the float rounding of
  ``log`` at a bucket edge. Durations of 0 are counted apart and reported as 0.
- **The worst**: each pane keeps its ten longest measurements, ordered by seconds
  descending, then id ascending (a total order); the ten longest of a window are among the
  ten longest of its panes, so merging the panes' lists and keeping ten is exact.

A pane's distribution is the state key ``q|<kpi>|<kind>|<scope>|<start>`` beside the pane
``p|...`` (the roll-up ``all`` has none: its windows merge every scope's). It holds
``[zeros, lo, counts, worst]``: the count of zero durations, the index of the first bucket,
the dense bucket counts from there, and the worst as one flat list
``[seconds, id, seconds, id, ...]``. Dense counts serialise small and update with one index;
a pane's durations spread over a few hundred buckets at most (a minute to a month is 540).
Flat lists keep the garbage collector's work down: a list per worst entry made the
collector scan ten more containers per pane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

#: The sketch's relative accuracy (SPEC section 2 allows 1%).
ALPHA: Final = 0.0099
GAMMA: Final = (1.0 + ALPHA) / (1.0 - ALPHA)
_INV_LOG_GAMMA: Final = 1.0 / math.log(GAMMA)
#: The percentiles reported, in hundredths (``p50``, ``p90``, ``p99``).
PERCENTS: Final = (50, 90, 99)
#: How many of the longest measurements a window lists.
WORST_N: Final = 10

#: A pane's distribution, as kept in the state: ``[zeros, lo, counts, worst]``.
Dist = list[Any]
#: What a window's distribution reads as: ``(p50, p90, p99)`` (None without durations) and
#: the worst ``(id, seconds)``, longest first.
Summary = tuple[float | None, float | None, float | None, tuple[tuple[str, float], ...]]

EMPTY_SUMMARY: Summary = (None, None, None, ())


def new() -> Dist:
    """An empty pane distribution."""
    return [0, 0, [], []]


def bucket(seconds: float) -> int:
    """The sketch bucket of a duration > 0."""
    return math.ceil(math.log(seconds) * _INV_LOG_GAMMA)


def bucket_value(index: int) -> float:
    """What a bucket reports: within ``ALPHA`` of every duration in it."""
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def add(dist: Dist, seconds: float, index: int, entity: str) -> None:
    """Count one duration (its bucket ``index`` precomputed; any for 0) and offer its entity."""
    if seconds <= 0.0:
        dist[0] += 1
    else:
        counts: list[int] = dist[2]
        lo: int = dist[1]
        size = len(counts)
        if size == 0:
            dist[1] = index
            counts.append(1)
        else:
            pos = index - lo
            if 0 <= pos < size:
                counts[pos] += 1
            elif pos >= size:
                for _ in range(pos - size):
                    counts.append(0)
                counts.append(1)
            else:
                counts[0:0] = [0] * (-pos)
                counts[0] = 1
                dist[1] = index
    offer(dist[3], seconds, entity)


def offer(worst: list[Any], seconds: float, entity: str) -> None:
    """Keep ``entity`` in a flat worst list if it is among the ``WORST_N`` longest.

    ``worst`` is ``[seconds, id, ...]`` ordered by seconds descending, then id ascending.
    """
    size = len(worst)
    if size == 2 * WORST_N:
        last_s: float = worst[size - 2]
        if seconds < last_s or (seconds == last_s and entity >= worst[size - 1]):
            return
        worst.pop()
        worst.pop()
        size -= 2
    i = size
    while i > 0:
        prev_s: float = worst[i - 2]
        if prev_s > seconds or (prev_s == seconds and worst[i - 1] <= entity):
            break
        i -= 2
    worst.insert(i, entity)
    worst.insert(i, seconds)


def summarize(dists: Sequence[Dist]) -> Summary:
    """The percentiles and the worst of the window whose panes hold ``dists``."""
    zeros, lo, merged = _merge(dists)
    return _summary(zeros, lo, merged, _worst(dists))


def _merge(dists: Sequence[Dist]) -> tuple[int, int, list[int]]:
    """Zero count, first bucket and dense bucket counts of the sum of ``dists``."""
    zeros = 0
    lo = 0
    hi = 0
    found = False
    for d in dists:
        zeros += d[0]
        counts: list[int] = d[2]
        if counts:
            d_lo: int = d[1]
            d_hi = d_lo + len(counts)
            if not found:
                lo, hi, found = d_lo, d_hi, True
            else:
                lo = min(lo, d_lo)
                hi = max(hi, d_hi)
    merged = [0] * (hi - lo)
    for d in dists:
        counts = d[2]
        offset: int = d[1] - lo
        for i, c in enumerate(counts):
            if c:
                merged[offset + i] += c
    return zeros, lo, merged


def _summary(
    zeros: int, lo: int, counts: list[int], worst: tuple[tuple[str, float], ...]
) -> Summary:
    n = zeros + sum(counts)
    if n == 0:
        return EMPTY_SUMMARY
    values: list[float | None] = []
    for percent in PERCENTS:
        rank = percent * (n - 1) // 100  # the SPEC's floor(q (n - 1)), in integers
        values.append(_value_at(rank, zeros, counts, lo))
    return values[0], values[1], values[2], worst


def _value_at(rank: int, zeros: int, counts: list[int], lo: int) -> float:
    """The reported value of the duration at ``rank`` (0-based, ascending)."""
    if rank < zeros:
        return 0.0
    seen = zeros
    size = len(counts)
    start = 0
    while start < size:
        # Whole blocks first (``sum`` of a slice runs in C), then the buckets of one.
        in_block = sum(counts[start : start + _BLOCK])
        if seen + in_block <= rank:
            seen += in_block
            start += _BLOCK
            continue
        return _in_block(counts, start, min(start + _BLOCK, size), seen, rank, lo)
    msg = "rank beyond the count"  # pragma: no cover - n counts every rank
    raise AssertionError(msg)  # pragma: no cover


def _in_block(counts: list[int], first: int, stop: int, seen: int, rank: int, lo: int) -> float:
    """The value of the duration at ``rank``, which is among ``counts[first:stop]``."""
    for i in range(first, stop):
        seen += counts[i]
        if seen > rank:
            return bucket_value(lo + i)
    msg = "rank beyond the count"  # pragma: no cover - the block holds the rank
    raise AssertionError(msg)  # pragma: no cover


def _worst(dists: Sequence[Dist]) -> tuple[tuple[str, float], ...]:
    """The ``WORST_N`` longest of the panes' worst lists (each is longest first)."""
    worst: list[Any] = []
    for d in dists:
        pane: list[Any] = d[3]
        for i in range(0, len(pane), 2):
            seconds: float = pane[i]
            if len(worst) == 2 * WORST_N and seconds < worst[2 * WORST_N - 2]:
                break  # the rest of this pane's list is shorter still
            offer(worst, seconds, pane[i + 1])
    return tuple((str(worst[i + 1]), float(worst[i])) for i in range(0, len(worst), 2))


#: Buckets summed at a time (at C speed) when a percentile's rank is looked for; an
#: ``Aggregate`` keeps the count of each block of as many.
_BLOCK_BITS: Final = 5
_BLOCK: Final = 1 << _BLOCK_BITS


class Aggregate:
    """The running merge of the distributions of one window's panes.

    A window's percentiles are read every batch that touches it; merging its panes again
    each time cost as much as applying the events (30 day panes of a few hundred buckets for
    ``30d``). An aggregate is built once from the panes and then kept in step: every
    duration added to one of its panes is added to it too (``Panes.distribute``), and any
    other change to its panes (a replica's update, a restore, pruning) drops it, to be built
    again. It is itself a pane-like distribution (``[zeros, lo, counts, worst]``, updated
    by ``add``) plus the count per block of 32 buckets, so that a percentile is found by
    walking a few dozen blocks and then the buckets of one.
    """

    __slots__ = ("start", "end", "dist", "blocks", "_summary")

    def __init__(self, start: int, end: int, dists: Sequence[Dist]) -> None:
        self.start = start
        self.end = end
        zeros, lo, merged = _merge(dists)
        worst: list[Any] = []
        for entity, seconds in _worst(dists):
            worst.append(seconds)
            worst.append(entity)
        self.dist: Dist = [zeros, lo, merged, worst]
        #: Block (bucket index >> 5) -> how many durations its buckets hold.
        self.blocks: dict[int, int] = {}
        blocks = self.blocks
        for i, c in enumerate(merged):
            if c:
                block = (lo + i) >> _BLOCK_BITS
                blocks[block] = blocks.get(block, 0) + c
        self._summary: Summary | None = None

    def add(self, seconds: float, index: int, entity: str) -> None:
        """Count one duration added to one of the window's panes."""
        self._summary = None
        add(self.dist, seconds, index, entity)
        if seconds > 0.0:
            block = index >> _BLOCK_BITS
            self.blocks[block] = self.blocks.get(block, 0) + 1

    def summary(self) -> Summary:
        """Percentiles and worst entities, as ``summarize`` gives them for the panes."""
        found = self._summary
        if found is not None:
            return found
        dist = self.dist
        zeros: int = dist[0]
        n = zeros + sum(self.blocks.values())
        if n == 0:
            found = EMPTY_SUMMARY
        else:
            order = sorted(self.blocks.items())
            values: list[float | None] = []
            for percent in PERCENTS:
                rank = percent * (n - 1) // 100
                values.append(self._value_at(rank, zeros, order))
            flat: list[Any] = dist[3]
            worst = tuple((str(flat[i + 1]), float(flat[i])) for i in range(0, len(flat), 2))
            found = (values[0], values[1], values[2], worst)
        self._summary = found
        return found

    def _value_at(self, rank: int, zeros: int, order: list[tuple[int, int]]) -> float:
        if rank < zeros:
            return 0.0
        seen = zeros
        lo: int = self.dist[1]
        counts: list[int] = self.dist[2]
        for block, in_block in order:
            if seen + in_block <= rank:
                seen += in_block
                continue
            first = max((block << _BLOCK_BITS) - lo, 0)
            stop = min(((block + 1) << _BLOCK_BITS) - lo, len(counts))
            return _in_block(counts, first, stop, seen, rank, lo)
        msg = "rank beyond the count"  # pragma: no cover - n counts every rank
        raise AssertionError(msg)  # pragma: no cover
