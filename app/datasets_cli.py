"""``rowstream datasets``: what is declared, as the database describes it; and
``rowstream datasets init``: a ``datasets.toml`` declaring every table of a schema, the
first step against one's own database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from app import database, datasets, demo, introspection
from app.datasets import ConfigError, Dataset, DatasetsFile
from app.settings import Settings


def load_config(settings: Settings) -> DatasetsFile:
    return demo.declared(settings.resolved_datasets_file())


async def _describe(url: str, config: DatasetsFile) -> dict[str, Dataset]:
    # no named statements: the URL may point at PgBouncer in transaction mode
    conn = await asyncpg.connect(url, statement_cache_size=0)
    try:
        return await introspection.describe_all(conn, config)
    finally:
        await conn.close()


def check(settings: Settings, config: DatasetsFile, url: str) -> dict[str, Dataset]:
    """Describe every dataset, or raise one line saying what is wrong (and, for a new
    user with no file, what to do)."""
    try:
        return asyncio.run(_describe(url, config))
    except ConfigError as exc:
        if config is demo.DECLARATION and "no table or view" in str(exc):
            raise ConfigError(
                "no datasets.toml here, and this database has no demo table 'messages': run "
                "'rowstream datasets init' to declare your tables (or set DATASETS_FILE); "
                "'rowstream migrate' and 'rowstream seed' install the demo"
            ) from None
        raise ConfigError(f"{settings.resolved_datasets_file()}: {exc}") from None


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    config = load_config(settings)
    with database.database_url(settings) as url:
        described = check(settings, config, url)
    for name, dataset in described.items():
        key = ", ".join(dataset.key) if dataset.key else "none (not resumable)"
        print(f"{name}  ({dataset.kind}; key: {key})")
        for column in dataset.columns:
            null = "" if column.nullable else " not null"
            filterable = "" if column.name in dataset.filters else "  (not filterable)"
            print(f"  {column.name}  {column.type.display}{null}{filterable}")
        for param in dataset.params:
            print(f"  :{param.name}  {param.type.display}  (query parameter)")


#: The schema's tables, views and materialized views, each with a key where one is known
#: a table's primary key; a view over one table that shows all of that table's primary key
#: columns under their names (inferred: the file says to check it); a materialized view's
#: unique index, only suggested (its columns may hold NULLs, which a key may not).
_RELATIONS = """
WITH rel AS (
  SELECT c.oid, c.relname, c.relkind::text AS relkind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
), unique_keys AS (
  SELECT i.indrelid, i.indisprimary, array_agg(a.attname ORDER BY k.ord) AS columns,
         bool_and(a.attnotnull) AS notnull
  FROM pg_index i
  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
  WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
  GROUP BY i.indexrelid, i.indrelid, i.indisprimary
), view_base AS (
  SELECT r.ev_class AS view, array_agg(DISTINCT d.refobjid) AS bases
  FROM pg_rewrite r JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass
  WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
  GROUP BY r.ev_class
)
SELECT rel.relname, rel.relkind,
  CASE rel.relkind
    WHEN 'v' THEN (
      SELECT u.columns FROM view_base vb JOIN unique_keys u ON u.indrelid = vb.bases[1]
      WHERE vb.view = rel.oid AND cardinality(vb.bases) = 1 AND u.indisprimary
        AND u.columns <@ (SELECT array_agg(attname) FROM pg_attribute
                          WHERE attrelid = rel.oid AND attnum > 0 AND NOT attisdropped))
    WHEN 'm' THEN (SELECT u.columns FROM unique_keys u WHERE u.indrelid = rel.oid LIMIT 1)
    ELSE (SELECT u.columns FROM unique_keys u WHERE u.indrelid = rel.oid AND u.indisprimary)
  END AS key,
  (SELECT b.relname FROM view_base vb JOIN pg_class b ON b.oid = vb.bases[1]
   WHERE vb.view = rel.oid AND cardinality(vb.bases) = 1) AS base
FROM rel ORDER BY rel.relname
"""


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # JSON's escapes are valid in TOML


@dataclass(frozen=True)
class Relation:
    """A table, view or materialized view of the schema, and its key if one is known."""

    name: str
    kind: str  # pg_class.relkind: r, p (tables), v (view), m (materialized view)
    key: list[str] | None = None
    #: The one table a view reads, when its key was inferred from that table's.
    base: str | None = None


def render(schema: str, relations: list[Relation]) -> str:
    """The TOML text declaring ``relations`` of ``schema``: each with a key served, each
    without one commented out, saying what to add."""
    lines = [
        f"# Datasets of schema {schema!r}, written by 'rowstream datasets init'.",
        "# Each is served at /datasets/<name> and /datasets/<name>/stream.",
        "# Options: key, columns, exclude, filters, description (see the README).",
        "",
    ]
    used: set[str] = set()
    for relation in relations:
        name = re.sub(r"[^\w-]", "_", relation.name)[:63] or "table"
        base, n = name, 2
        while name in used:
            name, n = f"{base[:60]}_{n}", n + 1
        used.add(name)
        view = relation.kind in ("v", "m")
        # a view's key is never served unchecked: inferred from names, it is a suggestion
        served = bool(relation.key) and not view
        comment = "" if served else "# "
        if relation.kind == "m" and relation.key:
            lines.append(
                f"# {relation.name!r} is a materialized view with a unique index on "
                f"{', '.join(relation.key)}: if those columns hold no NULL, uncomment to "
                "serve it with that key"
            )
        elif not relation.key:
            what = "a view" if view else "a table with no primary key"
            lines.append(
                f"# {relation.name!r} is {what}: declare key = [...] (columns unique in it, "
                "NOT NULL) and uncomment, so its rows have an order to resume in"
            )
        elif relation.kind == "v" and relation.key:
            lines.append(
                f"# {relation.name!r} is a view showing {relation.base!r}'s primary key "
                f"({', '.join(relation.key)}) by name: if it is that key, unique in the view "
                "(no join or set-returning function repeats rows), uncomment to serve it"
            )
        lines.append(f"{comment}[datasets.{_toml_string(name)}]")
        lines.append(f"{comment}table = {_toml_string(relation.name)}")
        if schema != "public":
            lines.append(f"{comment}schema = {_toml_string(schema)}")
        if view and relation.key:
            keys = ", ".join(_toml_string(k) for k in relation.key)
            lines.append(f"{comment}key = [{keys}]")
        lines.append("")
    return "\n".join(lines)


async def _relations(url: str, schema: str) -> list[Relation]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(_RELATIONS, schema)
        return [Relation(r["relname"], r["relkind"], r["key"], r["base"]) for r in rows]
    finally:
        await conn.close()


def cmd_init(args: argparse.Namespace, settings: Settings) -> None:
    output = Path(args.output)
    if output.exists() and not args.force:
        raise ConfigError(f"{output} exists; use --force to overwrite it")
    with database.database_url(settings) as url:
        relations = asyncio.run(_relations(url, args.schema))
        if not relations:
            raise ConfigError(f"schema {args.schema!r} has no tables or views")
        text = render(args.schema, relations)
        output.write_text(text, encoding="utf-8")
        declared = datasets.load(output)
        check(settings, declared, url)
    print(f"{output}: {len(declared.datasets)} dataset(s) declared, checked against the database")


def add_parser(sub: Any) -> None:
    d = sub.add_parser("datasets", help="list the declared datasets, or 'init' a datasets.toml")
    d.set_defaults(func=cmd_list)
    inner = d.add_subparsers(dest="datasets_command")
    i = inner.add_parser(
        "init", help="write a datasets.toml declaring every table and view of a schema"
    )
    i.add_argument("--schema", default="public")
    i.add_argument("-o", "--output", default="datasets.toml")
    i.add_argument("--force", action="store_true", help="overwrite an existing file")
    i.set_defaults(func=cmd_init)
