"""``rowstream datasets``: what is declared, as the database describes it; and
``rowstream datasets init``: a ``datasets.toml`` declaring every table of a schema, the
first step against one's own database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path
from typing import Any

import asyncpg

from app import database, datasets, introspection
from app.datasets import BUILTIN, ConfigError, Dataset, DatasetsFile
from app.settings import Settings


def load_config(settings: Settings) -> DatasetsFile:
    return datasets.load(settings.resolved_datasets_file())


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
        if config is BUILTIN and "no table or view" in str(exc):
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


_TABLES = """
SELECT c.relname,
       (SELECT array_agg(a.attname ORDER BY k.ord)
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND i.indisprimary) AS key
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # JSON's escapes are valid in TOML


def render(schema: str, tables: list[tuple[str, list[str] | None]]) -> str:
    """The TOML text declaring ``tables`` of ``schema``."""
    lines = [
        f"# Datasets of schema {schema!r}, written by 'rowstream datasets init'.",
        "# Each table is served at /datasets/<name> and /datasets/<name>/stream.",
        "# Options: key, columns, exclude, filters, description (see the README).",
        "",
    ]
    used: set[str] = set()
    for table, key in tables:
        name = re.sub(r"[^\w-]", "_", table)[:63] or "table"
        base, n = name, 2
        while name in used:
            name, n = f"{base[:60]}_{n}", n + 1
        used.add(name)
        comment = "" if key else "# "
        if not key:
            lines.append(f"# {table!r} has no primary key: declare key = [...] (unique columns)")
        lines.append(f"{comment}[datasets.{_toml_string(name)}]")
        lines.append(f"{comment}table = {_toml_string(table)}")
        if schema != "public":
            lines.append(f"{comment}schema = {_toml_string(schema)}")
        lines.append("")
    return "\n".join(lines)


async def _tables(url: str, schema: str) -> list[tuple[str, list[str] | None]]:
    conn = await asyncpg.connect(url)
    try:
        return [(r["relname"], r["key"]) for r in await conn.fetch(_TABLES, schema)]
    finally:
        await conn.close()


def cmd_init(args: argparse.Namespace, settings: Settings) -> None:
    output = Path(args.output)
    if output.exists() and not args.force:
        raise ConfigError(f"{output} exists; use --force to overwrite it")
    with database.database_url(settings) as url:
        tables = asyncio.run(_tables(url, args.schema))
        if not tables:
            raise ConfigError(f"schema {args.schema!r} has no tables")
        text = render(args.schema, tables)
        output.write_text(text, encoding="utf-8")
        declared = datasets.load(output)
        check(settings, declared, url)
    print(f"{output}: {len(declared.datasets)} dataset(s) declared, checked against the database")


def add_parser(sub: Any) -> None:
    d = sub.add_parser("datasets", help="list the declared datasets, or 'init' a datasets.toml")
    d.set_defaults(func=cmd_list)
    inner = d.add_subparsers(dest="datasets_command")
    i = inner.add_parser("init", help="write a datasets.toml declaring every table of a schema")
    i.add_argument("--schema", default="public")
    i.add_argument("-o", "--output", default="datasets.toml")
    i.add_argument("--force", action="store_true", help="overwrite an existing file")
    i.set_defaults(func=cmd_init)
