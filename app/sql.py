"""The SQL builder: from a dataset and a selection to the statements an export runs.

Identifiers are quoted here and only here (``ident``); every value is a bound parameter,
passed as text and cast to its column's type by PostgreSQL (``$3::text::integer``), so
one code path serves every type and the planner still sees a constant it can match to an
index. Rows come in key order and resume with a row-value comparison on the key,
``("day", "channel") > ($1::text::date, $2::text::text)``, which a btree index on the key
answers directly (keyset paging, never OFFSET).

Rows are rendered by PostgreSQL: JSON as concatenated text (``'{"id":' || "id" || …``,
faster than ``row_to_json`` and parsed-equal to it), CSV by ``COPY``, Arrow as typed
columns; see ``pgtypes.py`` for each type.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app import pgtypes
from app.operators import OPERATORS
from app.quoting import ident, literal

if TYPE_CHECKING:
    from app.datasets import Dataset


@dataclass(frozen=True)
class Condition:
    column: str
    operator: str
    #: The bound text (``in``: a list of texts; ``isnull``: a bool, not bound).
    value: Any


@dataclass(frozen=True)
class Query:
    sql: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Selection:
    """Which rows and columns a request asks for, validated against its dataset."""

    fields: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()
    #: The key values of the last row received, as text, in key order (exclusive).
    after: tuple[str, ...] | None = None
    limit: int | None = None
    #: A saved query's parameter values, as text, in the dataset's ``params`` order.
    params: tuple[str, ...] = ()
    #: The values of the dataset's ``row_filter`` (from the caller's claims), in its order.
    row_filter: tuple[str | None, ...] = ()
    #: A part of a partitioned export (``partitions.py``): its key range, after
    #: ``range_after`` (exclusive) up to ``range_until`` (inclusive); ``after`` resumes
    #: inside it and can only narrow it.
    range_after: tuple[str, ...] | None = None
    range_until: tuple[str, ...] | None = None
    #: CSV only: text cells and names a spreadsheet would run as formulas are prefixed
    #: with ``'`` (``CSV_SAFE``, ``csv_safe=``; see ``pgtypes.csv_safe_sql``).
    csv_safe: bool = False


class _Binder:
    def __init__(self, first: tuple[Any, ...]) -> None:
        self.args: list[Any] = list(first)

    def bind(self, value: Any, cast: str | None = None) -> str:
        self.args.append(value)
        placeholder = f"${len(self.args)}"
        return f"{placeholder}::text::{cast}" if cast else placeholder


class _SettingsBinder(_Binder):
    """Values as transaction-local settings (``current_setting('rowstream.arg_N')``), set
    beforehand with bound ``set_config`` calls: for a statement that must carry no
    parameters of its own (the ADBC driver streams only a parameterless query, through
    ``COPY``), with still no value spliced into its text."""

    def bind(self, value: Any, cast: str | None = None) -> str:
        self.args.append(value)
        setting = f"current_setting('{SETTING_PREFIX}{len(self.args)}')"
        if cast:
            return f"{setting}::text::{cast}"
        if value is None or isinstance(value, int):
            return f"{setting}::bigint"  # LIMIT
        raise ValueError("only text and integer values travel as settings")


#: The names of ``_SettingsBinder``'s settings: ``rowstream.arg_1``, ``rowstream.arg_2``…
SETTING_PREFIX = "rowstream.arg_"


def _where(dataset: Dataset, selection: Selection, binder: _Binder) -> str:
    if len(selection.row_filter) != len(dataset.row_filter):
        # Never a query without its row filter, whoever built the selection.
        raise ValueError(f"dataset {dataset.name!r}: the selection lacks its row filter")
    conditions = [
        f"{ident(f.column)} = {binder.bind(value, f.type.sql)}"
        for f, value in zip(dataset.row_filter, selection.row_filter, strict=True)
    ]
    for condition in selection.conditions:
        column = dataset.by_name[condition.column]
        c = ident(condition.column)
        op = OPERATORS[condition.operator]
        if op.suffix == "isnull":
            value = "NULL" if condition.value else "NOT NULL"
        elif op.suffix == "in":
            value = f"{binder.bind(list(condition.value))}::text[]::{column.type.sql}[]"
        elif op.suffix == "prefix":
            value = binder.bind(_like_prefix(condition.value), "text")
            c = f"{c}::text"
        else:
            value = binder.bind(condition.value, column.type.sql)
        conditions.append(op.template.format(c=c, v=value))
    bounds = ((selection.after, ">"), (selection.range_after, ">"), (selection.range_until, "<="))
    for bound, comparison in bounds:
        if bound is not None:
            conditions.append(_key_compared(dataset, comparison, bound, binder))
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _key_compared(
    dataset: Dataset, comparison: str, values: tuple[str, ...], binder: _Binder
) -> str:
    """``("day", "channel") > ($1::text::date, $2::text::text)``: a row-value comparison of
    the key, which a btree index on it answers directly."""
    key = [dataset.by_name[k] for k in dataset.key]
    left = ", ".join(f"_t.{ident(k.name)}" for k in key)
    right = ", ".join(binder.bind(v, k.type.sql) for k, v in zip(key, values, strict=True))
    return f"({left}) {comparison} ({right})" if len(key) > 1 else f"{left} {comparison} {right}"


def _and(where: str, condition: str) -> str:
    """``where`` (``_where``'s, maybe empty) with ``condition`` added."""
    return f"{where} AND {condition}" if where else f" WHERE {condition}"


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _order(dataset: Dataset) -> str:
    """``ORDER BY`` the key's columns, qualified: a bare name in ``ORDER BY`` means the
    output column of that name first, and a format's rendering of the column (``::text``,
    a ``CASE``) would sort differently and without the key's index."""
    if not dataset.key:
        return ""
    return f" ORDER BY {', '.join(f'_t.{ident(k)}' for k in dataset.key)}"


def select(
    dataset: Dataset, selection: Selection, expression: str, *, as_settings: bool = False
) -> Query:
    """``SELECT expression FROM source WHERE … ORDER BY key LIMIT $n``; ``as_settings``: the
    values as settings instead of parameters (``_SettingsBinder``)."""
    binder = (_SettingsBinder if as_settings else _Binder)(selection.params)
    where = _where(dataset, selection, binder)
    limit = binder.bind(selection.limit)
    sql = f"SELECT {expression} FROM {dataset.source} AS _t{where}{_order(dataset)} LIMIT {limit}"
    return Query(sql, tuple(binder.args))


def json_key(position: int, name: str) -> str:
    """The text before a row's value of ``name`` in its JSON object: ``{"id":`` for the
    first column, ``,"name":`` for the others (PostgreSQL's rendering and ``render.c``'s)."""
    return ("{" if position == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":"


def json_object_sql(dataset: Dataset, fields: tuple[str, ...]) -> str:
    """A SQL expression rendering one row of ``fields`` as compact JSON text."""
    parts = []
    for i, name in enumerate(fields):
        column = dataset.by_name[name]
        parts.append(literal(json_key(i, name)))
        parts.append(pgtypes.json_sql(ident(name), column.type, column.nullable))
    parts.append("'}'")
    return " || ".join(parts)


def as_json(dataset: Dataset, selection: Selection) -> Query:
    """One JSON text per row (NDJSON, JSON array, the standard route)."""
    return select(dataset, selection, json_object_sql(dataset, selection.fields))


def as_columns(dataset: Dataset, selection: Selection) -> Query:
    """The selected columns as they are (for the planner's estimate)."""
    return select(dataset, selection, ", ".join(map(ident, selection.fields)))


def _columns(
    dataset: Dataset,
    selection: Selection,
    render: Callable[[str, Any], str],
    *,
    as_settings: bool = False,
    name: Callable[[str], str] = lambda field: field,
) -> Query:
    """The selected columns, each rendered by ``render(quoted name, type)`` and named
    ``name(field)``."""
    return select(
        dataset,
        selection,
        ", ".join(
            f"{render(ident(f), dataset.by_name[f].type)} AS {ident(name(f))}"
            for f in selection.fields
        ),
        as_settings=as_settings,
    )


def as_csv(dataset: Dataset, selection: Selection) -> Query:
    """For ``COPY (…) TO STDOUT (FORMAT csv, HEADER)``: the header names the columns
    (spreadsheet-safe ones, and cells, with ``selection.csv_safe``)."""
    if selection.csv_safe:
        return _columns(
            dataset,
            selection,
            lambda c, t: pgtypes.csv_safe_sql(pgtypes.csv_sql(c, t), t),
            name=pgtypes.csv_safe_name,
        )
    return _columns(dataset, selection, pgtypes.csv_sql)


def as_arrow(dataset: Dataset, selection: Selection) -> Query:
    """The selected columns, typed for ``encoders.ArrowEncoder`` (see ``pgtypes``)."""
    return _columns(dataset, selection, pgtypes.arrow_sql)


def as_copy_text(dataset: Dataset, selection: Selection) -> Query:
    """The selected columns for ``COPY … (FORMAT csv)`` parsed by Arrow's CSV reader
    (``encoders.ArrowFromCSV``): PostgreSQL's own text of each value, the cheapest it
    writes (booleans ``t``/``f``, ISO dates and times in UTC); the columns Arrow carries
    as text are cast as the cursor path casts them (``inet``'s ``::text`` keeps its mask)."""
    return _columns(
        dataset,
        selection,
        lambda c, t: pgtypes.arrow_guard(c, t, c),
    )


def as_binary(dataset: Dataset, selection: Selection) -> Query:
    """The selected columns for the ADBC driver's binary ``COPY`` (``adbc.py``,
    ``pgtypes.binary_sql``): a statement without parameters, its values in settings
    (``_SettingsBinder``; ``Query.args`` says which)."""
    return _columns(dataset, selection, pgtypes.binary_sql, as_settings=True)


def count(dataset: Dataset, selection: Selection) -> Query:
    """Rows matching the selection, at most ``limit``: a plain ``count(*)`` needs no
    ordering, so PostgreSQL may use any scan, and with a limit it stops at that many rows
    (an exact count of ``limit=2000`` on a table of millions reads 2,000)."""
    binder = _Binder(selection.params)
    where = _where(dataset, selection, binder)  # the limit is not a condition
    if selection.limit is None:
        return Query(f"SELECT count(*) FROM {dataset.source} AS _t{where}", tuple(binder.args))
    limit = binder.bind(selection.limit)
    inner = f"SELECT 1 FROM {dataset.source} AS _t{where} LIMIT {limit}"
    return Query(f"SELECT count(*) FROM ({inner}) AS _c", tuple(binder.args))


#: ``COPY`` options under which each row of ``as_json`` comes out as its JSON text plus
#: ``\\n``, unescaped: CSV quoting triggers only on the delimiter, the quote character or
#: a line break, and JSON text (as rendered, see ``pgtypes.json_sql``) holds none raw.
JSON_LINES_COPY: dict[str, Any] = {"format": "csv", "quote": "\x01", "delimiter": "\x02"}
CSV_COPY: dict[str, Any] = {"format": "csv", "header": True}
COPY_TEXT: dict[str, Any] = {"format": "csv"}


# --- a partitioned export's key ranges (``partitions.py``) ---------------------------------


def _key_texts(dataset: Dataset) -> str:
    return ", ".join(f"_t.{ident(k)}::text" for k in dataset.key)


def histogram_within(dataset: Dataset, selection: Selection) -> Query:
    """The planner's histogram bounds of the table's first key column (``pg_stats``, from
    ``ANALYZE``'s sample: equal numbers of the table's rows between neighbours) that lie
    inside the selection's range of that column (its min and max, read through the key's
    index), in order; no row when the table has none (never analysed, hidden by row
    security, or a column of so few values that its statistics list them instead)."""
    binder = _Binder(selection.params)
    where = _where(dataset, selection, binder)
    first = dataset.by_name[dataset.key[0]]
    column = binder.bind(first.name)
    k = f"_t.{ident(first.name)}"
    sql = (
        f"WITH h AS (SELECT s.histogram_bounds::text::{first.type.sql}[] AS b FROM pg_stats s "
        "JOIN pg_namespace n ON n.nspname = s.schemaname "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename "
        f"WHERE c.oid = {literal(dataset.source)}::regclass AND s.attname = {column} "
        # a table with children has two rows: the one of the whole tree is what it reads
        "AND s.histogram_bounds IS NOT NULL ORDER BY s.inherited DESC LIMIT 1), "
        f"r AS (SELECT min({k}) AS lo, max({k}) AS hi FROM {dataset.source} AS _t{where}) "
        # in the histogram's own order, which is the column's (its collation's): sorting
        # the array's elements would use the default collation
        "SELECT u.v::text AS bound FROM h, r, unnest(h.b) WITH ORDINALITY AS u(v, n) "
        "WHERE u.v > r.lo AND u.v <= r.hi ORDER BY u.n"
    )
    return Query(sql, tuple(binder.args))


def last_key_below(dataset: Dataset, selection: Selection, value: str) -> Query:
    """The key (as text) of the selection's last row whose first key column is below
    ``value``: a part's inclusive upper bound, a real row's key (an index scan backwards)."""
    binder = _Binder(selection.params)
    where = _where(dataset, selection, binder)
    first = dataset.by_name[dataset.key[0]]
    below = f"_t.{ident(first.name)} < {binder.bind(value, first.type.sql)}"
    where = _and(where, below)
    order = ", ".join(f"_t.{ident(k)} DESC" for k in dataset.key)
    sql = f"SELECT {_key_texts(dataset)} FROM {dataset.source} AS _t{where} ORDER BY {order}"
    return Query(f"{sql} LIMIT 1", tuple(binder.args))


def sampled_keys(dataset: Dataset, selection: Selection, percent: float) -> Query:
    """The keys (as text), in key order, of the selection's rows on a random ``percent``
    of the table's pages (``TABLESAMPLE SYSTEM``): read in the export's snapshot, so each
    is the key of a real row of it."""
    binder = _Binder(selection.params)
    where = _where(dataset, selection, binder)
    sample = binder.bind(str(percent), "real")
    keys = ", ".join(f"_t.{ident(k)}" for k in dataset.key)
    sql = (
        f"SELECT {_key_texts(dataset)} FROM {dataset.source} AS _t "
        f"TABLESAMPLE SYSTEM ({sample}){where} ORDER BY {keys}"
    )
    return Query(sql, tuple(binder.args))


def null_keys(dataset: Dataset, selection: Selection) -> Query:
    """Whether a row of the selection has a NULL in its key (it would be in no range)."""
    binder = _Binder(selection.params)
    where = _where(dataset, selection, binder)
    null = " OR ".join(f"_t.{ident(k)} IS NULL" for k in dataset.key)
    where = _and(where, f"({null})")
    sql = f"SELECT EXISTS (SELECT 1 FROM {dataset.source} AS _t{where})"
    return Query(sql, tuple(binder.args))


def keys_at(dataset: Dataset, selection: Selection, positions: list[int]) -> Query:
    """The keys (as text) of the selection's rows at ``positions`` (1-based) in key order:
    one ordered pass over the selection's keys, for a source that cannot be sampled (a
    view, a saved query) or a sample too small to split."""
    binder = _Binder(selection.params)
    where = _where(dataset, selection, binder)
    keys = ", ".join(f"_t.{ident(k)}" for k in dataset.key)
    inner = (
        f"SELECT {_key_texts(dataset)}, row_number() OVER (ORDER BY {keys}) AS _rn "
        f"FROM {dataset.source} AS _t{where}"
    )
    wanted = binder.bind([str(p) for p in positions])
    sql = f"SELECT * FROM ({inner}) AS _p WHERE _rn = ANY({wanted}::text[]::bigint[]) ORDER BY _rn"
    return Query(sql, tuple(binder.args))
