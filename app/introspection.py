"""Introspection: a declared dataset described from PostgreSQL's catalog (PostgREST's
schema cache), once, when the service starts.

``pg_catalog`` gives a table's or view's columns, their types and nullability, and its key;
a saved query is described by preparing it (its ``:name`` parameters bound, never
spliced), which reads nothing. The result is a ``datasets.Dataset``.
"""

from __future__ import annotations

import re
from typing import Literal

import asyncpg

from app import pgtypes
from app.datasets import (
    Column,
    ConfigError,
    Dataset,
    DatasetConfig,
    DatasetsFile,
    Param,
    RowFilter,
)
from app.pgtypes import PgType
from app.quoting import ident

_RELATION = """
SELECT c.oid, c.relkind::text, has_table_privilege(c.oid, 'SELECT') AS readable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2
"""
_COLUMNS = """
SELECT attname, atttypid, atttypmod, attnotnull FROM pg_attribute
WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum
"""
#: Unique, non-partial, expression-free indexes: (is primary, column names in order).
_UNIQUE = """
SELECT i.indisprimary, array_agg(a.attname ORDER BY k.ord) AS columns
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid, i.indisprimary ORDER BY i.indisprimary DESC
"""
#: A type (a domain's base type for a domain), and its array element's.
_TYPES = """
SELECT t.oid, b.typname, format_type(b.oid, NULL) AS sql, b.typtype::text, b.typcategory::text,
       b.typelem, format_type(t.oid, m.typmod) AS display, m.typmod
FROM unnest($1::oid[], $2::int4[]) AS m(oid, typmod)
JOIN pg_type t ON t.oid = m.oid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
"""


#: The oids of a saved query's parameter types, named as in the file, in order.
_PARAM_TYPES = (
    "SELECT name::regtype::oid FROM unnest($1::text[]) WITH ORDINALITY AS u(name, n) ORDER BY n"
)


async def _types(conn: asyncpg.Connection, wanted: list[tuple[int, int]]) -> list[PgType]:
    """The ``PgType`` of each (type oid, typmod): one query, and one more for the element
    types of all the arrays among them."""
    rows = await conn.fetch(_TYPES, [o for o, _ in wanted], [m for _, m in wanted])
    found = {(r["oid"], r["typmod"]): r for r in rows}
    kinds = {
        key: pgtypes.kind_of(r["typname"], r["typtype"], r["typcategory"])
        for key, r in found.items()
    }
    arrays = sorted(
        {found[k]["typelem"] for k, kind in kinds.items() if kind is pgtypes.Kind.ARRAY}
    )
    elements = (
        dict(zip(arrays, await _types(conn, [(e, -1) for e in arrays]), strict=True))
        if arrays
        else {}
    )
    out: list[PgType] = []
    for oid, typmod in wanted:
        r = found[(oid, typmod)]
        kind = kinds[(oid, typmod)]
        element = elements.get(r["typelem"]) if kind is pgtypes.Kind.ARRAY else None
        precision, scale = (None, None)
        if kind is pgtypes.Kind.NUMERIC:
            precision, scale = pgtypes.numeric_modifier(typmod)
        out.append(PgType(r["typname"], r["sql"], r["display"], kind, precision, scale, element))
    return out


async def _table(
    conn: asyncpg.Connection, name: str, config: DatasetConfig
) -> tuple[str, Literal["table", "view"], list[Column], tuple[str, ...] | None]:
    assert config.table is not None
    shown = f"{config.schema_}.{config.table}"
    relation = await conn.fetchrow(_RELATION, config.schema_, config.table)
    if relation is None:
        raise ConfigError(f"dataset {name!r}: no table or view {shown!r} in the database")
    if not relation["readable"]:
        raise ConfigError(f"dataset {name!r}: this database user may not SELECT from {shown!r}")
    kind: Literal["table", "view"] = "table" if relation["relkind"] in ("r", "p") else "view"
    rows = await conn.fetch(_COLUMNS, relation["oid"])
    types = await _types(conn, [(r["atttypid"], r["atttypmod"]) for r in rows])
    columns = [
        Column(r["attname"], t, not r["attnotnull"]) for r, t in zip(rows, types, strict=True)
    ]
    key: tuple[str, ...] | None = None
    if kind == "table":
        unique = await conn.fetch(_UNIQUE, relation["oid"])
        notnull = {c.name for c in columns if not c.nullable}
        candidates = [tuple(u["columns"]) for u in unique if set(u["columns"]) <= notnull]
        if config.key is None:
            primary = [tuple(u["columns"]) for u in unique if u["indisprimary"]]
            key = primary[0] if primary else None
            if key is None:
                raise ConfigError(
                    f"dataset {name!r}: table {shown!r} has no primary key; declare 'key' "
                    "(NOT NULL columns with a unique index)"
                )
        elif not any(set(c) == set(config.key) for c in candidates):
            raise ConfigError(
                f"dataset {name!r}: key {config.key} is not unique: it must be NOT NULL "
                f"columns forming the primary key or a unique index of {shown!r}"
            )
    source = f"{ident(config.schema_)}.{ident(config.table)}"
    return source, kind, columns, key


_PLACEHOLDER = re.compile(
    r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$(\w*)\$.*?\$\2\$|::)"""
    r"""|(?<![\w:]):([A-Za-z_]\w*)""",
    re.DOTALL,
)


def bind_placeholders(query: str, params: dict[str, str]) -> str:
    """``… >= :since`` → ``… >= ($1::text::date)``, parameters numbered in ``params``'
    order. String literals, quoted identifiers, comments, dollar quotes and ``::`` casts
    are left alone. (A scanner of our own: SQLAlchemy's ``text()`` rewrites inside
    string literals and comments too.)"""
    numbers = {name: i for i, name in enumerate(params, start=1)}
    unknown: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(3)
        if name is None:
            return match.group(0)
        if name not in numbers:
            unknown.append(name)
            return match.group(0)
        return f"(${numbers[name]}::text::{params[name]})"

    sql = _PLACEHOLDER.sub(replace, query)
    if unknown:
        raise ConfigError(f"parameter(s) {', '.join(map(repr, unknown))} not in 'params'")
    return sql


async def _query(
    conn: asyncpg.Connection, name: str, config: DatasetConfig
) -> tuple[str, list[Column], list[Param]]:
    assert config.query is not None
    try:
        sql = bind_placeholders(config.query.strip().rstrip(";"), config.params)
    except ConfigError as exc:
        raise ConfigError(f"dataset {name!r}, key 'query': {exc}") from None
    try:
        param_oids = await conn.fetch(_PARAM_TYPES, list(config.params.values()))
        param_types = await _types(conn, [(r[0], -1) for r in param_oids])
        statement = await conn.prepare(sql)
    except asyncpg.PostgresError as exc:
        raise ConfigError(f"dataset {name!r}, key 'query': {exc}") from None
    attributes = statement.get_attributes()
    names = [a.name for a in attributes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"dataset {name!r}: the query returns {duplicates} more than once")
    _pick(name, "types", list(config.types), names)
    wanted = [(a.type.oid, -1) for a in attributes]
    for i, column in enumerate(names):
        if column in config.types:
            wanted[i] = await _declared_type(conn, name, column, config.types[column])
    types = await _types(conn, wanted)
    columns = [Column(a.name, t, True) for a, t in zip(attributes, types, strict=True)]
    params = [Param(p, t) for p, t in zip(config.params, param_types, strict=True)]
    if not config.types:
        return f"({sql})", columns, params
    cast = [
        f"{ident(c.name)}::{c.type.display} AS {ident(c.name)}"
        if c.name in config.types
        else ident(c.name)
        for c in columns
    ]
    typed = f"SELECT {', '.join(cast)} FROM ({sql}) AS _q"
    try:
        await conn.prepare(typed)  # a cast PostgreSQL refuses (a date as numeric) fails here
    except asyncpg.PostgresError as exc:
        raise ConfigError(f"dataset {name!r}, key 'types': {exc}") from None
    return f"({typed})", columns, params


#: A declared type: a name (``timestamptz``, ``double precision``, ``public.mood``) and,
#: for a numeric, its precision and scale.
_DECLARED_TYPE = re.compile(r"^\s*([A-Za-z_][\w. ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")


async def _declared_type(
    conn: asyncpg.Connection, name: str, column: str, text: str
) -> tuple[int, int]:
    """The (oid, typmod) of a type declared in ``types``; PostgreSQL resolves the name
    and renders the cast (``format_type``), so nothing of the file reaches SQL as it is."""
    where = f"dataset {name!r}, key 'types', column {column!r}"
    match = _DECLARED_TYPE.match(text)
    if match is None:
        raise ConfigError(f'{where}: {text[:60]!r} is not a type (e.g. "numeric(10,2)")')
    try:
        oid = await conn.fetchval("SELECT to_regtype($1)::oid", match[1])
    except asyncpg.PostgresError:
        oid = None
    if oid is None:
        raise ConfigError(f"{where}: no type {match[1]!r} in the database")
    if match[2] is None:
        return oid, -1
    precision, scale = int(match[2]), int(match[3] or 0)
    if oid != pgtypes.NUMERIC_OID or not 1 <= precision <= 1000 or not 0 <= scale <= precision:
        raise ConfigError(
            f"{where}: {text!r}: only numeric takes (precision, scale) here, "
            "with 1 <= precision <= 1000 and 0 <= scale <= precision"
        )
    return oid, pgtypes.numeric_typmod(precision, scale)


def _pick(name: str, key: str, wanted: list[str], available: list[str]) -> None:
    missing = [w for w in wanted if w not in available]
    if missing:
        raise ConfigError(
            f"dataset {name!r}, key {key!r}: no column {missing[0]!r} "
            f"(columns: {', '.join(available)})"
        )


async def describe(conn: asyncpg.Connection, name: str, config: DatasetConfig) -> Dataset:
    """Read one dataset's description from the catalog; ``ConfigError`` if it is wrong."""
    params: list[Param] = []
    kind: Literal["table", "view", "query"]
    if config.table is not None:
        source, kind, columns, key = await _table(conn, name, config)
    else:
        source, columns, params = await _query(conn, name, config)
        kind, key = "query", None
    available = [c.name for c in columns]
    for option in ("columns", "exclude", "key", "filters", "row_filter"):
        _pick(name, option, list(getattr(config, option) or []), available)
    if config.key is not None:
        key = tuple(config.key)
    elif kind == "view":
        raise ConfigError(f"dataset {name!r}: a view needs 'key' (columns that identify a row)")
    chosen = config.columns or available
    exposed = [c for c in columns if c.name in chosen and c.name not in config.exclude]
    exposed.sort(key=lambda c: chosen.index(c.name))
    exposed_names = [c.name for c in exposed]
    if key:
        _pick(name, "key", list(key), exposed_names)
    filters = config.filters if config.filters is not None else exposed_names
    _pick(name, "filters", filters, exposed_names)
    return Dataset(
        name=name,
        kind=kind,
        source=source,
        columns=tuple(exposed),
        key=key or (),
        filters=tuple(filters),
        params=tuple(params),
        description=config.description,
        roles=tuple(config.roles or ()),
        row_filter=tuple(
            RowFilter(c.name, c.type, config.row_filter[c.name].removeprefix("claim:"))
            for c in columns
            if c.name in config.row_filter
        ),
    )


async def describe_all(conn: asyncpg.Connection, config: DatasetsFile) -> dict[str, Dataset]:
    """Every declared dataset, in the file's order, read in one read-only transaction."""
    async with conn.transaction(readonly=True):
        return {name: await describe(conn, name, c) for name, c in config.datasets.items()}
