"""Property tests of the type map (app/pgtypes.py) against PostgreSQL itself.

For generated values of every supported type (unicode and control characters, empty
strings, integer bounds, NaN and infinities, numerics of thousands of digits, BC and
far-future dates, odd arrays and json), the service's renderings must keep
``pgtypes``' contract:

- JSON (``sql.as_json``, read from a cursor and through ``COPY`` as the standard route
  reads it) parses to exactly what ``row_to_json`` gives for the row;
- CSV (``sql.as_csv`` through ``COPY … (FORMAT csv, HEADER)``) carries, for each column,
  the text of that JSON value; NULL is COPY's unquoted empty field.

No server, no HTTP: the SQL builder's own statements run on one connection against a real
database, so hundreds of examples take seconds. Each example inserts one row and reads it
back inside a transaction that is rolled back, with the export's own settings
(``transaction.TRANSACTION_SETTINGS``: UTC, ISO dates, float digits), which is what makes the
renderings
deterministic in the first place.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from app import datasets, introspection, render, sql
from app.pgtypes import Kind
from app.transaction import TRANSACTION_SETTINGS

# --- values ----------------------------------------------------------------------------

#: Characters PostgreSQL text can hold (no NUL, no lone surrogates), with the ones that
#: stress quoting and escaping (CSV, JSON, COPY's ``\\.``) drawn more often than chance.
_CHARACTERS = st.one_of(
    st.characters(codec="utf-8", exclude_characters="\x00"),
    st.sampled_from(
        [
            *map(chr, range(1, 32)),
            *'",\\.{} \x7f\u0085\u2028\u2029\ufeff',
            *("é", "✓", "\U0001d11e"),
        ]
    ),
)
_TEXTS = st.one_of(
    st.text(_CHARACTERS),
    st.sampled_from(["", " ", "NULL", "null", "\\N", "\\.", "true", "1e3", "NaN"]),
)


def _numeric(negative: bool, whole: str, fraction: str) -> Decimal:
    return Decimal(f"{'-' if negative else ''}{whole}{'.' if fraction else ''}{fraction}")


_DIGITS = "0123456789"
_NUMERICS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    # long ones: up to a thousand digits on each side of the point
    st.builds(
        _numeric,
        st.booleans(),
        st.text(_DIGITS, min_size=1, max_size=1000),
        st.text(_DIGITS, max_size=1000),
    ),
    # numeric's extremes: 131072 digits before the point, 16383 after
    st.integers(-16383, 131071).map(lambda e: Decimal(1).scaleb(e)),
    st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]),
)

#: A calendar day as (ISO date, era): common years; BC ones (days up to the 28th, as BC
#: leap years differ from Python's); far-future ones up to ``max_year``.
_Day: TypeAlias = tuple[str, str]


def _days(max_year: int) -> st.SearchStrategy[_Day]:
    def day(year: int, month: int, day_: int) -> str:
        return f"{year:04d}-{month:02d}-{day_:02d}"

    months, days = st.integers(1, 12), st.integers(1, 28)
    return st.one_of(
        st.dates().map(lambda d: (d.isoformat(), "")),
        st.builds(day, st.integers(1, 4713), months, days).map(lambda d: (d, " BC")),
        st.builds(day, st.integers(10_000, max_year), months, days).map(lambda d: (d, "")),
    )


def _offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


_INFINITIES = st.sampled_from(["infinity", "-infinity"])
#: Dates, timestamps and timestamptzs are generated as the text PostgreSQL reads (and
#: bound as text, cast in the INSERT): Python's types cannot hold BC or year 10000+.
_DATES = st.one_of(_days(5_874_896).map("".join), _INFINITIES)
_TIMESTAMPS = st.one_of(
    st.builds(lambda d, t: f"{d[0]} {t.isoformat()}{d[1]}", _days(294_275), st.times()),
    _INFINITIES,
)
_TIMESTAMPTZS = st.one_of(
    st.builds(
        lambda d, t, o: f"{d[0]} {t.isoformat()}{_offset(o)}{d[1]}",
        _days(294_275),
        st.times(),
        st.integers(-(15 * 60 + 59), 15 * 60 + 59),
    ),
    _INFINITIES,
)

_TIMES = st.one_of(st.times().map(lambda t: t.isoformat()), st.just("24:00:00"))

_JSON_STRINGS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _JSON_STRINGS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_JSON_STRINGS, inner, max_size=4),
    max_leaves=12,
)

_INT4 = st.integers(-(2**31), 2**31 - 1)
_INT_ELEMENTS = st.none() | _INT4
_INT_ARRAYS = st.one_of(
    st.lists(_INT_ELEMENTS, max_size=6),
    # two dimensions: rectangular, as PostgreSQL requires
    st.integers(1, 3).flatmap(
        lambda n: st.lists(st.lists(_INT_ELEMENTS, min_size=n, max_size=n), min_size=1, max_size=3)
    ),
)
_TEXT_ARRAYS = st.lists(st.none() | _TEXTS, max_size=6)


@dataclass(frozen=True)
class Column:
    """One column of ``props``: named after its type, as the type is declared."""

    name: str
    declared: str
    kind: Kind
    values: st.SearchStrategy[Any]
    #: How the INSERT binds the value (values generated as PostgreSQL's input text).
    cast: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("smallint", "smallint", Kind.INTEGER, st.integers(-(2**15), 2**15 - 1)),
    Column("integer", "integer", Kind.INTEGER, _INT4),
    Column("bigint", "bigint", Kind.INTEGER, st.integers(-(2**63), 2**63 - 1)),
    Column("numeric", "numeric", Kind.NUMERIC, _NUMERICS),
    Column("real", "real", Kind.FLOAT, st.floats(width=32)),
    Column("double precision", "double precision", Kind.FLOAT, st.floats()),
    Column("boolean", "boolean", Kind.BOOLEAN, st.booleans()),
    Column("text", "text", Kind.TEXT, _TEXTS),
    Column("varchar", "varchar", Kind.TEXT, _TEXTS),
    Column("uuid", "uuid", Kind.UUID, st.uuids()),
    Column("char(4)", "char(4)", Kind.TEXT, st.text(_CHARACTERS, max_size=4)),
    Column("date", "date", Kind.DATE, _DATES, "::text::date"),
    Column("time", "time", Kind.TIME, _TIMES, "::text::time"),
    Column("timestamp", "timestamp", Kind.TIMESTAMP, _TIMESTAMPS, "::text::timestamp"),
    Column("timestamptz", "timestamptz", Kind.TIMESTAMPTZ, _TIMESTAMPTZS, "::text::timestamptz"),
    Column("bytea", "bytea", Kind.BYTEA, st.binary()),
    Column("jsonb", "jsonb", Kind.JSONB, _JSON_VALUES.map(json.dumps)),
    Column("int[]", "integer[]", Kind.ARRAY, _INT_ARRAYS),
    Column("text[]", "text[]", Kind.ARRAY, _TEXT_ARRAYS),
)
NAMES = ["id", *(c.name for c in COLUMNS)]

Row: TypeAlias = dict[str, Any]


def _nullable(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """NULL one time in four; shrinks towards NULL, so a failing row shrinks to the one
    value that fails."""
    return st.tuples(st.integers(0, 3), values).map(lambda p: None if p[0] == 0 else p[1])


ROWS = st.fixed_dictionaries({c.name: _nullable(c.values) for c in COLUMNS})

#: Rows every run checks, whatever it draws: the bounds and the special values.
LOWS: Row = {
    "smallint": -(2**15),
    "integer": -(2**31),
    "bigint": -(2**63),
    "numeric": Decimal(1).scaleb(131071).copy_negate(),
    "real": float("nan"),
    "double precision": float("-inf"),
    "boolean": False,
    "text": "",
    "varchar": "".join(map(chr, range(1, 32))) + '\x7f"a,b"\\.',
    "uuid": "00000000-0000-0000-0000-000000000000",
    "char(4)": '\x01,"',
    "date": "4714-11-24 BC",
    "time": "00:00:00",
    "timestamp": "4714-11-24 00:00:00 BC",
    "timestamptz": "-infinity",
    "bytea": b"",
    "jsonb": '"a string"',
    "int[]": [-(2**31), None],
    "text[]": ["", None, "NULL", '"', ",", "{}", "\\"],
}
HIGHS: Row = {
    "smallint": 2**15 - 1,
    "integer": 2**31 - 1,
    "bigint": 2**63 - 1,
    "numeric": Decimal(1).scaleb(-16383),
    "real": float("inf"),
    "double precision": float("nan"),
    "boolean": True,
    "text": "é ✓ \U0001d11e \u2028 </script> \r\n",
    "varchar": "\\N",
    "uuid": "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "char(4)": "a   ",
    "date": "5874897-12-31",
    "time": "24:00:00",
    "timestamp": "294276-12-31 23:59:59.999999",
    "timestamptz": "294276-12-31 23:59:59.999999+00",
    "bytea": bytes(range(256)),
    "jsonb": "null",  # JSON null: not SQL NULL
    "int[]": [[2**31 - 1, None], [0, -1]],
    "text[]": [],
}
ODDS: Row = {
    "smallint": 0,
    "integer": 0,
    "bigint": -1,
    "numeric": Decimal("-0.000"),
    "real": -0.0,
    "double precision": 5e-324,
    "boolean": None,
    "text": "\\.",
    "varchar": "",
    "uuid": None,
    "char(4)": "",
    "date": "infinity",
    "time": "12:00:00.000001",
    "timestamp": "-infinity",
    "timestamptz": "0001-01-01 00:00:00+15:59",  # 1 BC in UTC
    "bytea": b"\x00",
    "jsonb": '{"b": 1e400, "a": [true, null, -0.0, "\\u0001"], "": {}}',
    "int[]": [],
    "text[]": [None],
}
NULLS: Row = dict.fromkeys((c.name for c in COLUMNS), None)
#: Either side of year 1, where timestamps' CSV rendering switches from COPY's text to
#: ``to_json``'s (see ``pgtypes.csv_sql``).
FIRST_AD: Row = {
    **NULLS,
    "date": "0001-01-01",
    "timestamp": "0001-01-01 00:00:00",
    "timestamptz": "0001-01-01 00:00:00+00",
}
LAST_BC: Row = {
    **NULLS,
    "date": "0001-12-31 BC",
    "timestamp": "0001-12-31 23:59:59.999999 BC",
    "timestamptz": "0001-12-31 23:59:59.999999+00 BC",
}


# --- the database ----------------------------------------------------------------------

CONFIG = datasets.DatasetsFile.model_validate({"datasets": {"props": {"table": "props"}}})
_CREATE = "CREATE TABLE props (id integer PRIMARY KEY, {})".format(
    ", ".join(f"{sql.ident(c.name)} {c.declared}" for c in COLUMNS)
)
_INSERT = "INSERT INTO props ({}) VALUES ({})".format(
    ", ".join(map(sql.ident, NAMES)),
    ", ".join(["$1", *(f"${i}{c.cast}" for i, c in enumerate(COLUMNS, start=2))]),
)
_ROW_TO_JSON = "SELECT row_to_json(t)::text FROM (SELECT {} FROM props WHERE id = $1) t".format(
    ", ".join(map(sql.ident, NAMES))
)


@dataclass
class Props:
    """One connection to the ``props`` database, the event loop it lives on, and the
    ``props`` dataset as the service describes it."""

    runner: asyncio.Runner
    conn: asyncpg.Connection
    dataset: datasets.Dataset


@pytest.fixture(scope="module")
def props_url(fresh_database: Callable[..., str]) -> str:
    url: str = fresh_database("rowstream_props", _CREATE)
    return url


@pytest.fixture
def props(props_url: str) -> Iterator[Props]:
    with asyncio.Runner() as runner:
        conn = runner.run(asyncpg.connect(props_url))
        try:
            dataset = runner.run(introspection.describe_all(conn, CONFIG))["props"]
            yield Props(runner, conn, dataset)
        finally:
            runner.run(conn.close())


@dataclass(frozen=True)
class Rendered:
    """One row as PostgreSQL and as the service render it."""

    row_to_json: str
    #: ``as_json``'s text, read from a cursor (the streams).
    json: str
    #: ``as_json`` through ``COPY`` with ``JSON_LINES_COPY`` (the standard route).
    json_line: bytes
    #: ``as_csv`` through ``COPY`` with ``CSV_COPY``: header and record.
    csv: bytes
    #: NDJSON and CSV rendered in the server from binary ``COPY`` (``app/render.py``).
    served_ndjson: bytes
    served_csv: bytes
    #: The ``text`` column alone, both ways.
    single_csv: bytes
    served_single_csv: bytes


async def _copy(conn: asyncpg.Connection, query: sql.Query, options: dict[str, Any]) -> bytes:
    chunks: list[bytes] = []

    async def collect(data: bytes) -> None:
        chunks.append(data)

    await conn.copy_from_query(query.sql, *query.args, output=collect, **options)
    return b"".join(chunks)


async def _served(conn: asyncpg.Connection, renderer: render.Renderer) -> bytes:
    """The renderer's text of its statement's binary ``COPY``, fed in pieces of 1 to 7
    bytes, so that rows, values and the header are split everywhere, into an output buffer
    of 16 bytes, so that every row takes the path of a row larger than the buffer."""
    renderer._out = ctypes.create_string_buffer(16)
    data = await _copy(conn, renderer.query, {"format": "binary"})
    out, rows, start = [], 0, 0
    for size in itertools.cycle(range(1, 8)):
        if start >= len(data):
            break
        text, ended = renderer.render(data[start : start + size])
        out.append(text)
        rows, start = rows + ended, start + size
    assert renderer.ended and rows == 1
    return b"".join(out)


async def _render(props: Props, row: Row) -> Rendered:
    """Insert ``row`` (as id 1) and render it every way, in a transaction rolled back."""
    conn, dataset = props.conn, props.dataset
    selection = sql.Selection(fields=dataset.column_names)
    single = sql.Selection(fields=("text",))  # alone in its row, "\\." is quoted
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(TRANSACTION_SETTINGS)
        await conn.execute(_INSERT, 1, *(row[c.name] for c in COLUMNS))
        theirs = await conn.fetchval(_ROW_TO_JSON, 1)
        query = sql.as_json(dataset, selection)
        ours = [r[0] for r in await conn.fetch(query.sql, *query.args)]
        assert len(ours) == 1
        return Rendered(
            row_to_json=theirs,
            json=ours[0],
            json_line=await _copy(conn, query, sql.JSON_LINES_COPY),
            csv=await _copy(conn, sql.as_csv(dataset, selection), sql.CSV_COPY),
            served_ndjson=await _served(conn, render.Renderer(dataset, selection, "ndjson")),
            served_csv=await _served(conn, render.Renderer(dataset, selection, "csv")),
            single_csv=await _copy(conn, sql.as_csv(dataset, single), sql.CSV_COPY),
            served_single_csv=await _served(conn, render.Renderer(dataset, single, "csv")),
        )
    finally:
        await tx.rollback()


# --- reading what comes back -----------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """A JSON number as written: CSV must carry exactly this text."""

    text: str

    @property
    def value(self) -> Decimal:
        return Decimal(self.text)


Json: TypeAlias = "bool | Number | str | list[Json] | dict[str, Json] | None"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(text: str) -> Json:
    """Strict JSON: numbers kept as written (``Number``), ``NaN``/``Infinity`` refused,
    raw control characters in strings refused. Plain ``json.loads`` would accept ``NaN``,
    and would find ``1 == true`` and ``1.0 == 1``-with-a-different-text equal."""
    parsed: Json = json.loads(
        text, parse_int=Number, parse_float=Number, parse_constant=_no_constant
    )
    return parsed


def canonical(value: Json) -> Any:
    """What "parses equal" compares: the kind of each value, and numbers by value
    (``1.50`` equals ``1.5``), objects regardless of key order."""
    if value is None or isinstance(value, bool | str):
        return (type(value).__name__, value)
    if isinstance(value, Number):
        return ("number", value.value)
    if isinstance(value, list):
        return ("array", [canonical(v) for v in value])
    return ("object", {k: canonical(v) for k, v in value.items()})


def csv_records(text: str) -> list[list[str | None]]:
    """RFC 4180 records, strictly: a quote only opens a field and only closes it before a
    delimiter or a line end; an unquoted empty field is None (COPY's NULL), ``""`` is ''."""
    records: list[list[str | None]] = []
    fields: list[str | None] = []
    field: list[str] = []
    quoted = in_quotes = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_quotes:
            if ch == '"' and text[i + 1 : i + 2] == '"':
                field.append('"')
                i += 1
            elif ch == '"':
                in_quotes = False
                assert text[i + 1 : i + 2] in (",", "\n"), f"stray quote at {i}"
            else:
                field.append(ch)
        elif ch == '"':
            assert not field and not quoted, f"quote inside an unquoted field at {i}"
            in_quotes = quoted = True
        elif ch in ",\n":
            fields.append("".join(field) if field or quoted else None)
            field, quoted = [], False
            if ch == "\n":
                records.append(fields)
                fields = []
        else:
            assert ch != "\r", "a bare CR outside quotes"
            field.append(ch)
        i += 1
    assert not in_quotes and not field and not fields and not quoted, "an unfinished record"
    return records


def json_text(value: Json) -> str:
    """The text of a scalar JSON value, as the CSV format carries it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Number):
        return value.text
    assert isinstance(value, str), value
    return value


# --- the properties --------------------------------------------------------------------

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,  # and nothing written to .hypothesis/
    # the connection is shared by the examples on purpose: each one rolls back its row
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fixed_examples(test: Callable[..., None]) -> Callable[..., None]:
    """The hand-picked rows every property runs on, besides the generated ones."""
    for row in (LOWS, HIGHS, ODDS, NULLS, FIRST_AD, LAST_BC):
        test = example(row=row)(test)
    return test


def test_props_columns_are_the_supported_kinds(props: Props) -> None:
    """The properties below are about the type map's own renderings: no column may fall
    back to ``Kind.OTHER`` (PostgreSQL's text), which would make them vacuous."""
    kinds = {c.name: c.type.kind for c in props.dataset.columns}
    assert kinds == {"id": Kind.INTEGER, **{c.name: c.kind for c in COLUMNS}}
    assert props.dataset.key == ("id",)


@SETTINGS
@fixed_examples
@given(row=ROWS)
def test_json_parses_equal_to_row_to_json(props: Props, row: Row) -> None:
    """Both ways the service reads JSON rows (a cursor for streams, COPY for the standard
    route) give one valid JSON object per row, keys in column order, each value what
    ``row_to_json`` gives for it."""
    note(f"row = {row!r}")  # the schemathesis plugin blanks Hypothesis' own report of it
    rendered = props.runner.run(_render(props, row))
    theirs, ours = parse(rendered.row_to_json), parse(rendered.json)
    assert isinstance(theirs, dict) and isinstance(ours, dict)
    assert list(ours) == list(theirs) == NAMES
    for name in NAMES:
        assert canonical(ours[name]) == canonical(theirs[name]), (name, ours[name], theirs[name])
    assert "\n" not in rendered.json and "\r" not in rendered.json  # one line per row
    assert rendered.json_line == rendered.json.encode() + b"\n"
    assert rendered.served_ndjson == rendered.json_line  # byte for byte


@SETTINGS
@fixed_examples
@given(row=ROWS)
def test_csv_is_the_text_of_each_json_value(props: Props, row: Row) -> None:
    """Each CSV field is the text of the column's ``row_to_json`` value: a string as it
    is, a number as written, ``true``/``false``; arrays (and jsonb, as pgtypes documents:
    "json as JSON text") as JSON text that parses equal; SQL NULL, and only it, as an
    unquoted empty field."""
    note(f"row = {row!r}")  # the schemathesis plugin blanks Hypothesis' own report of it
    rendered = props.runner.run(_render(props, row))
    theirs = parse(rendered.row_to_json)
    assert isinstance(theirs, dict)
    header, *records = csv_records(rendered.csv.decode())
    assert header == NAMES
    assert len(records) == 1
    cells = dict(zip(NAMES, records[0], strict=True))
    assert cells["id"] == "1"
    assert rendered.served_csv == rendered.csv  # byte for byte
    assert rendered.served_single_csv == rendered.single_csv
    for column in COLUMNS:
        cell, value = cells[column.name], theirs[column.name]
        if row[column.name] is None:
            assert cell is None, (column.name, cell)
        elif column.kind is Kind.JSONB or isinstance(value, list | dict):
            assert cell is not None, column.name
            assert canonical(parse(cell)) == canonical(value), (column.name, cell, value)
        else:
            assert cell == json_text(value), (column.name, cell, value)
