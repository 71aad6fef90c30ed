"""The contract's input events (SPEC section 1): one frozen pydantic model per event type.

The models are built for the decoder, which feeds them what ``orjson`` parsed: plain ``dict``,
``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``. Every field is strict (no ``"5"``
for an id, no ``1`` for a boolean) except where the contract allows a choice (amounts as
numbers or numeric strings). Rules that pydantic cannot check in Rust are small plain Python
validators, kept to one call per field because they run for every message.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "AMOUNT_MAX",
    "CURRENCY_PATTERN",
    "DIMENSION_PATTERN",
    "ID_FORBIDDEN_PATTERN",
    "MODEL_OF_TYPE",
    "NUMERIC_STRING_PATTERN",
    "RESERVED_SCOPE",
    "RFC3339_PATTERN",
    "PricedEvent",
    "TOPIC_OF_TYPE",
    "TYPES_OF_TOPIC",
    "Event",
    "EventBase",
    "EmployeeHired",
    "EmployeeLeft",
    "IncidentAcknowledged",
    "IncidentOpened",
    "IncidentResolved",
    "InvoiceApproved",
    "InvoiceIssued",
    "InvoicePaid",
    "InvoiceReceived",
    "InvoiceRejected",
    "OfferAccepted",
    "PaymentReceived",
    "RequisitionOpened",
    "ServiceDown",
    "ServiceUp",
    "SurveySubmitted",
    "TicketOpened",
    "TicketResolved",
    "TrainingCompleted",
    "key_of",
]

#: Dimension values (department, service, queue); also the shape of a Redis/Prometheus scope.
DIMENSION_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
#: The roll-up scope; a dimension value may never take it.
RESERVED_SCOPE: Final = "all"
#: ISO 4217 shape. The models only require a string: the shape, the equality with the
#: reporting currency and the ``reporting_amount`` of a foreign one are the decoder's
#: ``currency`` check (SPEC section 1: a currency that is not a code is ``currency``).
CURRENCY_PATTERN: Final = r"^[A-Z]{3}$"
#: What JSON Schema can say of "printable": an id has no C0/C1 control character (used as
#: ``"not": {"pattern": ...}``, which needs no ``$`` anchor: Python's ``$`` also matches before a
#: final newline). The decoder is stricter (``str.isprintable``: also no format, private-use,
#: unassigned or non-space separator characters).
ID_FORBIDDEN_PATTERN: Final = r"[\u0000-\u001f\u007f-\u009f]"
#: RFC 3339 ``date-time`` (section 5.6) with its mandatory offset: ``T``/``Z`` in either case,
#: and a space for ``T`` as the RFC's note allows; any number of fraction digits. ``[0-9]``
#: rather than ``\d``: Python's ``\d`` also matches non-ASCII digits. Field ranges are checked
#: here; day-of-month validity and leap seconds are left to ``datetime`` (which has no second
#: 60, so leap seconds are rejected).
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]"
    r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
#: A numeric-string amount: a decimal number, optional sign, fraction and exponent; no space,
#: ``_``, hex, ``inf`` or ``nan`` (which ``float()`` alone would take). Same grammar as the
#: batch reference of the tests (tests/reference.py).
NUMERIC_STRING_PATTERN: Final = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
#: The same without a minus sign, for JSON Schema: a negative amount fails the range anyway.
_POSITIVE_NUMERIC_STRING_PATTERN: Final = r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
AMOUNT_MAX: Final = 1e12

_ID_MAX_LENGTH: Final = 128
_RFC3339 = re.compile(RFC3339_PATTERN)
_NUMERIC_STRING = re.compile(NUMERIC_STRING_PATTERN)
# Pydantic error types of the custom validators (what ``ValidationError.errors()`` reports).
_TIMESTAMP_ERROR: Final = "timestamp"
_AMOUNT_ERROR: Final = "amount"
_ID_ERROR: Final = "entity_id"
_DIMENSION_ERROR: Final = "dimension"


def _parse_occurred_at(value: object) -> datetime:
    """An RFC 3339 string with offset (or an aware ``datetime``), as a UTC datetime."""
    if type(value) is str:
        if _RFC3339.fullmatch(value) is None:
            raise PydanticCustomError(
                _TIMESTAMP_ERROR,
                "not an RFC 3339 timestamp with offset (e.g. 2024-05-01T12:00:00Z)",
            )
        try:
            # fromisoformat (3.11) wants an upper-case T/Z (a space is fine); it truncates
            # fractions to microseconds. astimezone can overflow at the ends of the calendar
            # (9999-12-31T23:59:59-01:00).
            return datetime.fromisoformat(value.upper()).astimezone(UTC)
        except (ValueError, OverflowError):
            raise PydanticCustomError(
                _TIMESTAMP_ERROR,
                "not a valid date and time (day, leap second or year out of range)",
            ) from None
    if isinstance(value, datetime):
        # Only Python callers (producers, tests) pass datetimes; JSON never yields one.
        if value.utcoffset() is None:
            raise PydanticCustomError(_TIMESTAMP_ERROR, "naive timestamp, an offset is required")
        return value.astimezone(UTC)
    # Epoch numbers are refused on purpose: seconds or milliseconds would be a guess.
    raise PydanticCustomError(_TIMESTAMP_ERROR, "must be an RFC 3339 string with offset")


def _format_occurred_at(value: datetime) -> str:
    """The RFC 3339 spelling of a UTC datetime, with ``Z`` (the inverse of the parser)."""
    return value.isoformat().replace("+00:00", "Z")


def _parse_amount(value: object) -> float:
    """A JSON number or numeric string, finite, > 0 and <= 1e12, as a float."""
    # Exact type checks: bool is an int subclass and must not pass as 1.0.
    if type(value) is float:
        amount = value
    elif type(value) is int:
        # orjson yields ints of at most 64 bits, but Python callers may pass any int.
        amount = float(value) if -(2**64) < value < 2**64 else math.inf
    elif type(value) is str:
        if _NUMERIC_STRING.fullmatch(value) is None:
            raise PydanticCustomError(_AMOUNT_ERROR, "not a number nor a numeric string")
        amount = float(value)  # "1e400" gives inf, refused below
    else:
        raise PydanticCustomError(_AMOUNT_ERROR, "must be a JSON number or a numeric string")
    # Written so that NaN and inf fail as well.
    if not 0.0 < amount <= AMOUNT_MAX:
        raise PydanticCustomError(_AMOUNT_ERROR, "must be finite, > 0 and <= 1e12")
    return amount


def _parse_optional_amount(value: object) -> float | None:
    """``reporting_amount``: an amount, or JSON null for "not given" (as a missing field)."""
    return None if value is None else _parse_amount(value)


def _check_id(value: object) -> str:
    """A JSON string of 1-128 printable characters."""
    if type(value) is not str:
        raise PydanticCustomError(_ID_ERROR, "must be a JSON string")
    if not 0 < len(value) <= _ID_MAX_LENGTH:
        raise PydanticCustomError(_ID_ERROR, "must be 1-128 characters")
    if not value.isprintable():
        raise PydanticCustomError(_ID_ERROR, "must be printable characters only")
    return value


def _not_reserved(value: str) -> str:
    if value == RESERVED_SCOPE:
        raise PydanticCustomError(_DIMENSION_ERROR, "'all' is reserved for the roll-up")
    return value


#: Event ids only have a length rule.
EventId = Annotated[str, StringConstraints(min_length=1, max_length=_ID_MAX_LENGTH)]
EntityId = Annotated[
    str,
    PlainValidator(_check_id),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": _ID_MAX_LENGTH,
            "not": {"pattern": ID_FORBIDDEN_PATTERN},
        }
    ),
]
Dimension = Annotated[
    str,
    StringConstraints(pattern=DIMENSION_PATTERN),
    AfterValidator(_not_reserved),
    WithJsonSchema(
        {"type": "string", "pattern": DIMENSION_PATTERN, "not": {"const": RESERVED_SCOPE}}
    ),
]
_AMOUNT_JSON_SCHEMA: Final[list[dict[str, object]]] = [
    {"type": "number", "exclusiveMinimum": 0, "maximum": AMOUNT_MAX},
    {"type": "string", "pattern": _POSITIVE_NUMERIC_STRING_PATTERN},
]
Amount = Annotated[
    float,
    PlainValidator(_parse_amount),
    WithJsonSchema({"anyOf": _AMOUNT_JSON_SCHEMA}),
]
#: The same amount in the reporting currency, as the source system booked it: required
#: (by the decoder) when ``currency`` is not the reporting currency, ignored when it is.
ReportingAmount = Annotated[
    float | None,
    PlainValidator(_parse_optional_amount),
    WithJsonSchema({"anyOf": [*_AMOUNT_JSON_SCHEMA, {"type": "null"}]}),
]
Currency = Annotated[str, WithJsonSchema({"type": "string", "pattern": CURRENCY_PATTERN})]
Timestamp = Annotated[
    datetime,
    PlainValidator(_parse_occurred_at),
    # Explicit, because pydantic's default datetime serializer behind a PlainValidator runs
    # twice in JSON mode and warns; this also pins the spelling to RFC 3339 with "Z".
    PlainSerializer(_format_occurred_at, when_used="json"),
    # No "format": "date-time": validators that assert formats refuse the space separator.
    WithJsonSchema({"type": "string", "pattern": RFC3339_PATTERN}),
]
Score = Annotated[int, Field(ge=0, le=10)]


class EventBase(BaseModel):
    """Fields every event has. Subclasses add ``type`` and their own fields."""

    # strict: JSON types are part of the contract (ids are strings, flags are booleans).
    # extra="ignore": producers may add fields without breaking the processor.
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    #: Logical (unprefixed) input topic the type belongs to.
    topic: ClassVar[str]
    #: Field whose value is the Kafka message key (and the entity the event is about).
    key_field: ClassVar[str]

    event_id: EventId
    occurred_at: Timestamp

    @property
    def occurred_at_s(self) -> float:
        """Event time as UTC epoch seconds, the unit the streaming core works in."""
        return self.occurred_at.timestamp()


# ---- topic "invoices" -------------------------------------------------------------------


class InvoiceReceived(EventBase):
    """A supplier invoice enters accounts payable (AP)."""

    topic: ClassVar[str] = "invoices"
    key_field: ClassVar[str] = "invoice_id"
    type: Literal["invoice.received"]
    invoice_id: EntityId
    amount: Amount
    currency: Currency
    department: Dimension
    vendor_id: EntityId
    #: ``amount`` in the reporting currency; after ``decode``, set only for a foreign currency.
    reporting_amount: ReportingAmount = None


class InvoiceApproved(EventBase):
    """An AP invoice is approved for payment."""

    topic: ClassVar[str] = "invoices"
    key_field: ClassVar[str] = "invoice_id"
    type: Literal["invoice.approved"]
    invoice_id: EntityId


class InvoiceRejected(EventBase):
    """An AP invoice is rejected because of an error."""

    topic: ClassVar[str] = "invoices"
    key_field: ClassVar[str] = "invoice_id"
    type: Literal["invoice.rejected"]
    invoice_id: EntityId
    reason: str


class InvoicePaid(EventBase):
    """(Part of) an approved AP invoice is paid to the supplier."""

    topic: ClassVar[str] = "invoices"
    key_field: ClassVar[str] = "invoice_id"
    type: Literal["invoice.paid"]
    invoice_id: EntityId
    amount: Amount


class InvoiceIssued(EventBase):
    """A customer invoice is issued: a credit sale, accounts receivable (AR) grows."""

    topic: ClassVar[str] = "invoices"
    key_field: ClassVar[str] = "invoice_id"
    type: Literal["invoice.issued"]
    invoice_id: EntityId
    amount: Amount
    currency: Currency
    department: Dimension
    customer_id: EntityId
    #: ``amount`` in the reporting currency; after ``decode``, set only for a foreign currency.
    reporting_amount: ReportingAmount = None


class PaymentReceived(EventBase):
    """A customer pays (part of) an issued invoice."""

    topic: ClassVar[str] = "invoices"
    key_field: ClassVar[str] = "invoice_id"
    type: Literal["payment.received"]
    invoice_id: EntityId
    amount: Amount


# ---- topic "hiring" ---------------------------------------------------------------------


class RequisitionOpened(EventBase):
    """A vacancy is opened."""

    topic: ClassVar[str] = "hiring"
    key_field: ClassVar[str] = "requisition_id"
    type: Literal["requisition.opened"]
    requisition_id: EntityId
    department: Dimension


class OfferAccepted(EventBase):
    """A vacancy is filled."""

    topic: ClassVar[str] = "hiring"
    key_field: ClassVar[str] = "requisition_id"
    type: Literal["offer.accepted"]
    requisition_id: EntityId
    candidate_id: EntityId


class EmployeeHired(EventBase):
    """Employment starts; headcount +1."""

    topic: ClassVar[str] = "hiring"
    key_field: ClassVar[str] = "employee_id"
    type: Literal["employee.hired"]
    employee_id: EntityId
    department: Dimension


class EmployeeLeft(EventBase):
    """Employment ends; headcount -1 in the department given at hire."""

    topic: ClassVar[str] = "hiring"
    key_field: ClassVar[str] = "employee_id"
    type: Literal["employee.left"]
    employee_id: EntityId
    voluntary: bool


class SurveySubmitted(EventBase):
    """One satisfaction survey answer (score: a JSON integer 0-10)."""

    topic: ClassVar[str] = "hiring"
    key_field: ClassVar[str] = "response_id"
    type: Literal["survey.submitted"]
    response_id: EntityId
    department: Dimension
    score: Score


class TrainingCompleted(EventBase):
    """One training or development programme completed."""

    topic: ClassVar[str] = "hiring"
    key_field: ClassVar[str] = "training_id"
    type: Literal["training.completed"]
    training_id: EntityId
    employee_id: EntityId
    department: Dimension
    cost: Amount
    currency: Currency
    #: ``cost`` in the reporting currency; after ``decode``, set only for a foreign currency.
    reporting_amount: ReportingAmount = None


# ---- topic "incidents" ------------------------------------------------------------------


class IncidentOpened(EventBase):
    """An IT incident starts."""

    topic: ClassVar[str] = "incidents"
    key_field: ClassVar[str] = "incident_id"
    type: Literal["incident.opened"]
    incident_id: EntityId
    service: Dimension
    severity: Literal["sev1", "sev2", "sev3", "sev4"]
    category: Literal["outage", "security", "other"]


class IncidentAcknowledged(EventBase):
    """Someone responds to an incident."""

    topic: ClassVar[str] = "incidents"
    key_field: ClassVar[str] = "incident_id"
    type: Literal["incident.acknowledged"]
    incident_id: EntityId


class IncidentResolved(EventBase):
    """An incident is resolved."""

    topic: ClassVar[str] = "incidents"
    key_field: ClassVar[str] = "incident_id"
    type: Literal["incident.resolved"]
    incident_id: EntityId


class TicketOpened(EventBase):
    """A help-desk ticket is opened."""

    topic: ClassVar[str] = "incidents"
    key_field: ClassVar[str] = "ticket_id"
    type: Literal["ticket.opened"]
    ticket_id: EntityId
    queue: Dimension
    priority: Literal["p1", "p2", "p3", "p4"]


class TicketResolved(EventBase):
    """A help-desk ticket is resolved."""

    topic: ClassVar[str] = "incidents"
    key_field: ClassVar[str] = "ticket_id"
    type: Literal["ticket.resolved"]
    ticket_id: EntityId


class ServiceDown(EventBase):
    """A service stops being operational (repeats change nothing)."""

    topic: ClassVar[str] = "incidents"
    key_field: ClassVar[str] = "service"
    type: Literal["service.down"]
    service: Dimension


class ServiceUp(EventBase):
    """A service is operational again (repeats change nothing)."""

    topic: ClassVar[str] = "incidents"
    key_field: ClassVar[str] = "service"
    type: Literal["service.up"]
    service: Dimension


#: The events with a ``currency`` (and an optional ``reporting_amount``).
PricedEvent = InvoiceReceived | InvoiceIssued | TrainingCompleted

#: Any event of the contract, discriminated by ``type``. Match on the classes to dispatch.
Event = Annotated[
    InvoiceReceived
    | InvoiceApproved
    | InvoiceRejected
    | InvoicePaid
    | InvoiceIssued
    | PaymentReceived
    | RequisitionOpened
    | OfferAccepted
    | EmployeeHired
    | EmployeeLeft
    | SurveySubmitted
    | TrainingCompleted
    | IncidentOpened
    | IncidentAcknowledged
    | IncidentResolved
    | TicketOpened
    | TicketResolved
    | ServiceDown
    | ServiceUp,
    Field(discriminator="type"),
]


def _type_of(model: type[EventBase]) -> str:
    (name,) = get_args(model.model_fields["type"].annotation)
    return str(name)


#: Type name -> model, in contract order. Derived from the models so there is one source.
MODEL_OF_TYPE: Final[dict[str, type[EventBase]]] = {
    _type_of(model): model for model in get_args(get_args(Event)[0])
}
#: Type name -> logical (unprefixed) topic: ``invoices``, ``hiring`` or ``incidents``.
TOPIC_OF_TYPE: Final[dict[str, str]] = {name: m.topic for name, m in MODEL_OF_TYPE.items()}
#: Logical topic -> the types it carries.
TYPES_OF_TOPIC: Final[dict[str, frozenset[str]]] = {
    topic: frozenset(name for name, t in TOPIC_OF_TYPE.items() if t == topic)
    for topic in dict.fromkeys(TOPIC_OF_TYPE.values())
}


def key_of(event: EventBase) -> str:
    """The contract's Kafka message key of ``event`` (the id of the entity it is about)."""
    key: str = getattr(event, event.key_field)
    return key
