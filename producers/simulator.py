"""A deterministic virtual mid-size company: back-office events for the three input topics.

Pure Python, no Kafka: :class:`CompanySimulator` yields ``(topic, key, payload)`` in publication
order, optionally with injected faults (out-of-order, late, duplicate and invalid events),
some of its invoices and trainings in foreign currencies, its office hours in a time zone.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, NamedTuple, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from schemas.errors import ConfigurationError

Event: TypeAlias = dict[str, Any]
Payload: TypeAlias = Event | bytes
#: Returns the current wall-clock time in Unix seconds (``time.time`` in production).
Clock: TypeAlias = Callable[[], float]

#: Logical input topics (SPEC section 1), before any prefix.
TOPICS: tuple[str, ...] = ("invoices", "hiring", "incidents")
#: Dead-letter reasons the simulator can provoke on purpose (``late`` is its own fault kind).
INVALID_REASONS: tuple[str, ...] = (
    "invalid_json",
    "schema",
    "unknown_type",
    "currency",
    "unknown_entity",
    "invalid_transition",
    "future",
)
#: Every kind of injected fault, as reported by :attr:`CompanySimulator.injected`.
FAULT_KINDS: tuple[str, ...] = ("out_of_order", "late", "duplicate", *INVALID_REASONS)
#: Event types that start an entity's lifecycle (docs/SEMANTICS.md, "Lifecycles").
START_TYPES = frozenset(
    {
        "invoice.received",
        "invoice.issued",
        "requisition.opened",
        "employee.hired",
        "incident.opened",
        "ticket.opened",
    }
)

DEPARTMENTS: tuple[str, ...] = ("finance", "hr", "it", "sales", "operations", "marketing")
# Headcount shares; purchases and sales are skewed towards the departments that drive them.
_HEADCOUNT_WEIGHTS = (0.10, 0.05, 0.13, 0.27, 0.35, 0.10)
_PURCHASE_WEIGHTS = (0.08, 0.04, 0.25, 0.10, 0.43, 0.10)
_SALES_WEIGHTS = (0.02, 0.0, 0.08, 0.75, 0.10, 0.05)
SERVICES: tuple[str, ...] = ("erp", "crm", "email", "payroll", "vpn", "website")
_SERVICE_WEIGHTS = (0.25, 0.15, 0.20, 0.05, 0.20, 0.15)
QUEUES: tuple[str, ...] = ("service-desk", "access", "hardware", "software")
_QUEUE_WEIGHTS = (0.45, 0.20, 0.15, 0.20)
_SEVERITIES = ("sev1", "sev2", "sev3", "sev4")
_SEVERITY_WEIGHTS = (0.03, 0.12, 0.40, 0.45)
# Median minutes to acknowledge and hours to resolve, by severity.
_ACK_MEDIAN_MIN = {"sev1": 4.0, "sev2": 8.0, "sev3": 20.0, "sev4": 45.0}
_RESOLVE_MEDIAN_H = {"sev1": 1.5, "sev2": 3.0, "sev3": 8.0, "sev4": 20.0}
_PRIORITIES = ("p1", "p2", "p3", "p4")
_PRIORITY_WEIGHTS = (0.05, 0.15, 0.50, 0.30)
_TICKET_MEDIAN_H = {"p1": 1.0, "p2": 3.0, "p3": 8.0, "p4": 24.0}
# Survey answers 0..10, skewed to 7-9 (mean about 7.6, eNPS about +25).
_SCORE_WEIGHTS = (1, 1, 1, 2, 2, 4, 7, 15, 25, 24, 18)
_REJECT_REASONS = ("duplicate_invoice", "amount_mismatch", "missing_po", "unknown_vendor")
_OTHER_CURRENCIES = ("EUR", "GBP", "JPY", "CHF", "USD")
_CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")
# US dollars per unit, for the first day's rates; other codes get a seeded one.
_USD_PER_UNIT = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CHF": 1.12,
    "JPY": 0.0067,
    "CAD": 0.74,
    "AUD": 0.66,
    "SEK": 0.095,
    "NOK": 0.094,
    "DKK": 0.145,
    "PLN": 0.25,
    "CNY": 0.14,
    "INR": 0.012,
}
_FOREIGN_SHARE = 0.3  # of the invoices and trainings, with --currencies
_RATE_DAILY_SIGMA = 0.004  # log-normal day-to-day move of an exchange rate
_QUARTER_HOUR = 900.0  # every zone's offsets and their changes are whole quarter hours

_DAY = 86400.0
_HOUR = 3600.0
_REJECTION_RATE = 0.06
_YEARLY_TURNOVER = 0.18

# Relative arrival intensity per hour of a weekday (local time), 1.0 = peak office hours.
_WEEKDAY_HOURS = (
    *(0.03,) * 7,
    *(0.25, 0.7, 1.0, 1.0, 1.0, 0.75, 1.0, 1.0, 1.0, 1.0, 0.6, 0.25),
    *(0.08, 0.08, 0.08, 0.04, 0.04),
)
_WEEKEND_FACTOR = 0.08
#: Intensity per hour of the week, Monday 00:00 (local time) first.
OFFICE_PROFILE: tuple[float, ...] = tuple(
    w * (1.0 if day < 5 else _WEEKEND_FACTOR) for day in range(7) for w in _WEEKDAY_HOURS
)
# IT never sleeps entirely: incidents and outages follow usage, with a floor.
_ALWAYS_ON_PROFILE: tuple[float, ...] = tuple(0.35 + 0.65 * w for w in OFFICE_PROFILE)
_OFFICE_OPEN = 0.7  # hours at least this busy count as "at the office" for decisions


def hour_of_week(t: float) -> int:
    """Hour of the week of Unix time ``t`` in UTC, 0 = Monday 00:00 (the epoch was a Thursday)."""
    return (int(t // _HOUR) + 72) % 168


def time_zone(name: str) -> tzinfo:
    """The IANA time zone ``name``; ``ConfigurationError`` if the tz database does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown time zone {name!r} (an IANA name such as UTC or Europe/Berlin)"
        raise ConfigurationError(msg) from None


def foreign_currencies(codes: Iterable[str], reporting: str) -> tuple[str, ...]:
    """``codes`` without repeats, each an ISO 4217 code other than ``reporting``."""
    chosen = tuple(dict.fromkeys(codes))
    for code in chosen:
        if _CURRENCY_CODE.fullmatch(code) is None:
            msg = f"{code!r} is not an ISO 4217 currency code (three letters A-Z)"
            raise ConfigurationError(msg)
        if code == reporting:
            msg = f"{code} is the reporting currency (KPI_CURRENCY), not a foreign one"
            raise ConfigurationError(msg)
    return chosen


def rfc3339(t: float) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp with milliseconds, e.g. ``...T09:30:00.250Z``.

    Truncation (not rounding) keeps the text monotone in ``t``.
    """
    ms = math.floor(t * 1000)
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class Emission(NamedTuple):
    """One message to publish: logical topic, message key, and a JSON-able dict or raw bytes."""

    topic: str
    key: str
    payload: Payload


@dataclass(frozen=True)
class Faults:
    """Fault-injection rates, each 0..1, per valid event published (all 0 = a clean stream).

    ``out_of_order`` delays an event's publication (not its ``occurred_at``) by less than the
    grace period; ``late`` adds an event whose ``occurred_at`` is far beyond grace; ``duplicates``
    re-sends an earlier event unchanged; ``invalid`` maps a dead-letter reason to its rate.
    """

    out_of_order: float = 0.0
    late: float = 0.0
    duplicates: float = 0.0
    invalid: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rates = {"out_of_order": self.out_of_order, "late": self.late}
        rates["duplicates"] = self.duplicates
        rates.update({f"invalid {reason}": rate for reason, rate in self.invalid.items()})
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                msg = f"fault rate {name} must be between 0 and 1, got {rate}"
                raise ConfigurationError(msg)
        unknown = sorted(set(self.invalid) - set(INVALID_REASONS))
        if unknown:
            msg = f"unknown invalid-event reason(s) {', '.join(unknown)}; known: {INVALID_REASONS}"
            raise ConfigurationError(msg)

    @classmethod
    def spread(
        cls,
        *,
        out_of_order: float = 0.0,
        late: float = 0.0,
        duplicates: float = 0.0,
        invalid: float = 0.0,
        reasons: Iterable[str] = INVALID_REASONS,
    ) -> Faults:
        """Faults with a total ``invalid`` rate split evenly over ``reasons``."""
        chosen = tuple(dict.fromkeys(reasons))
        if invalid and not chosen:
            msg = "an invalid-event rate needs at least one reason"
            raise ConfigurationError(msg)
        per_reason = invalid / len(chosen) if chosen else 0.0
        return cls(
            out_of_order=out_of_order,
            late=late,
            duplicates=duplicates,
            invalid={reason: per_reason for reason in chosen if per_reason > 0},
        )


@dataclass
class _Employee:
    employee_id: str
    department: str


class _Outbox(NamedTuple):
    publish_at: float
    seq: int
    emission: Emission
    occurred_at: float
    fault: str | None  # the fault kind this message counts as, if any
    injected: bool  # an extra message made by fault injection (not part of the company)


_Action: TypeAlias = Callable[[float], None]


class CompanySimulator:
    """A deterministic mid-size company emitting back-office events in simulated time.

    Six departments, six IT services and four help-desk queues. Arrivals are Poisson with
    weekday/office-hours intensity (by thinning); durations are log-normal; lifecycle
    follow-ups wait in a heap, so every clean event is valid per docs/SEMANTICS.md.
    The stream is a pure function of the constructor arguments (and of the clock for the
    ``occurred_at`` of injected ``future`` events only); the company's own events do not
    change when faults are switched on, apart from the publication delay of ``out_of_order``.

    Iterating yields every message whose publication time has come according to ``clock``
    and then stops; iterate again later to continue. :meth:`take` and :meth:`next_time`
    give finer control for paced publishing.

    Event and entity ids embed the seed and the start time, so two runs with different
    starts never collide on ids, while a rerun with the same arguments is an exact replay.
    Payloads are shared with the simulator (for duplicates): treat them as read-only.

    With ``currencies``, about 30% of the invoices and trainings are booked in one of them at
    that day's exchange rate (a seeded random walk per currency, one rate per local day):
    ``amount`` (``cost``) in that currency, ``reporting_amount`` in ``currency``, payments in
    the invoice's currency adding up to its amount. The company is otherwise the same as
    without (same times, same amounts in the reporting currency up to the conversion).
    Office hours and weekdays follow the local time of ``timezone``.
    """

    def __init__(
        self,
        seed: int,
        start: float,
        *,
        clock: Clock = time.time,
        wall_clock: Clock | None = None,
        currency: str = "USD",
        currencies: Iterable[str] = (),
        timezone: str = "UTC",
        domains: Iterable[str] = TOPICS,
        faults: Faults | None = None,
        grace_seconds: float = 3600.0,
        scale: float = 1.0,
        initial_headcount: int = 800,
    ) -> None:
        self.domains = tuple(dict.fromkeys(domains))
        unknown = sorted(set(self.domains) - set(TOPICS))
        if unknown or not self.domains:
            msg = f"domains must be a non-empty subset of {', '.join(TOPICS)}, got {self.domains}"
            raise ConfigurationError(msg)
        if scale <= 0 or not math.isfinite(scale):
            msg = f"scale must be a positive number, got {scale}"
            raise ConfigurationError(msg)
        if initial_headcount < 0:
            msg = f"initial_headcount must be >= 0, got {initial_headcount}"
            raise ConfigurationError(msg)
        if grace_seconds < 0:
            msg = f"grace_seconds must be >= 0, got {grace_seconds}"
            raise ConfigurationError(msg)
        self.seed = seed
        self.start = float(start)
        self.currency = currency
        self.currencies = foreign_currencies(currencies, currency)
        self.timezone = timezone
        zone = time_zone(timezone)
        # UTC (the default) keeps the plain arithmetic, and the stream of earlier versions.
        self._zone = None if timezone == "UTC" else zone
        self._offsets: dict[int, float] = {}  # quarter hour -> UTC offset (s), cached
        self.faults = faults or Faults()
        self.grace_seconds = float(grace_seconds)
        self._clock = clock
        # ``clock`` may be a paced, simulated clock running behind the real one; "future"
        # faults must be in the future of the processor's wall clock, so they use this one.
        self._wall_clock = wall_clock or clock
        self._run = f"{seed}-{_base36(int(start))}"
        # Two generators: the company's own randomness never depends on fault injection.
        self._rng = random.Random(seed)
        self._fault_rng = random.Random(f"faults/{seed}")
        # Currencies draw from their own generators: the company does not change with them.
        self._currency_rng = random.Random(f"currencies/{seed}")
        # currency -> (rate per local day from the start's, the generator of its walk)
        self._rates: dict[str, tuple[list[float], random.Random]] = {}

        self._occurrences: list[tuple[float, int, _Action]] = []
        self._outbox: list[_Outbox] = []
        self._seq = itertools.count()
        self._event_n = itertools.count(1)
        self._entity_n = itertools.count(1)
        self._fault_n = itertools.count(1)
        # Publication time of the latest delayed message per (topic, key): an entity's later
        # events may not overtake it, or they would arrive before their start event.
        self._held_back: dict[tuple[str, str], float] = {}
        self._held_back_limit = 1024
        # Recently published clean events, for duplicates and repeated starts.
        self._recent: deque[tuple[float, Emission]] = deque(maxlen=512)
        self._employees: list[_Employee] = []
        self._down: set[str] = set()
        self._now = self.start
        self._published = 0
        self._injected: Counter[str] = Counter()
        self._invalid_rates = tuple((r, p) for r, p in self.faults.invalid.items() if p > 0)

        if "invoices" in self.domains:
            self._arrivals(110 * scale, OFFICE_PROFILE, self._ap_invoice)
            self._arrivals(45 * scale, OFFICE_PROFILE, self._ar_invoice)
        if "hiring" in self.domains:
            for _ in range(initial_headcount):
                self._hire(self.start, self._rng.choices(DEPARTMENTS, _HEADCOUNT_WEIGHTS)[0])
            # About 18% yearly turnover, replaced with some growth on top.
            leavers_per_day = max(initial_headcount, 50) * _YEARLY_TURNOVER / 365 * scale
            self._arrivals(leavers_per_day * 1.2, OFFICE_PROFILE, self._requisition)
            self._arrivals(leavers_per_day, OFFICE_PROFILE, self._departure)
            self._arrivals(30 * scale, OFFICE_PROFILE, self._survey)
            self._arrivals(5 * scale, OFFICE_PROFILE, self._training)
        if "incidents" in self.domains:
            self._arrivals(6 * scale, _ALWAYS_ON_PROFILE, self._incident)
            self._arrivals(70 * scale, OFFICE_PROFILE, self._ticket)
            self._arrivals(0.3 * scale, _ALWAYS_ON_PROFILE, self._outage)

    # -- public API ------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Publication time (simulated Unix seconds) of the last message taken."""
        return self._now

    @property
    def published(self) -> int:
        """Messages taken so far, injected ones included."""
        return self._published

    @property
    def injected(self) -> dict[str, int]:
        """Exact count of each fault kind among the messages taken so far (see FAULT_KINDS)."""
        return {kind: self._injected[kind] for kind in FAULT_KINDS if self._injected[kind]}

    def next_time(self) -> float:
        """Simulated publication time of the next message (it may be after the clock)."""
        self._advance()
        return self._outbox[0].publish_at

    def take(self) -> Emission | None:
        """The next message if its publication time is not after ``clock()``, else ``None``."""
        self._advance()
        if self._outbox[0].publish_at > self._clock():
            return None
        return self._pop()

    def skip_to(self, published: int) -> None:
        """Take messages without returning them, whatever the clock, until ``published`` were.

        A restarted run (``kpi simulate --state-file``) skips what it had published: the
        stream after them, ids included, is the one the first run would have gone on with.
        """
        while self._published < published:
            self._advance()
            self._pop()

    def _pop(self) -> Emission:
        item = heapq.heappop(self._outbox)
        self._now = item.publish_at
        self._published += 1
        if item.fault is not None:
            self._injected[item.fault] += 1
        if not item.injected:
            self._recent.append((item.occurred_at, item.emission))
            self._inject(item.publish_at, item.emission.topic)
        return item.emission

    def __iter__(self) -> Iterator[Emission]:
        """Every message that is due now; stops when the simulation catches up with the clock."""
        while (emission := self.take()) is not None:
            yield emission

    # -- engine ----------------------------------------------------------------------------

    def _advance(self) -> None:
        # Run occurrences until none can produce a message publishable before the outbox head:
        # a message is never published before it occurs, so this keeps publication ordered.
        occurrences, outbox = self._occurrences, self._outbox
        while not outbox or occurrences[0][0] <= outbox[0].publish_at:
            t, _, action = heapq.heappop(occurrences)
            action(t)

    def _at(self, t: float, action: _Action) -> None:
        heapq.heappush(self._occurrences, (t, next(self._seq), action))

    def _arrivals(self, per_day: float, profile: tuple[float, ...], on_arrival: _Action) -> None:
        """A non-homogeneous Poisson process averaging ``per_day`` arrivals, shaped by profile."""
        peak_rate = per_day / _DAY / (sum(profile) / len(profile))
        rng = self._rng

        def next_arrival(t: float) -> float:
            # Thinning (Lewis-Shedler): candidates at the peak rate, kept with prob profile(t).
            while True:
                t += rng.expovariate(peak_rate)
                if rng.random() < profile[self._hour_of_week(t)]:
                    return t

        def arrive(t: float) -> None:
            on_arrival(t)
            self._at(next_arrival(t), arrive)

        self._at(next_arrival(self.start), arrive)

    def _emit(self, t: float, topic: str, key: str, type_: str, fields: Event) -> None:
        event: Event = {
            "event_id": f"sim-{self._run}-{next(self._event_n)}",
            "type": type_,
            "occurred_at": rfc3339(t),
            **fields,
        }
        publish_at, fault = t, None
        rate = self.faults.out_of_order
        # Delay by at most 90% of grace, so the event is out of order yet never late.
        if rate and self.grace_seconds > 1 and self._fault_rng.random() < rate:
            publish_at += self._fault_rng.uniform(0.05, 0.9) * self.grace_seconds
            fault = "out_of_order"
        entity = (topic, key)
        publish_at = max(publish_at, self._held_back.get(entity, publish_at))
        if publish_at > t:
            self._held_back[entity] = publish_at
            if len(self._held_back) > self._held_back_limit:
                # Entries up to now can no longer delay anything: events occur from now on.
                self._held_back = {k: v for k, v in self._held_back.items() if v > t}
                self._held_back_limit = 2 * len(self._held_back) + 1024
        else:
            self._held_back.pop(entity, None)
        item = _Outbox(publish_at, next(self._seq), Emission(topic, key, event), t, fault, False)
        heapq.heappush(self._outbox, item)

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{self._run}-{next(self._entity_n)}"

    def _lognormal(self, median: float, sigma: float) -> float:
        return self._rng.lognormvariate(math.log(median), sigma)

    def _at_office(self, t: float) -> float:
        """``t`` if it falls in office hours, else a random moment in the next office hour."""
        if OFFICE_PROFILE[self._hour_of_week(t)] >= _OFFICE_OPEN:
            return t
        # Local hours start at a whole quarter hour of UTC in every zone (+05:45 included).
        opens = (t // _QUARTER_HOUR + 1) * _QUARTER_HOUR
        while OFFICE_PROFILE[self._hour_of_week(opens)] < _OFFICE_OPEN:
            opens += _QUARTER_HOUR
        return opens + self._rng.uniform(0.0, _HOUR)

    def _hour_of_week(self, t: float) -> int:
        """Hour of the week of ``t`` in the simulator's time zone (0 = Monday 00:00 local)."""
        if self._zone is None:
            return hour_of_week(t)
        return hour_of_week(t + self._utc_offset(t))

    def _utc_offset(self, t: float) -> float:
        quarter = int(t // _QUARTER_HOUR)
        offset = self._offsets.get(quarter)
        if offset is None:
            moment = datetime.fromtimestamp(quarter * _QUARTER_HOUR, tz=self._zone)
            delta = moment.utcoffset()
            offset = self._offsets[quarter] = delta.total_seconds() if delta else 0.0
        return offset

    # -- currencies ------------------------------------------------------------------------

    def _money(self, t: float, cents: int, field: str = "amount") -> tuple[Event, int]:
        """``field``, ``currency`` (and ``reporting_amount``) of ``cents`` booked at ``t``.

        Also the amount in cents in the event's currency, which its payments add up to.
        """
        if not self.currencies or self._currency_rng.random() >= _FOREIGN_SHARE:
            return {field: cents / 100, "currency": self.currency}, cents
        currency = self._currency_rng.choice(self.currencies)
        rate = self._rate(currency, t)
        foreign = max(round(cents / rate), 1)
        booked = max(round(foreign * rate), 1)
        fields = {field: foreign / 100, "currency": currency, "reporting_amount": booked / 100}
        return fields, foreign

    def _rate(self, currency: str, t: float) -> float:
        """Units of the reporting currency per unit of ``currency`` on ``t``'s local day."""
        if currency not in self._rates:
            # A random walk of its own per currency: a day's rate does not depend on which
            # invoices asked for which days first.
            rng = random.Random(f"fx/{self.seed}/{currency}")
            usd_per_unit = _USD_PER_UNIT.get(currency) or rng.uniform(0.05, 2.0)
            reporting_usd = _USD_PER_UNIT.get(self.currency) or 1.0
            self._rates[currency] = ([usd_per_unit / reporting_usd], rng)
        rates, rng = self._rates[currency]
        day = max(self._local_day(t) - self._local_day(self.start), 0)
        while len(rates) <= day:
            rates.append(rates[-1] * rng.lognormvariate(0.0, _RATE_DAILY_SIGMA))
        return rates[day]

    def _local_day(self, t: float) -> int:
        offset = 0.0 if self._zone is None else self._utc_offset(t)
        return int((t + offset) // _DAY)

    def _amount_cents(self, median: float, sigma: float, low: float, high: float) -> int:
        return round(min(max(self._lognormal(median, sigma), low), high) * 100)

    def _split(self, cents: int, parts: int) -> list[int]:
        """``cents`` split into ``parts`` positive integer parts summing exactly to it."""
        if parts <= 1 or cents < parts * 100:
            return [cents]
        cuts = sorted(self._rng.sample(range(1, cents), parts - 1))
        return [b - a for a, b in zip([0, *cuts], [*cuts, cents], strict=True)]

    # -- invoices --------------------------------------------------------------------------

    def _ap_invoice(self, t: float) -> None:
        rng = self._rng
        invoice_id = self._new_id("ap")
        cents = self._amount_cents(1800.0, 1.1, 25.0, 500_000.0)
        department = rng.choices(DEPARTMENTS, _PURCHASE_WEIGHTS)[0]
        vendor = f"vendor-{rng.randint(1, 400):04d}"
        money, owed = self._money(t, cents)
        self._emit(
            t,
            "invoices",
            invoice_id,
            "invoice.received",
            {"invoice_id": invoice_id, **money, "department": department, "vendor_id": vendor},
        )
        decided = self._at_office(t + self._lognormal(1.2 * _DAY, 0.9))
        if rng.random() < _REJECTION_RATE:
            reason = rng.choice(_REJECT_REASONS)
            self._at(
                decided,
                lambda at: self._emit(
                    at,
                    "invoices",
                    invoice_id,
                    "invoice.rejected",
                    {"invoice_id": invoice_id, "reason": reason},
                ),
            )
            return
        self._at(
            decided,
            lambda at: self._emit(
                at, "invoices", invoice_id, "invoice.approved", {"invoice_id": invoice_id}
            ),
        )
        # Net-30-ish terms: a first payment run weeks later, the rest in later runs.
        parts = _scaled(self._split(cents, rng.choices((1, 2, 3), (0.6, 0.3, 0.1))[0]), owed)
        paid = self._at_office(decided + self._lognormal(18 * _DAY, 0.4))
        for part in parts:
            if part:
                self._at(paid, self._payment(invoice_id, "invoice.paid", part))
            paid = self._at_office(paid + self._lognormal(7 * _DAY, 0.5))

    def _ar_invoice(self, t: float) -> None:
        rng = self._rng
        invoice_id = self._new_id("ar")
        cents = self._amount_cents(6000.0, 1.0, 50.0, 2_000_000.0)
        money, owed = self._money(t, cents)
        self._emit(
            t,
            "invoices",
            invoice_id,
            "invoice.issued",
            {
                "invoice_id": invoice_id,
                **money,
                "department": rng.choices(DEPARTMENTS, _SALES_WEIGHTS)[0],
                "customer_id": f"cust-{rng.randint(1, 250):04d}",
            },
        )
        if rng.random() < 0.02:  # bad debt: never paid
            return
        # Customers pay a month or more later, sometimes in instalments: DSO of 30-60 days.
        parts = _scaled(self._split(cents, rng.choices((1, 2, 3), (0.65, 0.25, 0.10))[0]), owed)
        paid = self._at_office(t + self._lognormal(35 * _DAY, 0.35))
        for part in parts:
            if part:
                self._at(paid, self._payment(invoice_id, "payment.received", part))
            paid = self._at_office(paid + self._lognormal(10 * _DAY, 0.5))

    def _payment(self, invoice_id: str, type_: str, cents: int) -> _Action:
        def pay(at: float) -> None:
            fields = {"invoice_id": invoice_id, "amount": cents / 100}
            self._emit(at, "invoices", invoice_id, type_, fields)

        return pay

    # -- hiring ----------------------------------------------------------------------------

    def _hire(self, t: float, department: str) -> None:
        employee = _Employee(self._new_id("emp"), department)
        self._employees.append(employee)
        fields = {"employee_id": employee.employee_id, "department": department}
        self._emit(t, "hiring", employee.employee_id, "employee.hired", fields)

    def _requisition(self, t: float) -> None:
        rng = self._rng
        requisition_id = self._new_id("req")
        department = rng.choices(DEPARTMENTS, _HEADCOUNT_WEIGHTS)[0]
        fields = {"requisition_id": requisition_id, "department": department}
        self._emit(t, "hiring", requisition_id, "requisition.opened", fields)
        if rng.random() < 0.1:  # withdrawn or still open: never filled
            return
        accepted = self._at_office(t + self._lognormal(30 * _DAY, 0.45))
        starts = self._at_office(accepted + self._lognormal(21 * _DAY, 0.4))
        candidate = self._new_id("cand")

        def accept(at: float) -> None:
            fields = {"requisition_id": requisition_id, "candidate_id": candidate}
            self._emit(at, "hiring", requisition_id, "offer.accepted", fields)

        self._at(accepted, accept)
        self._at(starts, lambda at: self._hire(at, department))

    def _departure(self, t: float) -> None:
        if not self._employees:
            return
        rng = self._rng
        index = rng.randrange(len(self._employees))
        # Swap-remove: O(1), and the order of the others does not matter.
        self._employees[index], self._employees[-1] = self._employees[-1], self._employees[index]
        employee = self._employees.pop()
        fields = {"employee_id": employee.employee_id, "voluntary": rng.random() < 0.75}
        self._emit(t, "hiring", employee.employee_id, "employee.left", fields)

    def _survey(self, t: float) -> None:
        rng = self._rng
        response_id = self._new_id("resp")
        fields = {
            "response_id": response_id,
            "department": rng.choices(DEPARTMENTS, _HEADCOUNT_WEIGHTS)[0],
            "score": rng.choices(range(11), _SCORE_WEIGHTS)[0],
        }
        self._emit(t, "hiring", response_id, "survey.submitted", fields)

    def _training(self, t: float) -> None:
        if not self._employees:
            return
        employee = self._rng.choice(self._employees)
        training_id = self._new_id("trn")
        cents = self._amount_cents(900.0, 0.7, 50.0, 20_000.0)
        fields = {
            "training_id": training_id,
            "employee_id": employee.employee_id,
            "department": employee.department,
            **self._money(t, cents, "cost")[0],
        }
        self._emit(t, "hiring", training_id, "training.completed", fields)

    # -- incidents -------------------------------------------------------------------------

    def _incident(self, t: float, service: str | None = None, severity: str | None = None) -> None:
        rng = self._rng
        incident_id = self._new_id("inc")
        service = service or rng.choices(SERVICES, _SERVICE_WEIGHTS)[0]
        if severity is None:
            severity = rng.choices(_SEVERITIES, _SEVERITY_WEIGHTS)[0]
            draw = rng.random()
            category = "security" if draw < 0.03 else "outage" if draw < 0.18 else "other"
        else:
            category = "outage"
        fields = {
            "incident_id": incident_id,
            "service": service,
            "severity": severity,
            "category": category,
        }
        self._emit(t, "incidents", incident_id, "incident.opened", fields)
        acknowledged = t + self._lognormal(_ACK_MEDIAN_MIN[severity] * 60, 0.8)
        resolved = acknowledged + self._lognormal(_RESOLVE_MEDIAN_H[severity] * _HOUR, 0.9)
        if rng.random() >= 0.06:  # a few are fixed before anyone acknowledges them
            self._at(acknowledged, self._follow_up(incident_id, "incident.acknowledged"))
        self._at(resolved, self._follow_up(incident_id, "incident.resolved"))

    def _ticket(self, t: float) -> None:
        rng = self._rng
        ticket_id = self._new_id("tkt")
        priority = rng.choices(_PRIORITIES, _PRIORITY_WEIGHTS)[0]
        fields = {
            "ticket_id": ticket_id,
            "queue": rng.choices(QUEUES, _QUEUE_WEIGHTS)[0],
            "priority": priority,
        }
        self._emit(t, "incidents", ticket_id, "ticket.opened", fields)
        resolved = t + self._lognormal(_TICKET_MEDIAN_H[priority] * _HOUR, 1.0)
        self._at(resolved, self._follow_up(ticket_id, "ticket.resolved"))

    def _follow_up(self, entity_id: str, type_: str) -> _Action:
        id_field = "ticket_id" if type_.startswith("ticket.") else "incident_id"
        return lambda at: self._emit(at, "incidents", entity_id, type_, {id_field: entity_id})

    def _outage(self, t: float) -> None:
        rng = self._rng
        service = rng.choices(SERVICES, _SERVICE_WEIGHTS)[0]
        if service in self._down:
            return
        self._down.add(service)
        duration = min(max(self._lognormal(25 * 60, 1.1), 60.0), 12 * _HOUR)
        self._emit(t, "incidents", service, "service.down", {"service": service})
        if rng.random() < 0.1:  # monitoring flaps: a repeated "down" while already down
            again = t + rng.uniform(0.2, 0.8) * duration
            self._at(again, self._status(service, "service.down"))
        if rng.random() < 0.85:  # most outages are also handled as an incident
            severity = "sev1" if rng.random() < 0.6 else "sev2"
            noticed = t + rng.uniform(60.0, 300.0)
            self._at(noticed, lambda at: self._incident(at, service, severity))

        def recover(at: float) -> None:
            self._down.discard(service)
            self._emit(at, "incidents", service, "service.up", {"service": service})

        self._at(t + duration, recover)

    def _status(self, service: str, type_: str) -> _Action:
        return lambda at: self._emit(at, "incidents", service, type_, {"service": service})

    # -- fault injection -------------------------------------------------------------------

    def _inject(self, now: float, topic: str) -> None:
        """Roll the dice for each fault after a clean event was published at ``now``."""
        faults, rng = self.faults, self._fault_rng
        if faults.late and rng.random() < faults.late:
            # Beyond twice the grace and a day more: late even if this event itself was delayed.
            occurred = now - 2 * self.grace_seconds - rng.uniform(1 * _DAY, 5 * _DAY)
            key, event = self._fresh(topic, occurred)
            self._push_fault(now, topic, key, event, "late")
        if faults.duplicates and rng.random() < faults.duplicates:
            # Only recent events: a redelivery within the 7-day dedup horizon.
            candidates = [e for at, e in self._recent if at >= now - _DAY]
            if candidates:
                original = rng.choice(candidates)
                payload = original.payload
                copy = dict(payload) if isinstance(payload, dict) else payload
                self._push_fault(now, original.topic, original.key, copy, "duplicate")
        for reason, rate in self._invalid_rates:
            if rng.random() < rate:
                self._inject_invalid(reason, now, topic)

    def _push_fault(self, now: float, topic: str, key: str, payload: Payload, kind: str) -> None:
        emission = Emission(topic, key, payload)
        heapq.heappush(self._outbox, _Outbox(now, next(self._seq), emission, now, kind, True))

    def _fault_id(self, kind: str) -> str:
        return f"{kind}-{self._run}-x{next(self._fault_n)}"

    def _fresh(self, topic: str, t: float) -> tuple[str, Event]:
        """A new, self-contained (no follow-ups needed) event of ``topic`` at time ``t``."""
        rng = self._fault_rng
        event: Event = {"event_id": self._fault_id("sim"), "occurred_at": rfc3339(t)}
        if topic == "invoices":
            key = self._fault_id("ar")
            event |= {
                "type": "invoice.issued",
                "invoice_id": key,
                "amount": round(rng.uniform(100, 5000), 2),
                "currency": self.currency,
                "department": rng.choice(DEPARTMENTS),
                "customer_id": f"cust-{rng.randint(1, 250):04d}",
            }
        elif topic == "hiring":
            key = self._fault_id("resp")
            event |= {
                "type": "survey.submitted",
                "response_id": key,
                "department": rng.choice(DEPARTMENTS),
                "score": rng.randint(0, 10),
            }
        else:
            key = self._fault_id("tkt")
            event |= {
                "type": "ticket.opened",
                "ticket_id": key,
                "queue": rng.choice(QUEUES),
                "priority": rng.choice(_PRIORITIES),
            }
        return key, event

    def _inject_invalid(self, reason: str, now: float, topic: str) -> None:
        rng = self._fault_rng
        if reason == "currency" and topic == "incidents":
            # No incidents event carries a currency: use another domain's topic if any.
            others = [d for d in self.domains if d != "incidents"]
            if not others:
                return
            topic = rng.choice(others)
        key, event = self._fresh(topic, now)
        payload: Payload = event
        if reason == "invalid_json":
            raw = orjson.dumps(event)
            payload = rng.choice(
                (
                    raw[: rng.randrange(1, len(raw) - 1)],  # truncated: no closing brace
                    b"\xff\xfe" + raw,  # not UTF-8
                    b"<html><body>502 Bad Gateway</body></html>",
                )
            )
        elif reason == "schema":
            self._break_schema(event)
        elif reason == "unknown_type":
            if rng.random() < 0.5:
                event["type"] = rng.choice(("invoice.cancelled", "employee.promoted", "ping"))
            else:  # a valid event, but of another topic
                other = rng.choice([t for t in TOPICS if t != topic])
                key, payload = self._fresh(other, now)
        elif reason == "currency":
            if topic == "hiring":
                event = self._fresh_training(now)
                key, payload = event["training_id"], event
            event["currency"] = rng.choice([c for c in _OTHER_CURRENCIES if c != self.currency])
        elif reason == "unknown_entity":
            key, payload = self._orphan(topic, now)
        elif reason == "invalid_transition":
            starts = [e for _, e in self._recent if e.topic == topic and _type(e) in START_TYPES]
            if not starts:
                return
            original = rng.choice(starts)
            key, started = original.key, original.payload
            if not isinstance(started, dict):
                return
            # The same entity started again (a new event, not a redelivery), now.
            payload = {
                **started,
                "event_id": self._fault_id("sim"),
                "occurred_at": rfc3339(now),
            }
        elif reason == "future":
            ahead = max(self._wall_clock(), now) + rng.uniform(1 * _DAY, 2 * _DAY)
            event["occurred_at"] = rfc3339(ahead)
        self._push_fault(now, topic, key, payload, reason)

    def _fresh_training(self, t: float) -> Event:
        rng = self._fault_rng
        return {
            "event_id": self._fault_id("sim"),
            "type": "training.completed",
            "occurred_at": rfc3339(t),
            "training_id": self._fault_id("trn"),
            "employee_id": self._fault_id("emp"),
            "department": rng.choice(DEPARTMENTS),
            "cost": round(rng.uniform(100, 3000), 2),
            "currency": self.currency,
        }

    def _break_schema(self, event: Event) -> None:
        """Make exactly one field of a fresh event break the schema."""
        rng = self._fault_rng
        dimension = next(f for f in ("department", "queue") if f in event)
        breakages: list[Callable[[], None]] = [
            lambda: event.update(occurred_at=event["occurred_at"].removesuffix("Z")),  # naive
            lambda: event.update({dimension: "Sales & Marketing"}),  # bad dimension value
            lambda: event.pop("event_id"),
            lambda: event.pop(dimension),
        ]
        if "amount" in event:
            breakages.append(lambda: event.update(amount=-event["amount"]))
            breakages.append(lambda: event.update(amount="a lot"))
        if "score" in event:
            breakages.append(lambda: event.update(score=11))
            breakages.append(lambda: event.update(score=7.5))
        if "priority" in event:
            breakages.append(lambda: event.update(priority="P1"))
        rng.choice(breakages)()

    def _orphan(self, topic: str, t: float) -> tuple[str, Event]:
        """A follow-up event for an entity that was never started."""
        rng = self._fault_rng
        event: Event = {"event_id": self._fault_id("sim"), "occurred_at": rfc3339(t)}
        if topic == "invoices":
            key = self._fault_id("ap")
            if rng.random() < 0.5:
                event |= {"type": "invoice.approved", "invoice_id": key}
            else:
                event |= {"type": "payment.received", "invoice_id": key, "amount": 100.0}
        elif topic == "hiring":
            key = self._fault_id("emp")
            event |= {"type": "employee.left", "employee_id": key, "voluntary": True}
        else:
            key = self._fault_id("inc")
            event |= {"type": "incident.resolved", "incident_id": key}
        return key, event


def _scaled(parts: list[int], total: int) -> list[int]:
    """``parts`` rescaled to add up to ``total`` exactly, each at least 1.

    Instalments planned in the reporting currency, paid in the invoice's own: rounded
    cumulatively, so the last one takes what the others left.
    """
    whole, n = sum(parts), len(parts)
    if total == whole:
        return parts
    if total < n:  # too small to split (no amount the company books)
        return [total, *([0] * (n - 1))]
    scaled, done, running = [], 0, 0
    for k, part in enumerate(parts):
        running += part
        cut = (2 * running * total + whole) // (2 * whole)  # round(running * total / whole)
        # Leave at least 1 for each part after this one, and take at least 1.
        cut = total if k == n - 1 else min(max(cut, done + 1), total - (n - 1 - k))
        scaled.append(cut - done)
        done = cut
    return scaled


def _type(emission: Emission) -> str | None:
    payload = emission.payload
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) else None


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
