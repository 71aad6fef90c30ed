"""Replicas: read-only copies of the partitions other workers own, fed from their changelogs.

Every worker can then read any window, and the leader of a topic closes its windows over
all of the topic's partitions. Whole commits only: a commit's records are held until its
meta record (the last one) arrives, so a window is never read from half a commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from streams.core import keys
from streams.core.state import Partitions, PartitionState, meta_watermark

TopicPartition = tuple[str, int]
#: Called for every key a replica's commit changed: (topic, partition, key, new value or
#: None); returns the (kpi, scope) whose windows the key feeds, None for a timeline.
Indexer = Callable[[str, int, str, Any], "tuple[str, str] | None"]


class Replicas:
    """The replicas of an engine: applying changelog records, following and catching up."""

    def __init__(
        self,
        partitions: Partitions,
        index: Indexer,
        clock: Callable[[], float],
        last_input: dict[TopicPartition, float],
    ) -> None:
        self.partitions = partitions
        self._index = index
        self._clock = clock
        # Per replica, the records of a commit whose meta record has not arrived yet.
        self._pending: dict[TopicPartition, list[tuple[str, Any]]] = {}
        # Partitions followed as replicas, and those of them read up to where the changelog
        # ended when following began: only then is a replica a view of a whole commit (a
        # compacted changelog may hold a commit's earlier records behind a later one).
        self._following: set[TopicPartition] = set()
        self._caught_up: set[TopicPartition] = set()
        #: (kpi, scope) whose panes or balances replicas changed since the last batch, and
        #: whether a timeline did: their newest windows are read again.
        self.touched: set[tuple[str, str]] = set()
        self.timelines_touched = False
        # Wall clock when a partition last showed new input (shared with the engine, for
        # the idle-partition rule).
        self._last_input = last_input

    def apply(
        self, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]
    ) -> None:
        """Apply changelog records of a partition this engine does not own.

        A pruning commit moves a pane's amount into the balance base and deletes the pane;
        applied halfway, a balance would count it twice or not at all. Records of a commit
        that never completed (its writer crashed) are applied with the next complete one,
        which rewrites every key they touched (``PartitionState.restore``).
        """
        tp = (topic, partition)
        if tp in self.partitions.own:
            return  # our own state is the authority, and fresher
        replica = self.partitions.replicas.get(tp)
        if replica is None:
            replica = self.partitions.replicas[tp] = PartitionState(topic, partition)
        pending = self._pending.setdefault(tp, [])
        for raw_key, raw_value in records:
            if raw_key is None:
                continue  # not a record of ours: every changelog record has a key
            if raw_key == b"m":
                for key, value in pending:
                    if value is None and key not in replica.data:
                        continue
                    replica.mirror(key, value)
                    changed = self._index(topic, partition, key, value)
                    # What changed is read again at the next batch (the newest windows).
                    if changed is not None:
                        self.touched.add(changed)
                    else:
                        self.timelines_touched = True
                pending.clear()
                if raw_value is not None:
                    meta = orjson.loads(raw_value)
                    replica.watermark = meta_watermark(meta)
                    applied = int(meta["a"])
                    if applied > replica.applied_offset:
                        # Its owner took new input: the partition is not idle.
                        replica.applied_offset = applied
                        self._last_input[tp] = self._clock()
                continue
            key = raw_key.decode()
            if not keys.is_view(key):
                continue  # entities, applied ids, admitted values: not needed to read windows
            pending.append((key, None if raw_value is None else orjson.loads(raw_value)["v"]))

    def follow(self, topic: str, partition: int) -> None:
        """A replica of this partition is being read from its start (not caught up yet)."""
        self._following.add((topic, partition))
        self._caught_up.discard((topic, partition))

    def caught_up(self, topic: str, partition: int) -> bool:
        """The replica has read its changelog up to where it ended when following began.

        True when that is news (whatever was read while catching up is then new to the
        newest windows).
        """
        tp = (topic, partition)
        if tp in self._following and tp not in self._caught_up:
            self._caught_up.add(tp)
            return True
        return False

    def complete(self, topic: str) -> bool:
        """Whether every followed partition of ``topic`` has caught up."""
        return all(tp in self._caught_up for tp in self._following if tp[0] == topic)

    def drop(self, topic: str, partition: int) -> None:
        """Forget the replica of a partition (it became ours, or must be re-read)."""
        tp = (topic, partition)
        self._following.discard(tp)
        self._caught_up.discard(tp)
        self._pending.pop(tp, None)
        replica = self.partitions.replicas.pop(tp, None)
        if replica is not None:
            for key in replica.data:
                self._index(topic, partition, key, None)
