"""Retention: what the state may forget once the windows needing it were closed and written.

Panes whose every window closed before this batch fold into the balance base and go; old
timeline events fold into the timeline's horizon; applied ids older than the duplicate
horizon and entities past their retention go. Only windows closed by *earlier* batches
count: their closing survives any crash of this batch, so the panes are never needed again.
"""

from __future__ import annotations

import heapq

from streams.core.closing import TopicView
from streams.core.judge import Judge
from streams.core.lifecycle import ENTITY_RETENTION_S
from streams.core.panes import Panes
from streams.core.state import NEG_INF, Partitions
from streams.core.timelines import Timelines


class Retention:
    """Pruning of panes, timelines and applied ids, and the sweep of retired entities."""

    def __init__(
        self, partitions: Partitions, panes: Panes, timelines: Timelines, judge: Judge
    ) -> None:
        self.partitions = partitions
        self.panes = panes
        self.timelines = timelines
        self.judge = judge

    def prune(self, view: TopicView, upto: float | None) -> None:
        """Forget what only windows ending at or before ``upto`` needed."""
        if upto is None or upto == NEG_INF or upto == view.pruned_upto:
            return
        view.pruned_upto = upto
        for kpi in view.kpis:
            if kpi.kind == "panes":
                self.panes.prune(kpi, upto)
        self.timelines.prune(view.topic, upto)
        for (topic, _p), st in self.partitions.own.items():
            if topic == view.topic:
                self.judge.expire(st)

    def sweep_retired(self) -> None:
        """Delete the entities past retention (already treated as gone by every lookup)."""
        for st in self.partitions.own.values():
            retiring = st.retiring
            if not retiring:
                continue
            horizon = st.watermark - ENTITY_RETENTION_S
            data = st.data
            while retiring and retiring[0][0] < horizon:
                done, key = heapq.heappop(retiring)
                entity = data.get(key)
                # Unless a new lifecycle reused the id since (then it is not final).
                if entity is not None and entity.get("z") == done:
                    st.delete(key)
