"""A query-string value checked by its column's type, as the text to bind.

Values are bound as text and cast to the column's type by PostgreSQL, so every type can be
filtered; the types checked here get a precise message and bounds first, and only ASCII
forms (the OpenAPI document's): Python's ``int`` and ``float`` would also take ``+7``,
``1_000`` and other scripts' digits.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

from app.pgtypes import INT_BITS, Kind, PgType


class InvalidValue(ValueError):
    """A query-string value that is not a value of the column's type."""


#: An integer as the OpenAPI document states it: ASCII digits, an optional leading minus.
#: (Python's ``int`` also takes ``+7``, ``1_000`` and any script's digits.)
_INTEGER = re.compile(r"-?[0-9]+")
#: A decimal number in ASCII (``float`` and ``Decimal`` take other scripts' digits and
#: underscores too); the special values are matched apart.
_DECIMAL = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_SPECIAL_NUMBERS = ("nan", "inf", "infinity")


def is_integer_text(text: str) -> bool:
    return _INTEGER.fullmatch(text) is not None


def parse_value(pgtype: PgType, raw: str) -> str:
    """Check ``raw`` as a value of ``pgtype``; return the text to bind (cast in SQL).

    Values are bound as text and cast to the column's type by PostgreSQL, so every type
    can be filtered; the types checked here get a precise message (and bounds) first.
    """
    if "\x00" in raw:
        raise InvalidValue("contains a NUL character")
    kind = pgtype.kind
    text = raw.strip()
    try:
        if kind in (Kind.INTEGER, Kind.FLOAT, Kind.NUMERIC) and not (
            _INTEGER.fullmatch(text)
            or (kind is not Kind.INTEGER and _DECIMAL.fullmatch(text))
            or (kind is not Kind.INTEGER and text.lower().lstrip("+-") in _SPECIAL_NUMBERS)
        ):
            raise InvalidValue(f"not a valid {pgtype.display} (ASCII digits)")
        if kind is Kind.INTEGER:
            value = int(text)
            limit = 2 ** (INT_BITS[pgtype.name] - 1)
            if not -limit <= value < limit:
                raise InvalidValue(f"out of range for {pgtype.display}")
            return str(value)
        if kind is Kind.FLOAT:
            return repr(float(text)).replace("inf", "Infinity").replace("nan", "NaN")
        if kind is Kind.NUMERIC:
            Decimal(text)
            return text
        if kind is Kind.BOOLEAN:
            if text in ("true", "false"):  # as documented: no t, 1 or yes to guess at
                return text
            raise InvalidValue("not a boolean (true or false)")
        if kind is Kind.UUID:
            return str(uuid.UUID(text))
        if kind is Kind.DATE:
            return date.fromisoformat(text).isoformat()
        if kind is Kind.TIME:
            return time.fromisoformat(text).isoformat()
        if kind is Kind.TIMESTAMPTZ:
            return rfc3339(text).isoformat()
        if kind is Kind.TIMESTAMP:
            parsed = datetime.fromisoformat(text.replace("t", "T"))
            if parsed.tzinfo is not None:
                raise InvalidValue("a timestamp without time zone takes no offset")
            return parsed.isoformat()
    except InvalidValue:
        raise
    except (ValueError, OverflowError, InvalidOperation):
        raise InvalidValue(f"not a valid {pgtype.display}") from None
    return raw


#: What a timestamp filter takes, said in every refusal of one.
TIMESTAMP_FORMS = (
    "an RFC 3339 date-time (2024-01-01T00:00:00Z, 2024-01-01T02:00:00+02:00; without an "
    "offset: UTC) or a date (2024-01-01: midnight UTC)"
)
#: A ``+`` sent unencoded in a query string arrives as a space: ``…00 02:00``.
_LOST_PLUS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)? \d{2}:?\d{2}$")


def rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time (without an offset: UTC), or a date (midnight UTC), in UTC;
    at most 9 fractional digits, of which Python keeps 6. Numbers are not timestamps."""
    text = text.strip().replace("z", "Z").replace("t", "T")
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        text += "T00:00:00"  # a date: its midnight, in UTC
    if _LOST_PLUS.match(text):
        raise InvalidValue(
            "the offset's '+' arrived as a space: send it encoded as %2B "
            "(2024-01-01T02:00:00%2B02:00), or give the time in UTC with Z"
        )
    if "." in text:
        head, _, rest = text.partition(".")
        digits = rest.rstrip("Z").split("+")[0].split("-")[0]
        text = head + "." + digits[:6] + rest[len(digits) :]
    if len(text) < 19 or text[10] not in "T ":
        raise InvalidValue(f"not {TIMESTAMP_FORMS}")
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)  # out of range in UTC (year 0 or 10000) fails here
    except (ValueError, OverflowError):
        raise InvalidValue(f"not {TIMESTAMP_FORMS}, between years 1 and 9999 (UTC)") from None
