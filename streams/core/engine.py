"""The streaming KPI engine: messages in, dead letters and window values out. No Kafka here.

One ``Engine`` owns the ``PartitionState`` of every input partition assigned to it. For a
batch of messages it decodes and judges each message (SPEC section 1, in the order of
docs/SEMANTICS.md), applies the valid ones to panes, closes every window the batch made
final (minimum watermark over a topic's partitions, minus grace), reads the newest window
of every KPI and scope the batch touched, and prunes panes no open window needs.

Window values are always read by summing partition partials in partition order, so a value
depends only on each partition's own log: replays give bit-identical results.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.decode import decode_message
from streams.catalog import CATALOG, ROLLUP, KpiDef
from streams.core import uptime
from streams.core.measures import ENTITY_RETENTION_S, Contribution, StatusChange, apply_event
from streams.core.state import ChangelogRecord, PartitionState
from streams.core.windows import WindowSpec
from streams.errors import InvalidEvent

DEDUP_WINDOW_S = 7 * 86400
# Applied ids are persisted in groups; the open group is rewritten (with its value before
# the batch) at every commit that adds to it, so small groups keep that write amplification
# low (a group of 512 cost ~470 changelog bytes per event in the benchmark).
DEDUP_GROUP = 64
FUTURE_TOLERANCE_S = 300
NEG_INF = float("-inf")
FUTURE = "future"
LATE = "late"
CARDINALITY = "cardinality"
#: Event fields that carry a dimension value (follow-up events inherit theirs).
DIMENSION_FIELDS = ("department", "service", "queue")

Decoder = Callable[[bytes, str, str], Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One input message; ``topic`` is the logical (unprefixed) topic name."""

    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input message that cannot be applied, with the SPEC's reason."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class WindowValue:
    """The value of one KPI for one window and scope."""

    kpi: str
    window: str
    scope: str
    start: int
    end: int
    value: float | None
    count: int
    final: bool


@dataclass(slots=True)
class BatchResult:
    """Everything one batch produced, for the sinks and the metrics."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: Counter[str] = field(default_factory=Counter)
    applied: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: (topic, event time) of each applied event, for event-to-KPI latency.
    closed: list[WindowValue] = field(default_factory=list)
    current: list[WindowValue] = field(default_factory=list)


_default_decoder: Decoder = decode_message


class _TopicView:
    """Per topic: the partitions, their KPIs and how far windows are closed."""

    __slots__ = ("topic", "n_partitions", "kpis", "closed_upto", "newest_anchor", "pruned_upto")

    def __init__(self, topic: str, n_partitions: int, kpis: tuple[KpiDef, ...]) -> None:
        self.topic = topic
        self.n_partitions = n_partitions
        self.kpis = kpis
        # Windows ending at or before this were closed (and written) by an earlier batch.
        self.closed_upto: float | None = None
        # The watermark the newest windows were last read at.
        self.newest_anchor = NEG_INF
        self.pruned_upto = NEG_INF


class Engine:
    """Judges, applies and aggregates messages of the assigned input partitions."""

    def __init__(
        self,
        *,
        partitions: Mapping[str, int],
        grace_s: float,
        currency: str,
        clock: Callable[[], float],
        catalog: Sequence[KpiDef] = CATALOG,
        decoder: Decoder = _default_decoder,
        max_dimension_values: int = 1000,
        idle_partition_s: float = 0.0,
    ) -> None:
        self.grace_s = float(grace_s)
        self.max_dimension_values = max_dimension_values
        self.idle_partition_s = float(idle_partition_s)
        self._started_at = clock()
        # Wall clock of the last message per partition, for the opt-in idleness rule.
        self._last_seen: dict[tuple[str, int], float] = {}
        # (topic, partition) -> dimension -> admitted values (the cardinality guard).
        self._admitted: dict[tuple[str, int], dict[str, set[str]]] = {}
        self.currency = currency
        self.clock = clock
        self.catalog = {k.name: k for k in catalog}
        # The KPIs events contribute to; the lifecycles are kept whole regardless.
        self._kpis = frozenset(self.catalog)
        self._decode = decoder
        self.topics = {
            topic: _TopicView(topic, n, tuple(k for k in catalog if k.topic == topic))
            for topic, n in partitions.items()
        }
        self.states: dict[tuple[str, int], PartitionState] = {}
        # Read-only copies of the view keys (panes, balances, timelines, watermark) of the
        # partitions other workers own, fed from their changelogs: every worker can then
        # read any window, and the leader of a topic closes its windows.
        self.replicas: dict[tuple[str, int], PartitionState] = {}
        # Per replica, the records of a commit whose meta record has not arrived yet.
        self._replica_pending: dict[tuple[str, int], list[tuple[str, Any]]] = {}
        # Partitions followed as replicas, and those of them read up to where the changelog
        # ended when following began: only then is a replica a view of a whole commit (a
        # compacted changelog may hold a commit's earlier records behind a later one).
        self._following: set[tuple[str, int]] = set()
        self._caught_up: set[tuple[str, int]] = set()
        # (kpi, scope) whose panes or balances replicas changed since the last batch, and
        # whether a service timeline did: their newest windows are read again.
        self._replica_touched: set[tuple[str, str]] = set()
        self._replica_status_touched = False
        # Topics whose windows this engine closes and reads (None: every topic, until the
        # runtime first calls ``lead``).
        self._leading: set[str] | None = None
        # Topics this engine started to lead after another worker had led them.
        self._taken_over: set[str] = set()
        # Per topic, how far windows have been closed *and written* (by whichever worker
        # leads the topic): the safe bound for pruning panes and a leader's starting point.
        self._progress: dict[str, float] = {}
        # Derived indexes, rebuilt from the state on assignment:
        #  dedup: (topic, partition) -> event_id -> occurred_at
        #  panes: (kpi, window, scope) -> partition -> pane_start -> (key, parts vector)
        #  services: service -> partition of the incidents topic holding its timeline
        self._dedup: dict[tuple[str, int], dict[str, float]] = {}
        #  dedup groups: (topic, partition) -> group key -> latest occurred_at in it
        self._dedup_groups: dict[tuple[str, int], dict[str, float]] = {}
        # The vectors are the very lists in the states (or replicas), mutated in place, so a
        # window is read without building or hashing a single key string.
        self._panes: dict[tuple[str, str, str], dict[int, dict[int, _Pane]]] = defaultdict(dict)
        self._scopes: dict[str, set[str]] = defaultdict(set)
        #  pane targets: (kpi, scope, partition) -> where a contribution goes, per window spec
        self._targets: dict[tuple[str, str, int], tuple[_Target, ...]] = {}
        self._services: dict[str, int] = {}

    # -- assignment --------------------------------------------------------------------

    def assign(self, state: PartitionState) -> None:
        """Take ownership of a (restored) partition state and index it."""
        tp = (state.topic, state.partition)
        self.states[tp] = state
        dedup: dict[str, float] = {}
        groups: dict[str, float] = {}
        for key in sorted(state.keys_with_prefix("d|"), key=_group_order):
            group = state.data[key]
            for event_id, t in group:
                dedup[event_id] = t
            groups[key] = max((t for _id, t in group), default=NEG_INF)
        self._dedup[tp] = dedup
        self._dedup_groups[tp] = groups
        self._admitted[tp] = {key[2:]: set(state.data[key]) for key in state.keys_with_prefix("c|")}
        if tp in self.replicas:
            self.drop_replica(*tp)
        for key, value in state.data.items():
            self._index(state.partition, key, value)
        view = self.topics[state.topic]
        view.closed_upto = None  # recomputed from the restored watermarks

    def _index(self, partition: int, key: str, value: Any) -> tuple[str, str] | None:
        """Keep the pane, scope and service indexes in step with one view key.

        ``value`` is the key's new value, None when the key is gone. Returns the (kpi, scope)
        of a pane or balance key, None for other keys.
        """
        present = value is not None
        kind = key[:2]
        if kind == "p|":
            _, kpi, window, scope, start = key.split("|")
            panes = self._panes[(kpi, window, scope)]
            if present:
                panes.setdefault(partition, {})[int(start)] = (key, value)
                self._scopes[kpi].add(scope)
            else:
                of_partition = panes.get(partition)
                if of_partition is not None:
                    of_partition.pop(int(start), None)
            return kpi, scope
        if kind == "b|":
            _, kpi, _window, scope = key.split("|")
            if present:
                self._scopes[kpi].add(scope)
            return kpi, scope
        if kind == "s|":
            if present:
                self._services[key[2:]] = partition
            elif self._services.get(key[2:]) == partition:
                del self._services[key[2:]]
        return None

    # -- replicas of other workers' partitions -------------------------------------------

    def replica_apply(
        self, topic: str, partition: int, records: Iterable[tuple[bytes, bytes | None]]
    ) -> None:
        """Apply changelog records of a partition this engine does not own.

        Whole commits only: a commit's records are held until its meta record (the last
        one) arrives, so a window is never read from half a commit. A pruning commit moves
        a pane's amount into the balance base and deletes the pane; applied halfway, a
        balance would count it twice or not at all. Records of a commit that never
        completed (its writer crashed) are applied with the next complete one, which
        rewrites every key they touched (``PartitionState.restore``).
        """
        tp = (topic, partition)
        if tp in self.states:
            return  # our own state is the authority, and fresher
        replica = self.replicas.get(tp)
        if replica is None:
            replica = self.replicas[tp] = PartitionState(topic, partition)
        pending = self._replica_pending.setdefault(tp, [])
        for raw_key, raw_value in records:
            if raw_key == b"m":
                for key, value in pending:
                    if value is None:
                        if replica.data.pop(key, None) is None:
                            continue
                        changed = self._index(partition, key, None)
                    else:
                        replica.data[key] = value
                        changed = self._index(partition, key, value)
                    # What changed is read again at the next batch (the newest windows).
                    if changed is not None:
                        self._replica_touched.add(changed)
                    else:
                        self._replica_status_touched = True  # a service timeline
                pending.clear()
                if raw_value is not None:
                    meta = orjson.loads(raw_value)
                    wm = meta["wm"]
                    replica.watermark = NEG_INF if wm is None else float(wm)
                    applied = int(meta["a"])
                    if applied > replica.applied_offset:
                        # Its owner took new input: the partition is not idle.
                        replica.applied_offset = applied
                        self._last_seen[tp] = self.clock()
                continue
            key = raw_key.decode()
            if key[:2] not in ("p|", "b|", "s|"):
                continue  # entities, applied ids, admitted values: not needed to read windows
            pending.append((key, None if raw_value is None else orjson.loads(raw_value)["v"]))

    def follow(self, topic: str, partition: int) -> None:
        """A replica of this partition is being read from its start (not caught up yet).

        Until ``caught_up``, the topic's windows are neither closed nor read: the view of
        the partition may be partial.
        """
        self._following.add((topic, partition))
        self._caught_up.discard((topic, partition))

    def caught_up(self, topic: str, partition: int) -> None:
        """The replica has read its changelog up to where it ended when following began."""
        tp = (topic, partition)
        if tp in self._following and tp not in self._caught_up:
            self._caught_up.add(tp)
            # Whatever was read while catching up is new to the newest windows.
            self.topics[topic].newest_anchor = NEG_INF

    def _complete_view(self, topic: str) -> bool:
        """Whether every followed partition of ``topic`` has caught up."""
        return all(tp in self._caught_up for tp in self._following if tp[0] == topic)

    def drop_replica(self, topic: str, partition: int) -> None:
        """Forget the replica of a partition (it became ours, or must be re-read)."""
        self._following.discard((topic, partition))
        self._caught_up.discard((topic, partition))
        self._replica_pending.pop((topic, partition), None)
        replica = self.replicas.pop((topic, partition), None)
        if replica is not None:
            for key in replica.data:
                self._index(partition, key, None)

    def _view_state(self, topic: str, partition: int) -> PartitionState | None:
        """The state windows are read from: our own, else the replica."""
        tp = (topic, partition)
        return self.states.get(tp) or self.replicas.get(tp)

    # -- leadership and closing progress ------------------------------------------------

    def leads(self, topic: str) -> bool:
        """Whether this engine closes and reads the windows of ``topic``."""
        return self._leading is None or topic in self._leading

    def leading(self) -> frozenset[str]:
        """The topics this engine closes and reads."""
        return frozenset(self.topics if self._leading is None else self._leading)

    def lead(self, topics: Iterable[str]) -> tuple[set[str], set[str]]:
        """Close and read the windows of exactly ``topics``; returns (started, stopped).

        A topic started resumes from the closing progress (``set_progress``); one taken over
        from another worker that never wrote any resumes from the oldest window held.
        """
        now_leading = set(topics)
        before = self._leading if self._leading is not None else set()
        started = now_leading - before
        for topic in started:
            self.topics[topic].closed_upto = None
            if self._leading is not None:
                self._taken_over.add(topic)
        self._leading = now_leading
        return started, before - now_leading

    def needs_progress(self) -> bool:
        """Whether the written closing progress is needed before the next batch.

        To prune the partitions of topics others lead, and to resume a topic (started to
        be) led from what its last leader wrote, not from what our own view shows.
        """
        return self._leading != set(self.topics) or any(
            v.closed_upto is None for v in self.topics.values()
        )

    def resuming(self) -> list[str]:
        """Topics whose closing point the next batch takes from the progress."""
        return [t for t, v in self.topics.items() if v.closed_upto is None]

    def set_progress(self, progress: Mapping[str, float]) -> None:
        """The closing progress per topic, as its leaders last wrote it."""
        self._progress = dict(progress)
        # A topic taken over from a leader that never wrote its progress: nothing of it was
        # pruned (a leader prunes only windows whose progress it wrote before, others only
        # up to written progress), so every window still held can be closed, and must be:
        # its old leader may have died before closing any.
        for topic in self._taken_over:
            self._progress.setdefault(topic, NEG_INF)
        self._taken_over.clear()

    def progress(self) -> dict[str, float]:
        """The closing progress known to this engine (as last set)."""
        return dict(self._progress)

    def closing_progress(self) -> dict[str, float]:
        """Per topic led, how far this engine has closed windows (to be written after commit)."""
        return {
            t: v.closed_upto
            for t, v in self.topics.items()
            if self.leads(t) and v.closed_upto is not None and v.closed_upto != NEG_INF
        }

    def kpis_of(self, topic: str) -> tuple[KpiDef, ...]:
        """The KPIs computed from ``topic``."""
        return self.topics[topic].kpis

    def n_partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has."""
        return self.topics[topic].n_partitions

    def held(self) -> list[tuple[str, int]]:
        """The partitions whose state this engine owns."""
        return list(self.states)

    def watermarks(self) -> dict[tuple[str, int], float]:
        """The watermark of every partition owned."""
        return {tp: st.watermark for tp, st in self.states.items()}

    def commit(self) -> list[tuple[str, int, list[ChangelogRecord]]]:
        """The changelog records of every partition the last batch changed (see ``state``)."""
        return [(t, p, st.commit()) for (t, p), st in self.states.items() if st.dirty]

    def dead_letters_sent(self, topic: str, partition: int, next_offset: int) -> None:
        """The dead letters of a partition are in their topic up to ``next_offset`` (exclusive).

        The next commit's meta record carries the position, and a restore reads the
        dead-letter partition back from there. A partition no longer held is ignored.
        """
        st = self.states.get((topic, partition))
        if st is not None:
            st.dlq_next = max(st.dlq_next, next_offset)

    def revoke(self, topic: str, partition: int) -> None:
        """Drop a partition's state (it moved to another worker)."""
        self._dedup.pop((topic, partition), None)
        self._dedup_groups.pop((topic, partition), None)
        self._admitted.pop((topic, partition), None)
        state = self.states.pop((topic, partition), None)
        if state is not None:
            for key in state.data:
                self._index(partition, key, None)
        self.topics[topic].closed_upto = None

    def state(self, topic: str, partition: int) -> PartitionState:
        """The state of a partition, created empty when it has none yet."""
        tp = (topic, partition)
        st = self.states.get(tp)
        if st is None:
            # An empty partition has watermark -inf: it cannot have closed anything, so the
            # topic's closing progress stays as it is.
            view = self.topics[topic]
            closed_upto = view.closed_upto
            st = PartitionState(topic, partition)
            self.assign(st)
            view.closed_upto = closed_upto
        return st

    # -- watermarks --------------------------------------------------------------------

    def frontier(self, topic: str) -> float:
        """Minimum watermark over all partitions of a topic (-inf if one has none).

        With ``idle_partition_s`` set, partitions that received nothing for that long (wall
        clock) are left out; when every partition is idle the topic's largest watermark
        counts, so a quiet topic still closes its windows.
        """
        view = self.topics[topic]
        now = self.clock() if self.idle_partition_s else 0.0
        lowest = math.inf
        for p in range(view.n_partitions):
            st = self._view_state(topic, p)
            if self.idle_partition_s:
                seen = self._last_seen.get((topic, p), self._started_at)
                if now - seen > self.idle_partition_s:
                    continue
            wm = st.watermark if st is not None else NEG_INF
            lowest = min(lowest, wm)
        if lowest == math.inf:
            return self.max_watermark(topic)
        return lowest

    def max_watermark(self, topic: str) -> float:
        """Largest watermark among a topic's partitions (defines the newest window)."""
        return max(
            (
                st.watermark
                for states in (self.states, self.replicas)
                for (t, _p), st in states.items()
                if t == topic
            ),
            default=NEG_INF,
        )

    # -- the batch ---------------------------------------------------------------------

    def process(self, messages: Iterable[Message]) -> BatchResult:
        """Judge and apply a batch of messages, then close and read windows."""
        result = BatchResult()
        touched: set[tuple[str, str]] = set()  # (kpi, scope)
        status_touched = False
        for view in self.topics.values():
            if view.closed_upto is None:
                # A leader resumes where windows were last written; without that record,
                # from what the restored watermarks had closed (see ARCHITECTURE.md).
                written = self._progress.get(view.topic)
                derived = self.frontier(view.topic) - self.grace_s
                view.closed_upto = written if written is not None else derived
        # Panes may go once every window holding them was closed and written, by an
        # earlier batch of ours when we lead the topic, else by its leader.
        prune_upto = {
            t: v.closed_upto if self.leads(t) else self._progress.get(t)
            for t, v in self.topics.items()
        }
        now = self.clock()
        decode = self._decode
        currency = self.currency
        last_seen = self._last_seen
        # Counted in a plain dict and added to the Counter at the end: ``Counter[k] += 1``
        # cost more than the rest of the bookkeeping of an applied event.
        applied: dict[tuple[str, str], int] = {}
        contribute = self._contribute
        kpis = self._kpis
        # The wall clock is read once per batch (as before), so are the settings.
        future_after = now + FUTURE_TOLERANCE_S
        grace_s = self.grace_s
        idle_partition_s = self.idle_partition_s
        dedups = self._dedup
        for msg in messages:
            tp = (msg.topic, msg.partition)
            st = self.states.get(tp) or self.state(msg.topic, msg.partition)
            if msg.offset <= st.applied_offset:
                continue  # already in the restored state: a replay after a crash
            st.applied_offset = msg.offset
            if idle_partition_s:
                last_seen[tp] = now
            try:
                event = decode(msg.value, msg.topic, currency)
                t = event.occurred_at_s
                if t > future_after:
                    detail = f"occurred_at is {t - now:.0f} s ahead of the clock"
                    raise InvalidEvent(FUTURE, detail)
                watermark = st.watermark
                seen = dedups[tp].get(event.event_id)
                if seen is not None and seen >= watermark - DEDUP_WINDOW_S:
                    result.duplicates[msg.topic] += 1
                    continue
                if t < watermark - grace_s:
                    detail = f"occurred_at is {watermark - t:.0f} s behind the watermark"
                    raise InvalidEvent(LATE, detail)
                if idle_partition_s:
                    closed_upto = self.topics[msg.topic].closed_upto
                    if closed_upto is not None and t < closed_upto:
                        # Only reachable when idle partitions were left out of the frontier:
                        # the windows of this event were closed without this partition.
                        detail = "its windows were closed while this partition was idle"
                        raise InvalidEvent(LATE, detail)
                new_values = self._new_dimension_values(tp, event)
                contributions, status = apply_event(st, event, t, kpis)
            except InvalidEvent as exc:
                result.dead_letters.append(
                    DeadLetter(
                        exc.reason, exc.detail, msg.topic, msg.partition, msg.offset, msg.value
                    )
                )
                continue
            self._remember(st, tp, event.event_id, t)
            if new_values:
                for dimension, value in new_values:
                    self._admit(st, dimension, value)
            if t > watermark:
                st.watermark = t
            counted = (msg.topic, event.type)
            applied[counted] = applied.get(counted, 0) + 1
            for c in contributions:
                contribute(st, c)
                touched.add((c.kpi, c.scope))
                touched.add((c.kpi, ROLLUP))
            if status is not None:
                self._status(st, status, msg.offset)
                status_touched = True
        result.applied.update(applied)
        self._sweep_retired()
        if self._replica_touched:
            for kpi_name, scope in self._replica_touched:
                touched.add((kpi_name, scope))
                touched.add((kpi_name, ROLLUP))
            self._replica_touched = set()
        if self._replica_status_touched:
            status_touched = True
            self._replica_status_touched = False
        for view in self.topics.values():
            if self.leads(view.topic):
                self._close_and_read(view, result, touched, status_touched)
            self._prune(view, prune_upto[view.topic])
        return result

    # -- applying ----------------------------------------------------------------------

    def _remember(self, st: PartitionState, tp: tuple[str, int], event_id: str, t: float) -> None:
        # Applied ids are persisted in groups of up to DEDUP_GROUP ids per record, not one
        # record per id: a changelog write per event would dominate the cost.
        groups = self._dedup_groups[tp]
        key = next(reversed(groups), "")
        group = st.data.get(key) if key else None
        if group is None or len(group) >= DEDUP_GROUP:
            key = f"d|{st.seq}|{st.applied_offset}"
            group = []
            st.put(key, group)
            groups[key] = t
        else:
            st.touch(key)
            if t > groups[key]:
                groups[key] = t
        # A tuple, not a list: the garbage collector stops tracking a tuple of atoms, and
        # these live for a week (orjson writes both as the same JSON array).
        group.append((event_id, t))
        self._dedup[tp][event_id] = t

    def _new_dimension_values(self, tp: tuple[str, int], event: Any) -> list[tuple[str, str]]:
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

    def _admit(self, st: PartitionState, dimension: str, value: str) -> None:
        key = f"c|{dimension}"
        values = st.data.get(key)
        if values is None:
            values = []
            st.put(key, values)
        else:
            st.touch(key)
        values.append(value)
        self._admitted[(st.topic, st.partition)].setdefault(dimension, set()).add(value)

    def _contribute(self, st: PartitionState, c: Contribution) -> None:
        targets = self._targets.get((c.kpi, c.scope, st.partition))
        if targets is None:
            targets = self._targets[(c.kpi, c.scope, st.partition)] = self._pane_targets(
                c.kpi, c.scope, st.partition
            )
        parts = c.parts
        n = len(parts)
        t = c.t
        for pane_s, width, has_balance, scoped in targets:
            pane = int(t // pane_s) * pane_s
            for scope, prefix, panes in scoped:
                entry = panes.get(pane)
                if entry is None:
                    key = prefix + str(pane)
                    vec: list[float] = [0.0] * width
                    st.put(key, vec)
                    panes[pane] = (key, vec)
                    self._scopes[c.kpi].add(scope)
                else:
                    key, vec = entry
                    st.touch(key)
                # Unrolled: a loop over the parts cost more than the additions.
                if n == 2:
                    vec[0] += parts[0]
                    vec[1] += parts[1]
                else:
                    for i in range(n):
                        vec[i] += parts[i]
                if has_balance:
                    vec[-1] += c.balance

    def _pane_targets(self, kpi_name: str, scope: str, partition: int) -> tuple[_Target, ...]:
        """Where a KPI's contributions for one scope and partition go, per window spec.

        Pane length, vector width, and for the scope and the roll-up the partition's pane
        index, with the key prefix of new panes.
        """
        kpi = self.catalog.get(kpi_name)
        if kpi is None:  # a KPI left out of this worker (KPI_ONLY_KPIS): nothing to feed
            return ()
        width = len(kpi.parts) + (1 if kpi.balance is not None else 0)
        out = []
        for spec in kpi.specs:
            scoped = tuple(
                (
                    s,
                    f"p|{kpi_name}|{spec.name}|{s}|",
                    # The per-partition dicts of the index are never replaced, only emptied.
                    self._panes[(kpi_name, spec.name, s)].setdefault(partition, {}),
                )
                for s in (scope, ROLLUP)
            )
            out.append((spec.pane_s, width, kpi.balance is not None, scoped))
        return tuple(out)

    def _status(self, st: PartitionState, s: StatusChange, offset: int) -> None:
        key = f"s|{s.service}"
        tl = st.data.get(key)
        if tl is None:
            tl = uptime.new_timeline(s.t)
            st.put(key, tl)
            self._services[s.service] = st.partition
        else:
            st.touch(key)
        uptime.insert(tl, s.t, s.is_down, offset)

    # -- reading windows ---------------------------------------------------------------

    def _parts(
        self, kpi: KpiDef, spec: WindowSpec, scope: str, end: int
    ) -> tuple[list[float], float, float]:
        """Summed parts of window ``[end - size, end)`` plus balances at its start and end."""
        width = len(kpi.parts) + (1 if kpi.balance else 0)
        by_partition = self._panes.get((kpi.name, spec.name, scope), {})
        starts = spec.pane_starts(end)
        # Partitions in order, panes in time order: the float sums depend on that order.
        vecs = []
        for p in range(self.topics[kpi.topic].n_partitions):
            panes = by_partition.get(p)
            if panes:
                for start in starts:
                    entry = panes.get(start)
                    if entry is not None:
                        vecs.append(entry[1])
        total = _sum_vectors(vecs, width)
        if not kpi.balance:
            return total, 0.0, 0.0
        # Panes are aligned, so "ends at or before ``end``" is "starts before ``end``"; the
        # balance at the window start is the one at its end less the window's own deltas.
        balance_end = self._balance_end(kpi, spec, scope, end)
        return total[:-1], balance_end - total[-1], balance_end

    def _balance_end(self, kpi: KpiDef, spec: WindowSpec, scope: str, end: int) -> float:
        """Balance at ``end``: every partition's base plus its retained panes before ``end``.

        Per partition a left fold in time order (base, then panes by start), then the
        partitions in order: the base is itself that fold over the panes pruned so far, so
        the float result does not depend on where batches happened to prune.
        """
        topic = kpi.topic
        base_key = f"b|{kpi.name}|{spec.name}|{scope}"
        by_partition = self._panes.get((kpi.name, spec.name, scope), {})
        total = 0.0
        for p in range(self.topics[topic].n_partitions):
            st = self._view_state(topic, p)
            if st is None:
                continue
            partition_balance = st.data.get(base_key, 0.0)
            panes = by_partition.get(p)
            if panes:
                for start in sorted(s for s in panes if s < end):
                    partition_balance += panes[start][1][-1]
            total += partition_balance
        return total

    def _timeline_or_pane(self, topic: str, partition: int, key: str) -> Any:
        """A view key (pane, timeline) of a partition, from our state or the replica."""
        st = self._view_state(topic, partition)
        assert st is not None, (topic, partition, key)
        return st.data[key]

    def _value(
        self, kpi: KpiDef, spec: WindowSpec, scope: str, end: int
    ) -> tuple[float | None, int]:
        parts, b0, b1 = self._parts(kpi, spec, scope, end)
        return kpi.read(parts, b0, b1, spec), int(parts[-1])

    def _uptime(
        self, spec: WindowSpec, scope: str, end: int, cut: float
    ) -> tuple[float | None, int]:
        start = end - spec.size_s
        services = self._services if scope == ROLLUP else {scope: self._services.get(scope)}
        values: list[float] = []
        count = 0
        for service, p in sorted(services.items()):
            if p is None:
                continue
            tl = self._timeline_or_pane("incidents", p, f"s|{service}")
            if tl["first"] >= end:
                continue
            down = uptime.downtime(tl, start, end, cut)
            values.append(1.0 - down / spec.size_s)
            count += uptime.events_between(tl, start, end)
        if not values:
            return None, count
        return sum(values) / len(values), count

    def _close_and_read(
        self,
        view: _TopicView,
        result: BatchResult,
        touched: set[tuple[str, str]],
        status_touched: bool,
    ) -> None:
        if not view.kpis or not self._complete_view(view.topic):
            return
        assert view.closed_upto is not None
        close_to = self.frontier(view.topic) - self.grace_s
        newest_wm = self.max_watermark(view.topic)
        if newest_wm == NEG_INF:
            return
        closed_from = view.closed_upto
        moved = close_to > closed_from
        for kpi in view.kpis:
            for spec in kpi.specs:
                anchor_moved = spec.first_window_end_after(
                    newest_wm
                ) != spec.first_window_end_after(view.newest_anchor)
                if kpi.name == "system_uptime":
                    self._close_uptime(kpi, spec, closed_from, close_to, result)
                    if status_touched or newest_wm != view.newest_anchor:
                        self._read_newest_uptime(kpi, spec, newest_wm, close_to, result)
                    continue
                if spec.first_window_end_after(closed_from) <= close_to:
                    self._close(kpi, spec, closed_from, close_to, result)
                _start, end = spec.newest_window(newest_wm)
                became_final = closed_from < end <= close_to
                for scope in sorted(self._scopes[kpi.name]):
                    if anchor_moved or became_final or (kpi.name, scope) in touched:
                        value, count = self._value(kpi, spec, scope, end)
                        result.current.append(
                            _window_value(kpi, spec, scope, end, value, count, end <= close_to)
                        )
        if moved:
            view.closed_upto = close_to
        view.newest_anchor = newest_wm

    def _close(
        self, kpi: KpiDef, spec: WindowSpec, after: float, upto: float, result: BatchResult
    ) -> None:
        for scope in sorted(self._scopes[kpi.name]):
            starts: set[int] = set()
            for panes in self._panes.get((kpi.name, spec.name, scope), {}).values():
                starts.update(panes)
            if not starts:
                continue
            # Windows closing in (after, upto] that hold at least one pane: none ends at or
            # before the first pane, nor after the last window of the last pane.
            last = min(upto, spec.window_end_of_pane(max(starts)))
            ends = []
            for e in spec.window_ends_between(max(after, min(starts)), last):
                if any(start in starts for start in spec.pane_starts(e)):
                    ends.append(e)
            for end in ends:
                value, count = self._value(kpi, spec, scope, end)
                if count > 0:
                    result.closed.append(_window_value(kpi, spec, scope, end, value, count, True))

    def _close_uptime(
        self, kpi: KpiDef, spec: WindowSpec, after: float, upto: float, result: BatchResult
    ) -> None:
        if upto <= after or not self._services:
            return
        first_all = min(
            self._timeline_or_pane("incidents", p, f"s|{s}")["first"]
            for s, p in self._services.items()
        )
        scopes = [ROLLUP, *sorted(self._services)]
        for end in spec.window_ends_between(max(after, first_all), upto):
            for scope in scopes:
                if scope != ROLLUP:
                    p = self._services[scope]
                    if self._timeline_or_pane("incidents", p, f"s|{scope}")["first"] >= end:
                        continue
                value, count = self._uptime(spec, scope, end, end)
                if value is None:
                    continue
                result.closed.append(_window_value(kpi, spec, scope, end, value, count, True))

    def _read_newest_uptime(
        self, kpi: KpiDef, spec: WindowSpec, newest_wm: float, close_to: float, result: BatchResult
    ) -> None:
        _start, end = spec.newest_window(newest_wm)
        for scope in [ROLLUP, *sorted(self._services)]:
            value, count = self._uptime(spec, scope, end, newest_wm)
            if value is None:
                continue
            result.current.append(
                _window_value(kpi, spec, scope, end, value, count, end <= close_to)
            )

    # -- pruning -----------------------------------------------------------------------

    def _prune(self, view: _TopicView, upto: float | None) -> None:
        """Fold panes whose every window closed before this batch into the balance base.

        Only windows closed by *earlier* batches count: their closing survives any crash
        of this batch, so the panes are never needed again.
        """
        if upto is None or upto == NEG_INF or upto == view.pruned_upto:
            return
        view.pruned_upto = upto
        for kpi in view.kpis:
            for spec in kpi.specs:
                for scope in list(self._scopes[kpi.name]):
                    by_partition = self._panes.get((kpi.name, spec.name, scope))
                    if not by_partition:
                        continue
                    for p in sorted(by_partition):
                        st = self.states.get((view.topic, p))
                        panes = by_partition[p]
                        if st is None or not panes:
                            continue
                        # In time order: the base is a float sum, and a replay must fold in
                        # the same order. The last window of a pane ends no earlier than
                        # that of an earlier pane, so the done panes come first.
                        for start in sorted(panes):
                            if spec.window_end_of_pane(start) > upto:
                                break
                            key, vec = panes.pop(start)
                            if kpi.balance:
                                base_key = f"b|{kpi.name}|{spec.name}|{scope}"
                                st.put(base_key, st.data.get(base_key, 0.0) + vec[-1])
                            st.delete(key)
        if view.topic == "incidents":
            horizon = upto - 31 * 86400
            for service, p in self._services.items():
                own = self.states.get(("incidents", p))
                if own is None:
                    continue
                st = own
                key = f"s|{service}"
                tl = st.data[key]
                if tl["ev"] and tl["ev"][0][0] < horizon:
                    st.touch(key)
                    uptime.fold_before(tl, horizon)
        self._prune_dedup(view)

    def _sweep_retired(self) -> None:
        """Delete the entities past retention (already treated as gone by every lookup)."""
        for st in self.states.values():
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

    def _prune_dedup(self, view: _TopicView) -> None:
        for (topic, p), st in self.states.items():
            if topic != view.topic:
                continue
            expire = st.watermark - DEDUP_WINDOW_S
            dedup = self._dedup[(topic, p)]
            groups = self._dedup_groups[(topic, p)]
            for key in [k for k, latest in groups.items() if latest < expire]:
                for event_id, t in st.data[key]:
                    if dedup.get(event_id) == t:
                        del dedup[event_id]
                st.delete(key)
                del groups[key]


_DIMENSIONS_OF_TYPE: dict[str, tuple[str, ...]] = {}
#: No new dimension value (shared, never mutated: most events bring none).
_NO_VALUES: list[tuple[str, str]] = []
#: A pane in the index: its state key and its parts vector (the list in the state).
_Pane = tuple[str, list[float]]
#: Pane length, vector width, has a balance, and (scope, key prefix, the partition's panes)
#: for the scope and the roll-up: what ``_contribute`` needs per window spec.
_Target = tuple[int, int, bool, tuple[tuple[str, str, dict[int, _Pane]], ...]]


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


def _window_value(
    kpi: KpiDef,
    spec: WindowSpec,
    scope: str,
    end: int,
    value: float | None,
    count: int,
    final: bool,
) -> WindowValue:
    """The value of window ``[end - size, end)`` of a KPI and scope."""
    return WindowValue(kpi.name, spec.name, scope, end - spec.size_s, end, value, count, final)


def _group_order(key: str) -> tuple[int, int]:
    _, seq, offset = key.split("|")
    return int(seq), int(offset)
