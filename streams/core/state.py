"""The state of one input partition, as a flat map of JSON values with batch-atomic commits.

All state that an input partition's events build (watermark, applied ids, entity lifecycles,
KPI panes, balances, service timelines) lives in one ``dict[str, JSON]`` whose keys are the
changelog keys. Every change goes through ``edit``/``put``/``delete``, which remember the
key's value as it was when the batch started. A commit turns the touched keys into changelog records
``{"o": commit sequence, "v": new value, "p": value before the batch}`` followed by the meta
record ``m`` (the sequence and the last input offset processed). Restoring keeps ``v`` for
records of complete batches and falls back to ``p``
for a batch whose meta record never made it, so a crash anywhere in a commit restores the
partition exactly as of its last complete batch. That is what makes replay exact.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from streams.core import keys

JSON = Any
#: The watermark of a partition without applied events; also "no window closed yet".
NEG_INF: float = float("-inf")


# Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, which made
# building the ~3 records per event cost twice as much.
@dataclass(slots=True)
class ChangelogRecord:
    """One record for the state changelog topic; ``value`` None is a real tombstone."""

    key: bytes
    value: bytes | None


class PartitionState:
    """The mutable state of one input partition (see module docstring)."""

    __slots__ = (
        "topic",
        "partition",
        "data",
        "_before",
        "_deleted",
        "_tombstones",
        "watermark",
        "applied_offset",
        "dlq_next",
        "seq",
        "_committed_offset",
        "retiring",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.data: dict[str, JSON] = {}
        # key -> serialized value at batch start (b"null" when the key did not exist).
        self._before: dict[str, bytes] = {}
        self._deleted: set[str] = set()
        # Keys deleted by a committed batch: a real tombstone lets compaction drop them.
        self._tombstones: list[str] = []
        self.watermark = NEG_INF
        self.applied_offset = -1
        self.dlq_next = 0
        # Commit sequence: a pruning-only commit has no new offset, so offsets can't tell
        # complete and incomplete commits apart; the sequence can.
        self.seq = 0
        self._committed_offset = -1
        #: Heap of (completed at, entity key): entities in a final state, oldest first,
        #: to be forgotten once retired (``streams.core.lifecycle.ENTITY_RETENTION_S``).
        self.retiring: list[tuple[float, str]] = []

    # -- mutation ----------------------------------------------------------------------

    # A batch changes the state only through ``edit``, ``put`` and ``delete``: each records
    # the key's value as it was when the batch started, so the commit knows what changed
    # (and what to fall back to) without any caller marking keys dirty. ``data`` and ``get``
    # are for reading.

    def get(self, key: str) -> JSON:
        """A key's value (None when absent), for reading only."""
        return self.data.get(key)

    def edit(self, key: str) -> JSON:
        """A present key's value, to be changed in place by this batch."""
        self._record(key)
        return self.data[key]

    def put(self, key: str, value: JSON) -> None:
        """Set a key."""
        self._record(key)
        self.data[key] = value
        self._deleted.discard(key)

    def delete(self, key: str) -> None:
        """Remove a key."""
        self._record(key)
        self.data.pop(key, None)
        self._deleted.add(key)

    def mirror(self, key: str, value: JSON) -> None:
        """Set (or, with None, remove) a key without recording it.

        For replicas only: they copy another worker's committed state and never commit.
        """
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    def _record(self, key: str) -> None:
        if key not in self._before:
            value = self.data.get(key)
            self._before[key] = b"null" if value is None else orjson.dumps(value)

    @property
    def dirty(self) -> bool:
        """True when the batch changed anything, if only the input position."""
        return (
            bool(self._before)
            or bool(self._tombstones)
            or self.applied_offset != self._committed_offset
        )

    # -- commit and restore ------------------------------------------------------------

    def commit(self) -> list[ChangelogRecord]:
        """Records that make this batch durable; the meta record comes last."""
        records = [ChangelogRecord(k.encode(), None) for k in self._tombstones]
        self._tombstones = []
        self.seq += 1
        envelope_head = b'{"o":' + str(self.seq).encode() + b',"v":'
        data = self.data
        dumps = orjson.dumps
        join = b"".join
        append = records.append
        for key, before in self._before.items():
            envelope = join((envelope_head, dumps(data.get(key)), b',"p":', before, b"}"))
            append(ChangelogRecord(key.encode(), envelope))
        if self._deleted:
            self._tombstones = [key for key in self._before if key in self._deleted]
        self._before.clear()
        self._deleted.clear()
        self._committed_offset = self.applied_offset
        meta = {
            "seq": self.seq,
            "wm": _finite_or_none(self.watermark),
            "a": self.applied_offset,
            "dlq": self.dlq_next,
        }
        records.append(ChangelogRecord(keys.META.encode(), orjson.dumps(meta)))
        return records

    @classmethod
    def restore(
        cls, topic: str, partition: int, records: Iterable[tuple[bytes, bytes | None]]
    ) -> PartitionState:
        """Rebuild the state from the changelog partition, read from its beginning."""
        state = cls(topic, partition)
        latest: dict[str, bytes | None] = {}
        meta: dict[str, Any] | None = None
        for raw_key, raw_value in records:
            key = raw_key.decode()
            if key == keys.META:
                meta = orjson.loads(raw_value) if raw_value is not None else None
            else:
                latest[key] = raw_value
        if meta is None:
            # No commit ever completed; records of a crashed first commit may still be there
            # and must not be mistaken for committed ones later.
            meta = {"seq": 0, "wm": None, "a": -1, "dlq": 0}
        seq = int(meta["seq"])
        state.seq = seq
        state.applied_offset = state._committed_offset = int(meta["a"])
        state.watermark = meta_watermark(meta)
        state.dlq_next = int(meta.get("dlq", 0))
        for key, raw in latest.items():
            if raw is None:
                continue
            envelope = orjson.loads(raw)
            if envelope["o"] <= seq:
                value = envelope["v"]
            else:
                # A record newer than the last meta belongs to a commit that never completed.
                # Its sequence number will be reused, so rewrite the key at the next commit
                # and number commits past it.
                value = envelope["p"]
                state._before[key] = orjson.dumps(value)
                state.seq = max(state.seq, int(envelope["o"]))
            if value is not None:
                state.data[key] = value
                if keys.kind(key) == keys.ENTITY and "z" in value:
                    state.retiring.append((float(value["z"]), key))
        heapq.heapify(state.retiring)
        return state

    def keys_with_prefix(self, prefix: str) -> Iterator[str]:
        """Keys of one kind (``streams.core.keys``; restore-time index rebuilding)."""
        return (k for k in self.data if k.startswith(prefix))


#: What ``sizes`` counts, by the name ``/state`` shows it under: the keys of each kind.
SIZE_KINDS: dict[str, str] = {
    "entities": keys.ENTITY,
    "panes": keys.PANE,
    "distributions": keys.DISTRIBUTION,
    "balances": keys.BALANCE,
    "timelines": keys.TIMELINE,
    "dedup_groups": keys.APPLIED,
    "dimensions": keys.ADMITTED,
}
_KIND_NAMES = {prefix: name for name, prefix in SIZE_KINDS.items()}


def sizes(states: Iterable[PartitionState]) -> dict[str, int]:
    """How much state ``states`` hold: keys by kind, and what grows inside keys.

    ``dedup_ids`` are the event ids in the applied groups, ``dimension_values`` the admitted
    values, ``retiring`` the finished entities waiting to be forgotten. For ``/state`` and
    the long-run benchmark (what grows over months of event time); one pass over the keys.
    """
    out = dict.fromkeys(
        ("partitions", "keys", *SIZE_KINDS, "dedup_ids", "dimension_values", "retiring"), 0
    )
    for state in states:
        out["partitions"] += 1
        out["keys"] += len(state.data)
        out["retiring"] += len(state.retiring)
        for key, value in state.data.items():
            name = _KIND_NAMES.get(keys.kind(key))
            if name is None:
                continue
            out[name] += 1
            if name == "dedup_groups":
                out["dedup_ids"] += len(value)
            elif name == "dimensions":
                out["dimension_values"] += len(value)
    return out


def _finite_or_none(x: float) -> float | None:
    return None if x == NEG_INF else x


def meta_watermark(meta: dict[str, Any]) -> float:
    """The watermark a commit's meta record carries (``None`` there: no events yet)."""
    wm = meta["wm"]
    return NEG_INF if wm is None else float(wm)


class Partitions:
    """The partition states an engine reads windows from: its own and its replicas.

    Own states are the authority (the engine applies input to them and commits them);
    replicas are read-only copies of the partitions other workers own, kept from their
    changelogs (``streams/core/replicas.py``) so a topic's leader can read every window.
    """

    __slots__ = ("n_partitions", "own", "replicas")

    def __init__(self, n_partitions: dict[str, int]) -> None:
        #: Partitions per input topic.
        self.n_partitions = n_partitions
        self.own: dict[tuple[str, int], PartitionState] = {}
        self.replicas: dict[tuple[str, int], PartitionState] = {}

    def view(self, topic: str, partition: int) -> PartitionState | None:
        """The state windows are read from: our own, else the replica, else None."""
        tp = (topic, partition)
        return self.own.get(tp) or self.replicas.get(tp)

    def of_topic(self, topic: str) -> list[PartitionState]:
        """Own and replica states of one topic."""
        return [
            st
            for states in (self.own, self.replicas)
            for (t, _p), st in states.items()
            if t == topic
        ]
