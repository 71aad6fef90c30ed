"""``decode``: each contract type decodes; each broken rule gives its reason, in SEMANTICS order."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from schema_examples import T0_S, TOPICS, VALID, example, raw, without

from schemas import MODEL_OF_TYPE, decode, key_of
from schemas.errors import ConfigurationError, InvalidEvent

CONTRACT_TYPES = list(VALID)
ID_FIELDS = {
    (t, f) for t, body in VALID.items() for f in body if f.endswith("_id") and f != "event_id"
}
DIMENSION_FIELDS = {
    (t, f) for t, body in VALID.items() for f in body if f in {"department", "service", "queue"}
}
AMOUNT_FIELDS = {(t, f) for t, body in VALID.items() for f in body if f in {"amount", "cost"}}
PRICED_TYPES = sorted(t for t, body in VALID.items() if "currency" in body)


def decode_ok(body: object, *, topic: str | None = None, currency: str = "USD") -> Any:
    assert isinstance(body, dict)
    return decode(raw(body), topic=topic or TOPICS[body["type"]], currency=currency)


def reason_of(data: bytes | object, *, topic: str = "invoices", currency: str = "USD") -> str:
    """The reason ``decode`` rejects ``data`` with (bytes and None as is, the rest as JSON)."""
    payload = data if isinstance(data, bytes) or data is None else raw(data)
    with pytest.raises(InvalidEvent) as info:
        decode(payload, topic=topic, currency=currency)
    detail = info.value.detail
    assert detail and "\n" not in detail, detail
    return info.value.reason


def field_error(event_type: str, field: str, value: object, **others: object) -> InvalidEvent:
    """The error for ``example(event_type)`` with ``field`` set to ``value`` (must be schema)."""
    body = example(event_type, **others, **{field: value})
    with pytest.raises(InvalidEvent) as info:
        decode(raw(body), topic=TOPICS[event_type], currency="USD")
    assert info.value.reason == "schema", info.value
    assert info.value.detail.startswith(f"{field}: "), info.value.detail
    return info.value


# ---- valid events -----------------------------------------------------------------------


@pytest.mark.parametrize("event_type", CONTRACT_TYPES)
def test_valid_example_of_every_type_decodes(event_type: str) -> None:
    event = decode_ok(example(event_type))
    assert type(event) is MODEL_OF_TYPE[event_type]
    assert event.type == event_type
    assert event.event_id == f"ev-{event_type}"
    assert event.occurred_at_s == T0_S
    for field, value in VALID[event_type].items():
        expected = float(value) if field in {"amount", "cost"} else value
        assert getattr(event, field) == expected


@pytest.mark.parametrize("event_type", CONTRACT_TYPES)
def test_json_round_trip_of_a_decoded_event_is_identity(event_type: str) -> None:
    event = decode_ok(example(event_type))
    assert decode_ok(event.model_dump(mode="json")) == event


def test_unknown_extra_fields_are_ignored() -> None:
    event = decode_ok(example("invoice.approved", note="hi", nested={"a": [1, None]}))
    assert key_of(event) == "INV-1"


def test_reporting_currency_is_a_parameter() -> None:
    body = example("invoice.received", currency="EUR")
    assert decode_ok(body, currency="EUR").currency == "EUR"


# ---- invalid_json -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"{'a': 1}",
        b'{"type": "service.up",}',
        b"\xff\xfe{}",
        b'{"type": "\xc3"}',  # truncated UTF-8 sequence
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
        b'{"amount": 1e400}',  # beyond the double range: orjson refuses it
        b'"\\ud800"',  # lone surrogate
        b"[" * 2000 + b"]" * 2000,  # deeper than orjson's 1024 limit
        b"{} {}",
    ],
)
def test_invalid_json(payload: bytes) -> None:
    assert reason_of(payload) == "invalid_json"


def test_kafka_tombstone_is_invalid_json() -> None:
    # A message with a null value reaches the agent as None despite the bytes annotation.
    assert reason_of(None) == "invalid_json"


# ---- schema: the envelope ---------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"[]", b"1", b'"x"', b"null", b"true", b'[{"type":1}]'])
def test_json_that_is_not_an_object_is_schema(payload: bytes) -> None:
    assert reason_of(payload) == "schema"


@pytest.mark.parametrize("type_value", [None, 1, True, ["invoice.approved"], {}])
def test_type_not_a_string_is_schema(type_value: object) -> None:
    assert reason_of(example("invoice.approved", type=type_value)) == "schema"


def test_type_missing_is_schema() -> None:
    assert reason_of(without("invoice.approved", "type")) == "schema"


@pytest.mark.parametrize("event_type", CONTRACT_TYPES)
def test_every_required_field_missing_is_schema_naming_the_field(event_type: str) -> None:
    for field in ["event_id", "occurred_at", *VALID[event_type]]:
        with pytest.raises(InvalidEvent) as info:
            decode(raw(without(event_type, field)), topic=TOPICS[event_type], currency="USD")
        assert info.value.reason == "schema"
        assert info.value.detail == f"{field}: field required"


@pytest.mark.parametrize("value", ["", "x" * 129, 7, None, True, ["e"]])
def test_bad_event_id_is_schema(value: object) -> None:
    field_error("service.up", "event_id", value)


@pytest.mark.parametrize("value", ["x" * 128, "e", "ä \t"])
def test_event_id_has_only_a_length_rule(value: str) -> None:
    assert decode_ok(example("service.up", event_id=value)).event_id == value


# ---- schema: occurred_at ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "epoch_s"),
    [
        ("2024-05-01T12:00:00Z", T0_S),
        ("2024-05-01t12:00:00z", T0_S),
        ("2024-05-01 12:00:00Z", T0_S),  # the space of RFC 3339's note
        ("2024-05-01T14:30:00+02:30", T0_S),
        ("2024-05-01T07:00:00-05:00", T0_S),
        ("2024-05-01T12:00:00-00:00", T0_S),
        ("2024-05-01T12:00:00.5Z", T0_S + 0.5),
        ("2024-05-01T12:00:00.123456789Z", T0_S + 0.123456),  # truncated to microseconds
        ("2024-02-29T00:00:00Z", 1709164800.0),
        ("0001-01-01T00:00:00Z", -62135596800.0),
    ],
)
def test_occurred_at_rfc3339_with_offset_is_normalised_to_utc(text: str, epoch_s: float) -> None:
    event = decode_ok(example("service.up", occurred_at=text))
    assert event.occurred_at.utcoffset().total_seconds() == 0
    assert event.occurred_at_s == pytest.approx(epoch_s, abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:00:00",  # naive
        "2024-05-01T12:00:00.123",  # naive with fraction
        "2024-05-01",  # date only
        "2024-05-01T12:00Z",  # no seconds
        "2024-05-01_12:00:00Z",
        "2024-05-01  12:00:00Z",
        "2024-05-01T12:00:00+0200",  # offset without colon
        "2024-05-01T12:00:00+02",
        "2024-05-01T12:00:00 Z",
        "2024-05-01T12:00:00Z ",
        " 2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00Z\n",
        "2024-05-01T12:00:00.Z",
        "20240501T120000Z",  # ISO 8601 basic format
        "2024-W18-3T12:00:00Z",
        "2024-13-01T12:00:00Z",
        "2024-02-30T12:00:00Z",  # no such day
        "2023-02-29T12:00:00Z",
        "2024-05-01T24:00:00Z",
        "2016-12-31T23:59:60Z",  # leap second
        "2024-05-01T12:00:00+24:00",
        "0000-01-01T00:00:00Z",  # below datetime's range
        "9999-12-31T23:59:59-01:00",  # beyond it once in UTC
        "\u0662\u0660\u0662\u0664-05-01T12:00:00Z",  # Arabic-Indic digits
        "1714564800",  # epoch seconds as a string
        1714564800,  # epoch seconds as a number
        1714564800.5,
        None,
        True,
        "",
        {"$date": "2024-05-01T12:00:00Z"},
    ],
)
def test_bad_occurred_at_is_schema(value: object) -> None:
    field_error("service.up", "occurred_at", value)


# ---- schema: dimensions, ids, enumerations, scalars -------------------------------------


@pytest.mark.parametrize("value", ["a", "0", "a-b_c", "x" * 63, "billing-api-2"])
@pytest.mark.parametrize(("event_type", "field"), sorted(DIMENSION_FIELDS))
def test_good_dimension_values(event_type: str, field: str, value: str) -> None:
    assert getattr(decode_ok(example(event_type, **{field: value})), field) == value


@pytest.mark.parametrize(
    "value",
    ["all", "", "Finance", "-x", "_x", "x" * 64, "a b", "caf\u00e9", "a\n", "a.b", 5, None, ["a"]],
)
@pytest.mark.parametrize(("event_type", "field"), sorted(DIMENSION_FIELDS))
def test_bad_dimension_values_are_schema(event_type: str, field: str, value: object) -> None:
    field_error(event_type, field, value)


@pytest.mark.parametrize("value", ["x" * 128, "A", "Rechnung-\u00e4-1", "id with spaces", "#1"])
@pytest.mark.parametrize(("event_type", "field"), sorted(ID_FIELDS))
def test_good_ids(event_type: str, field: str, value: str) -> None:
    assert getattr(decode_ok(example(event_type, **{field: value})), field) == value


@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, 42, 4.2, True, None, ["a"], "a\tb", "a\nb", "\x7f", "a\u200bb", "\u2028"],
)
@pytest.mark.parametrize(("event_type", "field"), sorted(ID_FIELDS))
def test_bad_ids_are_schema(event_type: str, field: str, value: object) -> None:
    field_error(event_type, field, value)


GOOD_AMOUNTS = [
    (1, 1.0),
    (0.01, 0.01),
    (1e12, 1e12),
    (1000000000000, 1e12),
    ("12.50", 12.5),
    ("1e3", 1000.0),
    ("1E-2", 0.01),
    ("0.5", 0.5),
    ("1000000000000", 1e12),
    ("+5", 5.0),
    ("01", 1.0),
    ("1.", 1.0),
    (".5", 0.5),
]


@pytest.mark.parametrize(("value", "expected"), GOOD_AMOUNTS)
@pytest.mark.parametrize(("event_type", "field"), sorted(AMOUNT_FIELDS))
def test_good_amounts(event_type: str, field: str, value: object, expected: float) -> None:
    amount = getattr(decode_ok(example(event_type, **{field: value})), field)
    assert type(amount) is float
    assert amount == expected


BAD_AMOUNTS = [
    0,
    0.0,
    -1,
    -0.5,
    1000000000001,
    1.0000001e12,
    18446744073709551615,  # the largest int orjson keeps as int
    True,
    False,
    None,
    [],
    {},
    "0",
    "-5",
    "-0",
    "+-5",
    "5e",
    ".",
    "1.2.3",
    "1e+",
    " 5",
    "5 ",
    "1_000",
    "0x10",
    "",
    "NaN",
    "nan",
    "inf",
    "Infinity",
    "1e400",  # parses to inf
    "1e-400",  # parses to 0.0
    "1e13",
    "\u0661",  # Arabic-Indic one
]


@pytest.mark.parametrize("value", BAD_AMOUNTS)
@pytest.mark.parametrize(("event_type", "field"), sorted(AMOUNT_FIELDS))
def test_bad_amounts_are_schema(event_type: str, field: str, value: object) -> None:
    field_error(event_type, field, value)


def test_tiny_json_number_amount_is_schema() -> None:
    payload = raw(example("invoice.paid")).replace(b'"1250.50"', b"1e-400")
    assert reason_of(payload) == "schema"


@pytest.mark.parametrize("score", range(11))
def test_scores_0_to_10(score: int) -> None:
    assert decode_ok(example("survey.submitted", score=score)).score == score


@pytest.mark.parametrize("value", [-1, 11, 7.0, 7.5, True, False, "7", None, 2**64 - 1])
def test_bad_scores_are_schema(value: object) -> None:
    field_error("survey.submitted", "score", value)


@pytest.mark.parametrize("spelling", [b"9e0", b"9.0", b"1e1", b"99999999999999999999999"])
def test_score_not_spelled_as_a_small_integer_is_schema(spelling: bytes) -> None:
    payload = raw(example("survey.submitted")).replace(b'"score":9', b'"score":' + spelling)
    assert reason_of(payload, topic="hiring") == "schema"


@pytest.mark.parametrize("value", [True, False])
def test_voluntary_booleans(value: bool) -> None:
    assert decode_ok(example("employee.left", voluntary=value)).voluntary is value


@pytest.mark.parametrize("value", [1, 0, "true", "false", None, []])
def test_voluntary_not_a_boolean_is_schema(value: object) -> None:
    field_error("employee.left", "voluntary", value)


@pytest.mark.parametrize(
    ("event_type", "field", "good", "bad"),
    [
        ("incident.opened", "severity", ["sev1", "sev2", "sev3", "sev4"], ["SEV1", "sev5", "sev"]),
        ("incident.opened", "category", ["outage", "security", "other"], ["Outage", "bug"]),
        ("ticket.opened", "priority", ["p1", "p2", "p3", "p4"], ["P1", "p0", "p5", " p1"]),
    ],
)
def test_enumerations_are_exact_lowercase(
    event_type: str, field: str, good: list[str], bad: list[str]
) -> None:
    for value in good:
        assert getattr(decode_ok(example(event_type, **{field: value})), field) == value
    for value in [*bad, 1, None]:
        field_error(event_type, field, value)


@pytest.mark.parametrize("value", [840, None, ["USD"]])
@pytest.mark.parametrize("event_type", PRICED_TYPES)
def test_currency_not_a_string_is_schema(event_type: str, value: object) -> None:
    field_error(event_type, "currency", value)


@pytest.mark.parametrize("value", ["usd", "US", "USDX", "U5D", "", "ÄBC", "USD\n"])
@pytest.mark.parametrize("event_type", PRICED_TYPES)
def test_currency_that_is_not_a_code_is_currency(event_type: str, value: str) -> None:
    # SPEC section 1: "currency (not a code; ...)", with or without a conversion.
    for extra in ({}, {"reporting_amount": 10}):
        body = example(event_type, currency=value, **extra)
        assert reason_of(body, topic=TOPICS[event_type]) == "currency"


@pytest.mark.parametrize("value", [1, None, ["x"], {"code": 1}])
def test_rejection_reason_must_be_a_string(value: object) -> None:
    field_error("invoice.rejected", "reason", value)


def test_empty_rejection_reason_is_accepted() -> None:
    assert decode_ok(example("invoice.rejected", reason="")).reason == ""


def test_schema_detail_counts_further_problems() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(raw(example("invoice.received", amount=-1, department="all")), topic="invoices",
               currency="USD")  # fmt: skip
    assert info.value.detail == "amount: must be finite, > 0 and <= 1e12 (+1 more)"


# ---- unknown_type and currency, and the order of checks ---------------------------------


@pytest.mark.parametrize("type_value", ["invoice.deleted", "Invoice.Received", "", "x" * 10_000])
def test_type_outside_the_contract_is_unknown_type(type_value: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(raw(example("invoice.approved", type=type_value)), topic="invoices", currency="USD")
    assert info.value.reason == "unknown_type"
    assert len(info.value.detail) < 120


@pytest.mark.parametrize("event_type", CONTRACT_TYPES)
def test_valid_type_on_another_topic_is_unknown_type(event_type: str) -> None:
    for topic in {"invoices", "hiring", "incidents"} - {TOPICS[event_type]}:
        assert reason_of(example(event_type), topic=topic) == "unknown_type"


def test_schema_comes_before_unknown_type() -> None:
    # A broken field of a type that is on the wrong topic is a schema problem first.
    assert reason_of(example("ticket.opened", priority="P1"), topic="invoices") == "schema"
    # For a type outside the contract, the common fields are still checked first.
    bad_common = example("invoice.approved", type="invoice.deleted", occurred_at="2024-05-01")
    assert reason_of(bad_common) == "schema"
    assert reason_of(without("invoice.approved", "event_id") | {"type": "nope"}) == "schema"


@pytest.mark.parametrize("event_type", PRICED_TYPES)
def test_other_currency_without_reporting_amount_is_currency(event_type: str) -> None:
    topic = TOPICS[event_type]
    assert reason_of(example(event_type, currency="EUR"), topic=topic) == "currency"
    # JSON null is a reporting_amount not given.
    body = example(event_type, currency="EUR", reporting_amount=None)
    assert reason_of(body, topic=topic) == "currency"


@pytest.mark.parametrize("event_type", PRICED_TYPES)
def test_other_currency_with_reporting_amount_decodes_with_it(event_type: str) -> None:
    event = decode_ok(example(event_type, currency="EUR", reporting_amount="1080.25"))
    assert (event.currency, event.reporting_amount) == ("EUR", 1080.25)
    # Another reporting currency: the same event is in it, and USD is the foreign one.
    assert decode_ok(example(event_type, reporting_amount=5), currency="EUR").reporting_amount == 5


@pytest.mark.parametrize("event_type", PRICED_TYPES)
def test_reporting_amount_in_the_reporting_currency_is_ignored(event_type: str) -> None:
    plain = decode_ok(example(event_type))
    for given in (1.5, "99", None):
        event = decode_ok(example(event_type, reporting_amount=given))
        assert event.reporting_amount is None
        assert event == plain


@pytest.mark.parametrize("value", [v for v in BAD_AMOUNTS if v is not None])
@pytest.mark.parametrize("currency", ["USD", "EUR"])
@pytest.mark.parametrize("event_type", PRICED_TYPES)
def test_bad_reporting_amount_is_schema_in_any_currency(
    event_type: str, currency: str, value: object
) -> None:
    # Same rules as amount, and checked like every field (before the currency check).
    field_error(event_type, "reporting_amount", value, currency=currency)  # reporting: USD


@pytest.mark.parametrize(("value", "expected"), GOOD_AMOUNTS)
@pytest.mark.parametrize("event_type", PRICED_TYPES)
def test_good_reporting_amounts(event_type: str, value: object, expected: float) -> None:
    event = decode_ok(example(event_type, currency="GBP", reporting_amount=value))
    assert type(event.reporting_amount) is float
    assert event.reporting_amount == expected


def test_reporting_amount_of_other_types_is_an_ignored_extra_field() -> None:
    event = decode_ok(example("invoice.paid", reporting_amount="not a number"))
    assert not hasattr(event, "reporting_amount")


def test_currency_comes_after_schema_and_unknown_type() -> None:
    assert reason_of(example("invoice.received", currency="EUR", amount=0)) == "schema"
    assert reason_of(example("invoice.received", currency="EUR"), topic="hiring") == "unknown_type"
    assert reason_of(example("invoice.received", currency="eur"), topic="hiring") == "unknown_type"
    bad_conversion = example("invoice.received", currency="eur", reporting_amount=-1)
    assert reason_of(bad_conversion) == "schema"


def test_an_unknown_topic_is_a_programming_error() -> None:
    with pytest.raises(ConfigurationError, match="not an input topic"):
        decode(raw(example("service.up")), topic="prefix.incidents", currency="USD")


def test_details_are_short_single_lines() -> None:
    payloads = [b"\xff", b"[]", raw(example("service.up", service="all", event_id=""))]
    for payload in payloads:
        with pytest.raises(InvalidEvent) as info:
            decode(payload, topic="incidents", currency="USD")
        assert "\n" not in info.value.detail
        assert len(info.value.detail) < 200
        assert str(info.value).startswith(info.value.reason + ": ")


def test_parsed_json_is_not_kept_alive_by_the_event() -> None:
    # Guard against returning an event that still references the parsed dict's extras.
    event = decode_ok(example("service.up", big=["x"] * 1000))
    assert "big" not in orjson.dumps(event.model_dump(mode="json")).decode()
