"""Bytes of one input message -> a validated event, or ``InvalidEvent`` with the contract's reason.

The checks run in the order of docs/SEMANTICS.md items 1-4: ``invalid_json``, ``schema``,
``unknown_type``, ``currency`` (a currency that is not a code, or a foreign one without
``reporting_amount``). It runs for every input message, so the JSON is parsed
once with orjson and handed to the one model its ``type`` names (no union validation).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, cast

import orjson
from pydantic import ValidationError

from schemas.errors import ConfigurationError, InvalidEvent
from schemas.events import (
    CURRENCY_PATTERN,
    MODEL_OF_TYPE,
    TOPIC_OF_TYPE,
    TYPES_OF_TOPIC,
    Event,
    EventBase,
    InvoiceIssued,
    InvoiceReceived,
    PricedEvent,
    TrainingCompleted,
)

__all__ = ["CURRENCY", "INVALID_JSON", "SCHEMA", "UNKNOWN_TYPE", "decode", "decode_message"]

#: Dead-letter reasons this module decides (SPEC section 1, "What happens to each event").
INVALID_JSON: Final = "invalid_json"
SCHEMA: Final = "schema"
UNKNOWN_TYPE: Final = "unknown_type"
CURRENCY: Final = "currency"

# Types that carry a ``currency`` field (checked against the reporting currency).
_PRICED: Final = (InvoiceReceived, InvoiceIssued, TrainingCompleted)
_CURRENCY_CODE: Final = re.compile(CURRENCY_PATTERN)
_MISSING: Final = object()
# The models' own validators, bound once: ``model_validate`` wraps the same call in Python
# code that costs about 1 us per message, a fifth of the whole decode.
_VALIDATE: Final[dict[str, Callable[[object], EventBase]]] = {
    name: model.__pydantic_validator__.validate_python for name, model in MODEL_OF_TYPE.items()
}
_VALIDATE_COMMON: Final[Callable[[object], EventBase]] = (
    EventBase.__pydantic_validator__.validate_python
)
_QUOTE_MAX: Final = 60


def decode(raw: bytes, *, topic: str, currency: str) -> Event:
    """Decode and validate one message of the logical (unprefixed) input ``topic``.

    Raises ``InvalidEvent`` (and nothing else) for any ``raw``, with reason ``invalid_json``,
    ``schema``, ``unknown_type`` or ``currency`` and a one-line ``detail`` (a Kafka tombstone,
    ``raw=None``, is ``invalid_json`` too). An unknown
    ``topic`` is a programming error and raises ``ConfigurationError`` before ``raw`` is read.
    A returned event's ``reporting_amount`` is set only when its currency is not ``currency``.
    """
    return decode_message(raw, topic, currency)


def decode_message(raw: bytes, topic: str, currency: str) -> Event:
    """``decode`` with positional arguments, for the engine's hot loop (keywords cost more)."""
    types = TYPES_OF_TOPIC.get(topic)
    if types is None:
        msg = f"not an input topic: {topic!r} (expected one of {sorted(TYPES_OF_TOPIC)})"
        raise ConfigurationError(msg)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # Also covers bad UTF-8, NaN/Infinity, numbers beyond double range, depth > 1024.
        raise InvalidEvent(INVALID_JSON, str(exc).replace("\n", " ")) from None
    if type(obj) is not dict:
        raise InvalidEvent(SCHEMA, f"not a JSON object but {_json_kind(obj)}")
    event_type = obj.get("type", _MISSING)
    if event_type is _MISSING:
        raise InvalidEvent(SCHEMA, "type: field required")
    if type(event_type) is not str:
        raise InvalidEvent(SCHEMA, f"type: must be a string, not {_json_kind(event_type)}")
    validate = _VALIDATE.get(event_type)
    if validate is None:
        # Schema problems come before unknown_type (SEMANTICS item 2 before 3), and for a type
        # outside the contract the only fields we know are the common ones.
        _validate(_VALIDATE_COMMON, obj)
        raise InvalidEvent(UNKNOWN_TYPE, f"type {_quote(event_type)} is not in the contract")
    try:  # ``_validate`` inlined: a call less per event
        event = validate(obj)
    except ValidationError as exc:
        raise InvalidEvent(SCHEMA, _describe(exc)) from None
    if event_type not in types:
        detail = f"type {event_type} belongs to topic {TOPIC_OF_TYPE[event_type]}, not {topic}"
        raise InvalidEvent(UNKNOWN_TYPE, detail)
    # The exact classes (validation builds nothing else): ``isinstance`` with pydantic's
    # metaclass cost 0.4 µs for every event that is not priced.
    if type(event) in _PRICED:
        priced = cast("PricedEvent", event)
        if priced.currency != currency:
            _check_foreign(priced, currency)
        elif priced.reporting_amount is not None:
            # Ignored in the reporting currency (SPEC section 1). Dropped, so that past the
            # decoder a reporting_amount means a foreign currency, and nothing downstream
            # needs to know the reporting currency.
            event = priced.model_copy(update={"reporting_amount": None})
    return cast("Event", event)


def _check_foreign(event: PricedEvent, currency: str) -> None:
    """A currency other than the reporting one: a code, and the amount converted by the source."""
    if _CURRENCY_CODE.fullmatch(event.currency) is None:
        detail = f"currency {_quote(event.currency)} is not an ISO 4217 code (three letters A-Z)"
        raise InvalidEvent(CURRENCY, detail)
    if event.reporting_amount is None:
        detail = (
            f"currency {event.currency} is not the reporting currency {currency} "
            "and the event has no reporting_amount"
        )
        raise InvalidEvent(CURRENCY, detail)


def _validate(validate: Callable[[object], EventBase], obj: dict[str, object]) -> EventBase:
    try:
        return validate(obj)
    except ValidationError as exc:
        raise InvalidEvent(SCHEMA, _describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """The first field problem in one short line, e.g. ``amount: must be finite, > 0 ...``."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "event"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    # Pydantic spells missing fields "Field required"; keep the detail in one register.
    message = first["msg"][:1].lower() + first["msg"][1:]
    return f"{where}: {message}{more}"


def _json_kind(value: object) -> str:
    """The JSON name of a parsed value's type, for details."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _quote(text: str) -> str:
    """Untrusted text for a one-line detail: escaped by ``repr`` and truncated."""
    quoted = repr(text)
    return quoted if len(quoted) <= _QUOTE_MAX else quoted[: _QUOTE_MAX - 3] + "..."
