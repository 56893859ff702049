"""The type map: how each PostgreSQL type becomes JSON, CSV and Arrow, and its OpenAPI
schema (how a filter value of the type is read from a query string: ``values.py``).

Every rendering is SQL that PostgreSQL evaluates, so no per-row Python object is built
for JSON or CSV. One ``Kind`` per family of types; a type we do not know travels as the
text PostgreSQL prints for it (``inet``, ``interval``, ranges…), in every format.

The contract (``tests/test_pgtypes.py`` and ``tests/test_pgtypes_properties.py`` check it
against PostgreSQL itself):

- JSON (``json_sql``): each value parses to what ``row_to_json`` gives for it (``TimeZone``
  UTC);
- CSV (``csv_sql``): the text of that JSON value (strings unquoted, ``true``/``false``,
  RFC 3339 timestamps, arrays and json as JSON text); NULL is COPY's unquoted empty field;
- Arrow: a typed column of ``arrow_type`` (the README's table), whichever source the plan
  picks: the ADBC driver's binary COPY of ``binary_sql``, COPY text parsed by Arrow
  (``arrow_from_copy_text``), or cursor records of ``arrow_sql``; ``arrow_guard`` refuses,
  in every one, what Arrow cannot hold.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from app.limits import MAX_IN_VALUES, MAX_LIST_CHARS, MAX_VALUE_LENGTH


class Kind(enum.Enum):
    INTEGER = "integer"
    FLOAT = "float"
    NUMERIC = "numeric"
    BOOLEAN = "boolean"
    TEXT = "text"
    UUID = "uuid"
    DATE = "date"
    TIME = "time"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    BYTEA = "bytea"
    JSON = "json"
    JSONB = "jsonb"
    ENUM = "enum"
    ARRAY = "array"
    OTHER = "other"


#: PostgreSQL's internal type names (``pg_type.typname``) of each kind.
_KINDS: dict[str, Kind] = {
    **dict.fromkeys(("int2", "int4", "int8"), Kind.INTEGER),
    **dict.fromkeys(("float4", "float8"), Kind.FLOAT),
    "numeric": Kind.NUMERIC,
    "bool": Kind.BOOLEAN,
    **dict.fromkeys(("text", "varchar", "bpchar", "name", "citext"), Kind.TEXT),
    "uuid": Kind.UUID,
    "date": Kind.DATE,
    "time": Kind.TIME,
    "timestamp": Kind.TIMESTAMP,
    "timestamptz": Kind.TIMESTAMPTZ,
    "bytea": Kind.BYTEA,
    "json": Kind.JSON,
    "jsonb": Kind.JSONB,
}

INT_BITS = {"int2": 16, "int4": 32, "int8": 64}

#: Kinds whose values have an order a client can filter on (``__gt`` and friends).
ORDERED = frozenset(
    {
        Kind.INTEGER,
        Kind.FLOAT,
        Kind.NUMERIC,
        Kind.TEXT,
        Kind.UUID,
        Kind.DATE,
        Kind.TIME,
        Kind.TIMESTAMP,
        Kind.TIMESTAMPTZ,
        Kind.ENUM,
    }
)
#: Kinds with no equality operator in PostgreSQL: only ``__isnull`` applies.
UNCOMPARABLE = frozenset({Kind.JSON})


@dataclass(frozen=True)
class PgType:
    """One column's type, as read from the catalog."""

    #: ``pg_type.typname`` (of the base type, for a domain): ``int4``, ``_text``…
    name: str
    #: The type's SQL name without modifiers, for casts: ``integer``, ``text[]``.
    sql: str
    #: The type as declared, for people: ``numeric(10,2)``, ``character(3)``.
    display: str
    kind: Kind
    #: ``numeric(p, s)``'s precision and scale, when declared.
    precision: int | None = None
    scale: int | None = None
    #: The element type of an array.
    element: PgType | None = None

    @property
    def ordered(self) -> bool:
        return self.kind in ORDERED

    @property
    def comparable(self) -> bool:
        return self.kind not in UNCOMPARABLE


def kind_of(typname: str, typtype: str, typcategory: str) -> Kind:
    if typcategory == "A":
        return Kind.ARRAY
    if typtype == "e":
        return Kind.ENUM
    return _KINDS.get(typname, Kind.OTHER)


#: ``numeric``'s type oid (fixed in PostgreSQL's catalog).
NUMERIC_OID = 1700


def numeric_typmod(precision: int, scale: int) -> int:
    """The typmod of ``numeric(precision, scale)``: the inverse of ``numeric_modifier``."""
    return ((precision << 16) | scale) + 4


def numeric_modifier(typmod: int) -> tuple[int | None, int | None]:
    """``numeric(p, s)``'s precision and scale from ``atttypmod`` (-1: none declared)."""
    if typmod < 4:
        return None, None
    packed = typmod - 4
    return (packed >> 16) & 0xFFFF, packed & 0xFFFF


# --- JSON ------------------------------------------------------------------------------


def json_sql(column: str, pgtype: PgType, nullable: bool) -> str:
    """SQL rendering ``column`` as JSON text (never NULL: ``null`` for NULL).

    Integers and booleans print as JSON already (``||`` casts them); json text may hold
    raw line breaks between tokens (never inside a string, where JSON escapes them), which
    would split an NDJSON line, so they become spaces; everything else goes through
    ``to_json``, which quotes, escapes, and prints timestamps as RFC 3339.
    """
    if pgtype.kind in (Kind.INTEGER, Kind.BOOLEAN, Kind.JSONB):
        sql = f"{column}::text"
    elif pgtype.kind is Kind.JSON:
        sql = f"translate({column}::text, E'\\n\\r', '  ')"
    else:
        sql = f"to_json({column})::text"
    return f"coalesce({sql}, 'null')" if nullable else sql


# --- CSV -------------------------------------------------------------------------------


#: RFC 3339 from COPY's own text of a timestamp: ``2024-01-01 00:00:01+00`` (``TimeZone``
#: UTC, ``DateStyle`` ISO) becomes ``2024-01-01T00:00:01+00:00``, what ``to_json`` prints,
#: at a third of ``to_json``'s cost. Years before 1 (``… BC``) and ±infinity print
#: differently, so they take ``to_json``: the guard is two integer comparisons.
_RFC3339 = {
    "timestamptz": (
        "CASE WHEN {c} >= '0001-01-01 00:00:00+00' AND {c} < 'infinity' "
        "THEN replace({c}::text, ' ', 'T') || ':00' ELSE to_json({c}) #>> '{{}}' END"
    ),
    "timestamp": (
        "CASE WHEN {c} >= '0001-01-01 00:00:00' AND {c} < 'infinity' "
        "THEN replace({c}::text, ' ', 'T') ELSE to_json({c}) #>> '{{}}' END"
    ),
}


def csv_sql(column: str, pgtype: PgType) -> str:
    """SQL whose COPY (CSV) output is the text of ``column``'s JSON value.

    Most types print the same in COPY as inside their JSON string (``DateStyle`` is ISO
    in an export's transaction), so the column goes to COPY as it is, the cheapest way.
    """
    kind = pgtype.kind
    if kind is Kind.BOOLEAN:
        return f"{column}::text"  # 'true'/'false', not COPY's t/f
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return _RFC3339[pgtype.name].format(c=column)
    if kind is Kind.ARRAY:
        return f"to_json({column})::text"  # JSON arrays, not PostgreSQL's {…}
    return column


#: What makes a spreadsheet run a cell as a formula (OWASP, "CSV Injection"), and the
#: quote that escapes it, escaped in turn so that the prefix reads back unambiguously.
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
_CSV_FORMULA_STARTS_SQL = r"'=', '+', '-', '@', E'\t', E'\r', ''''"


def csv_safe_sql(rendered: str, pgtype: PgType) -> str:
    """``rendered`` (a column's CSV expression) with ``'`` before a text value that a
    spreadsheet would take for a formula. Text and enum labels only: a negative number
    is a number, and every other kind prints no such first character as text."""
    if pgtype.kind not in (Kind.TEXT, Kind.ENUM):
        return rendered
    # concat() prints each value with its type's output function: char(n) keeps its
    # padding (a cast to text, or ||, would strip it), so unprefixed cells stay exact.
    return (
        f"CASE WHEN {rendered} IS NULL THEN NULL "
        f"WHEN left({rendered}::text, 1) IN ({_CSV_FORMULA_STARTS_SQL}) "
        f"THEN concat('''', {rendered}) ELSE concat({rendered}) END"
    )


def csv_safe_name(name: str) -> str:
    """A column name for a spreadsheet-safe CSV header."""
    return "'" + name if name.startswith(CSV_FORMULA_STARTS) else name


# --- Arrow -----------------------------------------------------------------------------

#: How ``_arrow_type`` reaches a column's values: as they come from asyncpg, or as
#: microseconds (or days) since the epoch computed by PostgreSQL, viewed as the type.
_EPOCH_MICROSECONDS = "(extract(epoch FROM {c}) * 1000000)::int8"
_EPOCH_DAYS = "({c} - DATE '1970-01-01')"


def arrow_sql(column: str, pgtype: PgType) -> str:
    """The SELECT expression feeding ``ArrowEncoder`` for ``column``."""
    kind = pgtype.kind
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.TIME):
        return arrow_guard(column, pgtype, _EPOCH_MICROSECONDS.format(c=column))
    if kind is Kind.DATE:
        return arrow_guard(column, pgtype, _EPOCH_DAYS.format(c=column))
    return arrow_guard(column, pgtype, column)


def arrow_is_text(pgtype: PgType) -> bool:
    """Whether the Arrow column carries PostgreSQL's text form of the value."""
    kind = pgtype.kind
    if kind is Kind.NUMERIC:
        return pgtype.precision is None or pgtype.precision > 38
    if kind is Kind.ARRAY:
        element = pgtype.element
        return element is None or element.kind not in (
            Kind.INTEGER,
            Kind.FLOAT,
            Kind.BOOLEAN,
            Kind.TEXT,
        )
    return kind in (Kind.UUID, Kind.JSON, Kind.JSONB, Kind.ENUM, Kind.OTHER)


def arrow_text_reason(pgtype: PgType) -> str | None:
    """Why the Arrow column carries the value's text (``GET /datasets`` says), or None."""
    if not arrow_is_text(pgtype):
        return None
    if pgtype.kind is Kind.NUMERIC:
        if pgtype.precision is None:
            return (
                "a numeric without a precision has no exact Arrow decimal (a saved query may "
                'declare one: types = { column = "numeric(p,s)" })'
            )
        return "a numeric of more than 38 digits is wider than Arrow's decimal128"
    if pgtype.kind is Kind.ARRAY:
        return "only arrays of integers, floats, booleans and text are Arrow lists"
    return f"Arrow has no type for {pgtype.display}: PostgreSQL's text of it"


#: Values with no Arrow form, by kind: a multi-dimensional array (Arrow lists have one
#: dimension; the ADBC driver would read it as one flat list), ±infinity, and timestamps
#: past the end of Arrow's int64 microseconds (294247-01-10; the driver would overflow):
#: a SQL condition true for such a value, and what to say.
_NO_ARROW_VALUE = {
    Kind.ARRAY: ("array_ndims({c}) > 1", "a multi-dimensional array: Arrow lists have one"),
    Kind.DATE: ("NOT isfinite({c})", "an infinite date: Arrow has none"),
    Kind.TIMESTAMP: (
        "NOT ({c} > '-infinity' AND {c} <= '294247-01-10 04:00:54.775807')",
        "a timestamp Arrow cannot hold (infinite, or after 294247-01-10)",
    ),
}
_NO_ARROW_VALUE[Kind.TIMESTAMPTZ] = _NO_ARROW_VALUE[Kind.TIMESTAMP]
#: What ``arrow_guard`` says, verbatim inside PostgreSQL's error in any ``lc_messages``
#: (the server translates its own words around it, never ours): ``errors.refused`` reads it.
ARROW_REFUSALS = tuple(dict.fromkeys(message for _, message in _NO_ARROW_VALUE.values()))
#: The SQLSTATE of the guard's failed cast (``invalid_text_representation``).
ARROW_REFUSAL_SQLSTATE = "22P02"


def arrow_guard(column: str, pgtype: PgType, expression: str) -> str:
    """``expression`` (how an Arrow path selects ``column``), except for a value with no
    Arrow form (``_NO_ARROW_VALUE``): that fails the export, on every path alike, with a
    message saying why (a cast to integer of a text saying it, which ``errors.refused``
    finds in PostgreSQL's error). A column Arrow carries as text is that text (``::text``),
    and needs no guard."""
    if arrow_is_text(pgtype):
        return f"{column}::text"
    if pgtype.kind not in _NO_ARROW_VALUE:
        return expression
    condition, message = _NO_ARROW_VALUE[pgtype.kind]
    # left(…, 0) makes the text depend on the row, so it is not evaluated while planning
    refuse = f"(left({column}::text, 0) || '{message}')::int"
    return (
        f"CASE WHEN {condition.format(c=column)} "
        f"THEN CASE WHEN {refuse} = 0 THEN {expression} END ELSE {expression} END"
    )


def binary_sql(column: str, pgtype: PgType) -> str:
    """The SELECT expression of ``column`` for the ADBC driver's binary ``COPY``
    (``adbc.py``): the columns Arrow carries as text cast as the cursor path casts them
    (the driver decodes a uuid to 16 bytes, an interval to months-days-nanoseconds, numeric
    NaN to ``nan``), the rest to a built-in type the driver knows (a domain to its base
    type), guarded (``arrow_guard``)."""
    base = binary_base(pgtype.element if pgtype.element is not None else pgtype)
    cast = f"{base}[]" if pgtype.kind is Kind.ARRAY else base
    return arrow_guard(column, pgtype, f"{column}::{cast}")


def binary_base(pgtype: PgType) -> str:
    """The built-in type name to cast to: ``bpchar`` keeps ``char(n)``'s padding (where
    ``character`` would mean ``char(1)``), other text types (``citext``, ``name``) are
    ``text``."""
    if pgtype.kind is Kind.TEXT:
        return "bpchar" if pgtype.name == "bpchar" else "text"
    return pgtype.name


def arrow_from_copy_text(pgtype: PgType) -> bool:
    """Whether Arrow's CSV reader turns PostgreSQL's ``COPY`` text of the type into its
    Arrow value exactly (``encoders.ArrowFromCSV``); arrays and bytea are not."""
    return pgtype.kind not in (Kind.ARRAY, Kind.BYTEA)


def arrow_type(pgtype: PgType) -> Any:
    """The Arrow type of a column, and whether it arrives as epoch integers (viewed)."""
    import pyarrow as pa

    kind = pgtype.kind
    if arrow_is_text(pgtype):
        return pa.string()
    if kind is Kind.INTEGER:
        return {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}[INT_BITS[pgtype.name]]
    if kind is Kind.FLOAT:
        return pa.float32() if pgtype.name == "float4" else pa.float64()
    if kind is Kind.NUMERIC:
        return pa.decimal128(pgtype.precision or 38, pgtype.scale or 0)
    if kind is Kind.BOOLEAN:
        return pa.bool_()
    if kind is Kind.TEXT:
        return pa.string()
    if kind is Kind.DATE:
        return pa.date32()
    if kind is Kind.TIME:
        return pa.time64("us")
    if kind is Kind.TIMESTAMP:
        return pa.timestamp("us")
    if kind is Kind.TIMESTAMPTZ:
        return pa.timestamp("us", tz="UTC")
    if kind is Kind.BYTEA:
        return pa.binary()
    assert kind is Kind.ARRAY and pgtype.element is not None
    return pa.list_(arrow_type(pgtype.element))


def arrow_via_integers(pgtype: PgType) -> Any:
    """The integer Arrow type the values arrive as, for types sent as epoch offsets."""
    import pyarrow as pa

    if pgtype.kind is Kind.DATE:
        return pa.int32()
    if pgtype.kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.TIME):
        return pa.int64()
    return None


# --- OpenAPI ---------------------------------------------------------------------------


def json_schema(pgtype: PgType, nullable: bool) -> dict[str, Any]:
    """The JSON Schema of a column's value in the JSON formats."""
    kind = pgtype.kind
    schema: dict[str, Any]
    if kind is Kind.INTEGER:
        schema = {"type": "integer", "format": "int64" if pgtype.name == "int8" else "int32"}
    elif kind in (Kind.FLOAT, Kind.NUMERIC):
        schema = {"type": "number"}
    elif kind is Kind.BOOLEAN:
        schema = {"type": "boolean"}
    elif kind is Kind.UUID:
        schema = {"type": "string", "format": "uuid"}
    elif kind is Kind.DATE:
        schema = {"type": "string", "format": "date"}
    elif kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        schema = {"type": "string", "format": "date-time"}
    elif kind in (Kind.JSON, Kind.JSONB):
        schema = {}
    elif kind is Kind.ARRAY:
        element = pgtype.element
        items = json_schema(element, True) if element is not None else {}
        schema = {"type": "array", "items": items}
    else:
        schema = {"type": "string"}
    schema["description"] = pgtype.display
    if nullable:
        schema["nullable"] = True
    return schema


#: RFC 3339 date-times that are always valid and in range (days up to 28, offsets under
#: 14 h), the offset optional (then UTC): what the OpenAPI document promises will be
#: accepted. The parser accepts every valid date-time besides.
DATETIME_PATTERN = (
    r"[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(\.\d{1,9})?([Zz]|[+-](0\d|1[0-3]):[0-5]\d)?"
)
_UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def value_pattern(pgtype: PgType) -> str | None:
    """A regular expression every value of the type matches (for lists of values in
    ``__in`` and ``after``), where one is short and exact enough to document."""
    kind = pgtype.kind
    if kind is Kind.INTEGER:
        digits = {"int2": 4, "int4": 9, "int8": 18}[pgtype.name]  # never out of range
        return rf"-?(0|[1-9]\d{{0,{digits - 1}}})"  # also a JSON number (for after=)
    if kind is Kind.BOOLEAN:
        return "(true|false)"
    if kind is Kind.UUID:
        return _UUID_PATTERN
    if kind is Kind.TIMESTAMPTZ:
        return DATETIME_PATTERN
    if kind in (Kind.FLOAT, Kind.NUMERIC):
        return r"-?\d{1,15}(\.\d{1,15})?"
    if kind in (Kind.TEXT, Kind.ENUM):
        return r"[^,\x00]*"
    return None


def parameter_schema(pgtype: PgType) -> dict[str, Any]:
    """The OpenAPI schema of a filter parameter on a column of this type."""
    kind = pgtype.kind
    if kind is Kind.INTEGER:
        bound = 2 ** (INT_BITS[pgtype.name] - 1)
        return {"type": "integer", "minimum": -bound, "maximum": bound - 1}
    if kind in (Kind.FLOAT, Kind.NUMERIC):
        return {"type": "number"}
    if kind is Kind.BOOLEAN:
        return {"type": "boolean"}
    if kind is Kind.TIMESTAMPTZ:
        # RFC 3339, the offset optional (then UTC): a pattern, as format date-time needs one
        return {"type": "string", "pattern": f"^{DATETIME_PATTERN}$"}
    if kind is Kind.DATE:
        return {"type": "string", "format": "date"}
    if kind is Kind.UUID:
        return {"type": "string", "format": "uuid", "pattern": f"^{_UUID_PATTERN}$"}
    if kind in (Kind.TEXT, Kind.ENUM):
        return {"type": "string", "pattern": r"^[^\x00]*$", "maxLength": MAX_VALUE_LENGTH}
    return {"type": "string"}


def list_schema(pgtype: PgType) -> dict[str, Any]:
    """The OpenAPI schema of ``__in``: comma-separated values of the type, as many and as
    long as the parser takes (a schema-valid list is never refused)."""
    pattern = value_pattern(pgtype)
    if pattern is None:
        return {"type": "string", "minLength": 1, "maxLength": MAX_LIST_CHARS}
    repeat = f"(,{pattern}){{0,{MAX_IN_VALUES - 1}}}"
    return {"type": "string", "pattern": f"^{pattern}{repeat}$", "maxLength": MAX_LIST_CHARS}
