"""The streaming KPI engine: messages in, dead letters and window values out. No Kafka here.

One ``Engine`` owns the ``PartitionState`` of every input partition assigned to it. For a
batch of messages it judges each message (SPEC section 1, in the order of
docs/SEMANTICS.md: decode, future, duplicate, late, cardinality, lifecycle), applies the
valid ones (the lifecycle's ``Fact``, then each KPI the event feeds), closes every window
the batch made final and reads the newest window of every KPI and scope the batch touched
(``closing``), and prunes what no open window needs (``retention``). The jobs live in their
own modules; this one wires them and runs the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from schemas.decode import decode_message
from schemas.errors import FUTURE, FUTURE_TOLERANCE_S, ConfigurationError, InvalidEvent
from streams.catalog import CATALOG
from streams.core import keys
from streams.core.calendar import Calendar
from streams.core.closing import Closing
from streams.core.judge import DEDUP_WINDOW_S, LATE, Judge
from streams.core.lifecycle import apply_event
from streams.core.panes import Panes
from streams.core.records import BatchResult, DeadLetter, Message
from streams.core.replicas import Replicas
from streams.core.retention import Retention
from streams.core.state import NEG_INF, ChangelogRecord, Partitions, PartitionState, sizes
from streams.core.timelines import Timelines
from streams.core.windows import calendar_windows
from streams.kpis.base import ROLLUP, Kpi
from streams.kpis.fact import Fact

Decoder = Callable[[bytes, str, str], Any]
#: A KPI an event type feeds: its name, whether it is a timeline KPI, its measure, and
#: whether it keeps a distribution of its durations.
_Feeding = tuple[str, bool, Callable[[Any, Fact], "tuple[tuple[float, ...], float] | None"], bool]

_default_decoder: Decoder = decode_message


class Engine:
    """Judges, applies and aggregates messages of the assigned input partitions."""

    def __init__(
        self,
        *,
        partitions: Mapping[str, int],
        grace_s: float,
        currency: str,
        clock: Callable[[], float],
        catalog: Sequence[Kpi] = CATALOG,
        decoder: Decoder = _default_decoder,
        max_dimension_values: int = 1000,
        idle_partition_s: float = 0.0,
        timezone: str = "UTC",
        fiscal_year_start: int = 1,
    ) -> None:
        self.grace_s = float(grace_s)
        self.idle_partition_s = float(idle_partition_s)
        self.currency = currency
        self.clock = clock
        self.catalog = {k.name: k for k in catalog}
        self._decode = decoder
        #: The business calendar (``KPI_TIMEZONE``, ``KPI_FISCAL_YEAR_START``).
        self.calendar = Calendar(timezone, fiscal_year_start)
        windows = calendar_windows(self.calendar)
        specs = {k.name: tuple(windows[w] for w in k.windows) for k in catalog}
        # Per event class, the KPIs it feeds, in catalog order. The lifecycles are kept
        # whole for every event type regardless (they decide what is applied).
        self._feeds: dict[type, list[_Feeding]] = {}
        for kpi in catalog:
            for feed in kpi.feeds:
                self._feeds.setdefault(feed.event, []).append(
                    (kpi.name, kpi.kind == "timeline", feed.measure, kpi.distribution)
                )
        self._partitions = Partitions(dict(partitions))
        #: The partitions whose state this engine owns.
        self.states = self._partitions.own
        # Wall clock of the last input per partition, for the opt-in idleness rule.
        self._last_input: dict[tuple[str, int], float] = {}
        self._judge = Judge(max_dimension_values)
        self._panes = Panes(self.catalog, specs, self._partitions, self.calendar)
        self._timelines = Timelines(self._partitions)
        self._replicas = Replicas(self._partitions, self._index, clock, self._last_input)
        self._closing = Closing(
            catalog=catalog,
            specs=specs,
            partitions=self._partitions,
            panes=self._panes,
            timelines=self._timelines,
            replicas=self._replicas,
            grace_s=self.grace_s,
            idle_partition_s=self.idle_partition_s,
            clock=clock,
            last_input=self._last_input,
        )
        self._retention = Retention(self._partitions, self._panes, self._timelines, self._judge)

    # -- assignment --------------------------------------------------------------------

    def assign(self, state: PartitionState) -> None:
        """Take ownership of a (restored) partition state and index it."""
        tp = (state.topic, state.partition)
        self._check_calendar(state)
        self.states[tp] = state
        self._judge.index(state)
        if tp in self._partitions.replicas:
            self._replicas.drop(*tp)
        for key, value in state.data.items():
            self._index(state.topic, state.partition, key, value)
        # Version 1 kept separate day panes (and a balance base) for 30d: its windows now
        # read the day panes, so those are dropped (deleted from the changelog too).
        for key in [k for k in state.data if _v1_30d(k)]:
            state.delete(key)
        self._closing.reset(state.topic)  # recomputed from the restored watermarks

    def _check_calendar(self, state: PartitionState) -> None:
        """Refuse a state whose panes were cut in another calendar; mark a new one.

        Panes are local hours, days and months: kept in one time zone, they cannot be read
        in another. A state without the mark was kept by version 1, in UTC.
        """
        found = state.data.get(keys.CALENDAR)
        if found is None and any(keys.kind(k) == keys.PANE for k in state.data):
            found = "UTC 1"
        if found is not None and found != self.calendar.name:
            zone, start = str(found).split(" ")
            msg = (
                f"the state of {state.topic}-{state.partition} was kept with KPI_TIMEZONE={zone}"
                f" and KPI_FISCAL_YEAR_START={start}, not {self.calendar.timezone} and"
                f" {self.calendar.fiscal_year_start}: a new calendar needs a new KPI_APP_ID"
                " (docs/OPERATIONS.md, Changing the calendar)"
            )
            raise ConfigurationError(msg)
        if state.data.get(keys.CALENDAR) != self.calendar.name:
            state.put(keys.CALENDAR, self.calendar.name)

    def revoke(self, topic: str, partition: int) -> None:
        """Drop a partition's state (it moved to another worker)."""
        self._judge.forget((topic, partition))
        state = self.states.pop((topic, partition), None)
        if state is not None:
            for key in state.data:
                self._index(topic, partition, key, None)
        self._closing.reset(topic)

    def state(self, topic: str, partition: int) -> PartitionState:
        """The state of a partition, created empty when it has none yet."""
        tp = (topic, partition)
        st = self.states.get(tp)
        if st is None:
            # An empty partition has watermark -inf: it cannot have closed anything, so the
            # topic's closing progress stays as it is.
            view = self._closing.views[topic]
            closed_upto = view.closed_upto
            st = PartitionState(topic, partition)
            self.assign(st)
            view.closed_upto = closed_upto
        return st

    def _index(self, topic: str, partition: int, key: str, value: Any) -> tuple[str, str] | None:
        """Keep the pane and timeline indexes in step with one key (``value`` None: gone).

        Returns the (kpi, scope) of a pane or balance key, None for other keys.
        """
        if keys.kind(key) == keys.TIMELINE:
            self._timelines.index(topic, partition, key, value)
            return None
        return self._panes.index(partition, key, value)

    # -- replicas of other workers' partitions -------------------------------------------

    def replica_apply(
        self, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]
    ) -> None:
        """Apply changelog records of a partition this engine does not own (whole commits)."""
        self._replicas.apply(topic, partition, records)

    def follow(self, topic: str, partition: int) -> None:
        """A replica of this partition is being read from its start (not caught up yet).

        Until ``caught_up``, the topic's windows are neither closed nor read: the view of
        the partition may be partial.
        """
        self._replicas.follow(topic, partition)

    def caught_up(self, topic: str, partition: int) -> None:
        """The replica has read its changelog up to where it ended when following began."""
        if self._replicas.caught_up(topic, partition):
            # Whatever was read while catching up is new to the newest windows.
            self._closing.views[topic].newest_anchor = NEG_INF

    def dead_letters_sent(self, topic: str, partition: int, next_offset: int) -> None:
        """The dead letters of a partition are in their topic up to ``next_offset`` (exclusive).

        The next commit's meta record carries the position, and a restore reads the
        dead-letter partition back from there. A partition no longer held is ignored.
        """
        st = self.states.get((topic, partition))
        if st is not None:
            st.dlq_next = max(st.dlq_next, next_offset)

    def drop_replica(self, topic: str, partition: int) -> None:
        """Forget the replica of a partition (it became ours, or must be re-read)."""
        self._replicas.drop(topic, partition)

    # -- leadership and closing progress ------------------------------------------------

    def leads(self, topic: str) -> bool:
        """Whether this engine closes and reads the windows of ``topic``."""
        return self._closing.leads(topic)

    def leading(self) -> frozenset[str]:
        """The topics this engine closes and reads."""
        return self._closing.leading()

    def lead(self, topics: Iterable[str]) -> tuple[set[str], set[str]]:
        """Close and read the windows of exactly ``topics``; returns (started, stopped).

        A topic started resumes from the closing progress (``set_progress``); one taken over
        from another worker that never wrote any resumes from the oldest window held.
        """
        return self._closing.lead(topics)

    def needs_progress(self) -> bool:
        """Whether the written closing progress is needed before the next batch.

        To prune the partitions of topics others lead, and to resume a topic (started to
        be) led from what its last leader wrote, not from what our own view shows.
        """
        return self._closing.needs_progress()

    def resuming(self) -> list[str]:
        """Topics whose closing point the next batch takes from the progress."""
        return self._closing.resuming()

    def set_progress(self, progress: Mapping[str, float]) -> None:
        """The closing progress per topic, as its leaders last wrote it."""
        self._closing.set_progress(progress)

    def progress(self) -> dict[str, float]:
        """The closing progress known to this engine (as last set)."""
        return self._closing.progress()

    def closing_progress(self) -> dict[str, float]:
        """Per topic led, how far this engine has closed windows (to be written after commit)."""
        return self._closing.closing_progress()

    def frontier(self, topic: str) -> float:
        """Minimum watermark over all partitions of a topic (see ``Closing.frontier``)."""
        return self._closing.frontier(topic)

    def kpis_of(self, topic: str) -> tuple[Kpi, ...]:
        """The KPIs computed from ``topic``."""
        return self._closing.views[topic].kpis

    def n_partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has."""
        return self._partitions.n_partitions[topic]

    def held(self) -> list[tuple[str, int]]:
        """The partitions whose state this engine owns."""
        return list(self.states)

    def state_sizes(self) -> dict[str, dict[str, int]]:
        """How much state is held, owned and replicated (``state.sizes``; ``/state``)."""
        return {
            "own": sizes(self._partitions.own.values()),
            "replicas": sizes(self._partitions.replicas.values()),
        }

    def watermarks(self) -> dict[tuple[str, int], float]:
        """The watermark of every partition owned."""
        return {tp: st.watermark for tp, st in self.states.items()}

    def commit(self) -> list[tuple[str, int, list[ChangelogRecord]]]:
        """The changelog records of every partition the last batch changed (see ``state``)."""
        return [(t, p, st.commit()) for (t, p), st in self.states.items() if st.dirty]

    # -- the batch ---------------------------------------------------------------------

    def process(self, messages: Iterable[Message]) -> BatchResult:
        """Judge and apply a batch of messages, then close and read windows."""
        result = BatchResult()
        touched: set[tuple[str, str]] = set()  # (kpi, scope)
        timelines_touched = False
        closing = self._closing
        prune_upto = closing.resume()
        now = self.clock()
        decode = self._decode
        currency = self.currency
        last_input = self._last_input
        # Counted in a plain dict and added to the Counter at the end: ``Counter[k] += 1``
        # cost more than the rest of the bookkeeping of an applied event.
        applied: dict[tuple[str, str], int] = {}
        judge = self._judge
        # Called on the typed local: a native call (a bound method would go through Python's
        # calling convention, ~0.1 µs a call).
        panes = self._panes
        feeds = self._feeds
        no_feeds: list[_Feeding] = []
        # The wall clock is read once per batch (as before), so are the settings.
        future_after = now + FUTURE_TOLERANCE_S
        grace_s = self.grace_s
        idle_partition_s = self.idle_partition_s
        views = closing.views
        applied_ids = judge.applied
        for msg in messages:
            tp = (msg.topic, msg.partition)
            st = self.states.get(tp) or self.state(msg.topic, msg.partition)
            if msg.offset <= st.applied_offset:
                continue  # already in the restored state: a replay after a crash
            st.applied_offset = msg.offset
            if idle_partition_s:
                last_input[tp] = now
            try:
                event = decode(msg.value, msg.topic, currency)
                t = event.occurred_at_s
                if t > future_after:
                    detail = f"occurred_at is {t - now:.0f} s ahead of the clock"
                    raise InvalidEvent(FUTURE, detail)
                watermark = st.watermark
                seen = applied_ids[tp].get(event.event_id)
                if seen is not None and seen >= watermark - DEDUP_WINDOW_S:
                    result.duplicates[msg.topic] += 1
                    continue
                if t < watermark - grace_s:
                    detail = f"occurred_at is {watermark - t:.0f} s behind the watermark"
                    raise InvalidEvent(LATE, detail)
                if idle_partition_s:
                    closed_upto = views[msg.topic].closed_upto
                    if closed_upto is not None and t < closed_upto:
                        # Only reachable when idle partitions were left out of the frontier:
                        # the windows of this event were closed without this partition.
                        detail = "its windows were closed while this partition was idle"
                        raise InvalidEvent(LATE, detail)
                new_values = judge.new_dimension_values(tp, event)
                fact = apply_event(st, event, t)
            except InvalidEvent as exc:
                result.dead_letters.append(
                    DeadLetter(
                        exc.reason,
                        exc.detail,
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        msg.value,
                        msg.key,
                    )
                )
                continue
            judge.remember(st, tp, event.event_id, t)
            if new_values:
                for dimension, value in new_values:
                    judge.admit(st, dimension, value)
            if t > watermark:
                st.watermark = t
            counted = (msg.topic, event.type)
            applied[counted] = applied.get(counted, 0) + 1
            for kpi, timeline, measure, distribution in feeds.get(type(event), no_feeds):
                delta = measure(event, fact)
                if delta is None:
                    continue
                if timeline:
                    self._timelines.record(st, fact.scope, t, delta[0][0] == 1.0, msg.offset)
                    timelines_touched = True
                    continue
                panes.contribute(st, kpi, fact.scope, t, delta[0], delta[1])
                if distribution:
                    panes.distribute(st, kpi, fact.scope, t, fact.since_start_s, fact.entity)
                touched.add((kpi, fact.scope))
                touched.add((kpi, ROLLUP))
        result.applied.update(applied)
        self._retention.sweep_retired()
        replicas = self._replicas
        if replicas.touched:
            for kpi_name, scope in replicas.touched:
                touched.add((kpi_name, scope))
                touched.add((kpi_name, ROLLUP))
            replicas.touched = set()
        if replicas.timelines_touched:
            timelines_touched = True
            replicas.timelines_touched = False
        for topic, view in views.items():
            if closing.leads(topic):
                closing.close_and_read(topic, result, touched, timelines_touched)
            self._retention.prune(view, prune_upto[topic])
        return result


def _v1_30d(key: str) -> bool:
    """Whether ``key`` is one of version 1's own 30d panes or balance bases."""
    kind = keys.kind(key)
    return (kind == keys.PANE or kind == keys.BALANCE) and keys.window_of(key) == "30d"
