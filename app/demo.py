"""The demo: the ``messages`` table of the original standard-versus-streaming comparison.

Everything the demo is lives here: its dataset declaration (served when there is no
``datasets.toml``), its historical URLs (``/messages``, ``/standard``, ``/messages/stream``,
``/chunked``) and parameter names (``after_id``…), its ``text`` format (the comparison's
``object_id:{id}`` lines), its deterministic seed and its install (``serve --demo``). The
service knows it only as a dataset like any other: the historical routes are the dataset
routes' own endpoints (``routes.py``) at other paths, added when ``messages`` is declared.

The seed: row i of N is a pure function of i, generated inside PostgreSQL with
``generate_series`` (no rows cross the wire); 64-bit arithmetic throughout because
``i * 104729`` overflows a 32-bit integer past i = 20,505. Benchmarks and tests rely on
exactly these values.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import APIRouter

from app import datasets, formats, routes, sql
from app.datasets import Dataset, DatasetConfig, DatasetsFile
from app.quoting import ident
from app.responses import PrebuiltJSONResponse, StreamingResponse
from app.settings import Settings
from rowstream.media import CSV, TEXT

NAME = "messages"

#: With no datasets file, the demo table is the one dataset, as the service has always served it.
DECLARATION = DatasetsFile(
    datasets={
        NAME: DatasetConfig(
            table="messages",
            description="The demo table: 500,000 generated messages (`make run` seeds it).",
        )
    }
)

#: The historical routes' parameter names and the filters they stand for.
HISTORICAL_NAMES = {
    "after_id": "id__gt",
    "min_id": "id__gte",
    "created_after": "created_at__gt",
    "created_before": "created_at__lt",
}


def declared(path: Path | None) -> DatasetsFile:
    """The declarations in the datasets file at ``path``, or the demo's when there is none."""
    return DECLARATION if path is None else datasets.load(path)


def key_lines(dataset: Dataset, selection: sql.Selection) -> sql.Query:
    """The original comparison's ``object_id:{id} \\n`` lines, for ``COPY … TO STDOUT``:
    the first key column of each row."""
    first = ident(dataset.key[0] if dataset.key else dataset.columns[0].name)
    return sql.select(dataset, selection, f"'object_id:' || {first} || ' '")


#: The ``text`` format: served by the historical stream routes only.
TEXT_FORMAT = formats.register(
    formats.Format(
        TEXT,
        "text",
        "copy",
        key_lines,
        formats.passthrough,
        formats.RowCounter.LINES,
        streamed=False,
        example=lambda row, schema: {
            "schema": {"type": "string"},
            "example": "object_id:1 \nobject_id:2 \n",
        },
        description="the original comparison's `object_id:{key} ` lines",
    )
)


def add_routes(router: APIRouter) -> None:
    """The historical URLs, as routes of the ``messages`` dataset."""
    standard = routes.standard_endpoint(NAME, HISTORICAL_NAMES)
    served = formats.streamed()
    after_csv = served.index(CSV) + 1 if CSV in served else len(served)
    streamed = (*served[:after_csv], TEXT, *served[after_csv:])  # its historical place
    stream = routes.stream_endpoint(NAME, HISTORICAL_NAMES, streamed, None)
    table: list[tuple[str, Any, str, tuple[str, ...], Any]] = [
        (
            "/messages",
            standard,
            "Messages, loaded then sent (standard)",
            formats.standard(),
            PrebuiltJSONResponse,
        ),
        ("/standard", standard, "Alias of /messages", formats.standard(), PrebuiltJSONResponse),
        (
            "/messages/stream",
            stream,
            "Messages, streamed from a server-side cursor",
            streamed,
            StreamingResponse,
        ),
        ("/chunked", stream, "Alias of /messages/stream", streamed, StreamingResponse),
    ]
    for path, endpoint, summary, media, response_class in table:
        routes.add_operation(
            router,
            path,
            endpoint,
            summary,
            f"{NAME} (demo)",
            NAME,
            media,
            HISTORICAL_NAMES,
            response_class,
        )


SEED_SQL = """
INSERT INTO messages (id, sender_id, recipient_id, channel, body, created_at, is_read)
SELECT i,
       ((i * 7919) % 10000)::integer,
       ((i * 104729) % 10000)::integer,
       (ARRAY['email', 'sms', 'push', 'chat'])[(i % 4) + 1],
       left(repeat(md5(i::text), 2), (40 + i % 80)::integer),
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',
       i % 3 = 0
FROM generate_series(1::bigint, $1::bigint) AS i
"""


async def seed(conn: asyncpg.Connection, rows: int) -> None:
    """Make ``messages`` hold exactly rows 1..``rows``: idempotent, whatever was there."""
    async with conn.transaction():
        # TRUNCATE + INSERT in one transaction: readers see the old rows or the new ones.
        await conn.execute("TRUNCATE messages")
        await conn.execute("SET LOCAL synchronous_commit = off")
        await conn.execute(SEED_SQL, rows)
    # Fresh statistics: the planner's row estimate (and index-only plans) depend on them.
    await conn.execute("VACUUM (ANALYZE) messages")


async def count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM messages"))


async def seed_url(url: str, rows: int, only_if_empty: bool) -> str:
    """Seed the database at ``url`` (``rowstream seed``, ``serve --demo``); what was done."""
    conn = await asyncpg.connect(url)
    try:
        if only_if_empty and await count(conn) > 0:
            return f"messages already holds {await count(conn)} rows; not seeding"
        started = time.perf_counter()
        await seed(conn, rows)
        return f"seeded {rows} rows in {time.perf_counter() - started:.1f} s"
    finally:
        await conn.close()


def install(settings: Settings, url: str, rows: int) -> None:
    """``serve --demo``: the demo table, migrated and seeded, in the embedded database only.

    A database given by ``DATABASE_URL`` is the user's: nothing is created there unless
    they ask with ``rowstream migrate`` and ``rowstream seed``.
    """
    if settings.database_url:
        print(
            "DATABASE_URL is set: the demo is not installed there (run 'rowstream migrate' "
            "and 'rowstream seed' to install it on purpose)",
            flush=True,
        )
        return
    from app import migrate  # Alembic: loaded by the install only, not by every server

    migrate.upgrade(url)
    print(asyncio.run(seed_url(url, rows, only_if_empty=True)), flush=True)
