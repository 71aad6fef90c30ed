"""Judging messages (SPEC section 1): duplicates, cardinality and the time rules' constants.

The checks run in the engine's loop in the order of docs/SEMANTICS.md; this module keeps
what they need per input partition: the applied event ids of the last 7 days of event time
(persisted in groups) and the dimension values admitted so far.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import InvalidEvent
from streams.core import keys
from streams.core.state import NEG_INF, PartitionState

#: An event id applied within this much event time before the watermark is a duplicate.
DEDUP_WINDOW_S = 7 * 86400
# Applied ids are persisted in groups; the open group is rewritten (with its value before
# the batch) at every commit that adds to it, so small groups keep that write amplification
# low (a group of 512 cost ~470 changelog bytes per event in the benchmark).
DEDUP_GROUP = 64
LATE = "late"
CARDINALITY = "cardinality"
#: Event fields that carry a dimension value (follow-up events inherit theirs).
DIMENSION_FIELDS = ("department", "service", "queue")

TopicPartition = tuple[str, int]

_DIMENSIONS_OF_TYPE: dict[str, tuple[str, ...]] = {}
#: No new dimension value (shared, never mutated: most events bring none).
_NO_VALUES: list[tuple[str, str]] = []


class Judge:
    """Per input partition: the applied ids (duplicates) and admitted values (cardinality)."""

    def __init__(self, max_dimension_values: int) -> None:
        self.max_dimension_values = max_dimension_values
        #: (topic, partition) -> event_id -> occurred_at of the applied events.
        self.applied: dict[TopicPartition, dict[str, float]] = {}
        # (topic, partition) -> group key -> latest occurred_at in the group.
        self._groups: dict[TopicPartition, dict[str, float]] = {}
        # (topic, partition) -> dimension -> admitted values.
        self._admitted: dict[TopicPartition, dict[str, set[str]]] = {}

    def index(self, state: PartitionState) -> None:
        """Rebuild the indexes of a (restored) partition state."""
        tp = (state.topic, state.partition)
        applied: dict[str, float] = {}
        groups: dict[str, float] = {}
        for key in sorted(state.keys_with_prefix(keys.APPLIED), key=keys.applied_group_order):
            group = state.data[key]
            for event_id, t in group:
                applied[event_id] = t
            groups[key] = max((t for _id, t in group), default=NEG_INF)
        self.applied[tp] = applied
        self._groups[tp] = groups
        self._admitted[tp] = {
            keys.admitted_dimension(key): set(state.data[key])
            for key in state.keys_with_prefix(keys.ADMITTED)
        }

    def forget(self, tp: TopicPartition) -> None:
        """Drop a partition's indexes (it moved to another worker)."""
        self.applied.pop(tp, None)
        self._groups.pop(tp, None)
        self._admitted.pop(tp, None)

    def new_dimension_values(self, tp: TopicPartition, event: Any) -> list[tuple[str, str]]:
        """Dimension values this event would add; ``cardinality`` if over the limit."""
        dimensions = _DIMENSIONS_OF_TYPE.get(event.type)
        if dimensions is None:
            # Looking a missing field up on a pydantic model is slow (``__getattr__``): learn
            # once per event type which dimension fields it has.
            fields = type(event).model_fields
            dimensions = _DIMENSIONS_OF_TYPE[event.type] = tuple(
                d for d in DIMENSION_FIELDS if d in fields
            )
        if not dimensions:
            return _NO_VALUES
        admitted = self._admitted[tp]
        new = _NO_VALUES
        for dimension in dimensions:
            value = getattr(event, dimension)
            known = admitted.get(dimension, ())
            if value in known:
                continue
            if len(known) >= self.max_dimension_values:
                detail = (
                    f"{dimension} {value!r} would be distinct value number "
                    f"{len(known) + 1} (limit {self.max_dimension_values})"
                )
                raise InvalidEvent(CARDINALITY, detail)
            if new is _NO_VALUES:
                new = []
            new.append((dimension, value))
        return new

    def remember(self, st: PartitionState, tp: TopicPartition, event_id: str, t: float) -> None:
        """Record an applied event id (in the state, grouped, and in the index)."""
        # Applied ids are persisted in groups of up to DEDUP_GROUP ids per record, not one
        # record per id: a changelog write per event would dominate the cost.
        groups = self._groups[tp]
        key = next(reversed(groups), "")
        group = st.get(key) if key else None
        if group is None or len(group) >= DEDUP_GROUP:
            key = keys.applied_group(st.seq, st.applied_offset)
            group = []
            st.put(key, group)
            groups[key] = t
        else:
            group = st.edit(key)
            if t > groups[key]:
                groups[key] = t
        # A tuple, not a list: the garbage collector stops tracking a tuple of atoms, and
        # these live for a week (orjson writes both as the same JSON array).
        group.append((event_id, t))
        self.applied[tp][event_id] = t

    def admit(self, st: PartitionState, dimension: str, value: str) -> None:
        """Record a dimension value as admitted."""
        key = keys.admitted(dimension)
        values = st.get(key)
        if values is None:
            values = []
            st.put(key, values)
        else:
            values = st.edit(key)
        values.append(value)
        self._admitted[(st.topic, st.partition)].setdefault(dimension, set()).add(value)

    def expire(self, st: PartitionState) -> None:
        """Forget the applied ids a partition's watermark left behind ``DEDUP_WINDOW_S``."""
        tp = (st.topic, st.partition)
        expire = st.watermark - DEDUP_WINDOW_S
        applied = self.applied[tp]
        groups = self._groups[tp]
        for key in [k for k, latest in groups.items() if latest < expire]:
            for event_id, t in st.data[key]:
                if applied.get(event_id) == t:
                    del applied[event_id]
            st.delete(key)
            del groups[key]
