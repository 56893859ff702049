"""The deterministic demo data: row i of N is a pure function of i.

Benchmarks and checks elsewhere rely on exactly these values. Generated inside PostgreSQL
with ``generate_series`` (no rows cross the wire); 64-bit arithmetic throughout because
``i * 104729`` overflows a 32-bit integer past i = 20,505.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from app import migrate
from app.settings import Settings

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


def install_demo(settings: Settings, url: str, rows: int) -> None:
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
    migrate.upgrade(url)
    print(asyncio.run(seed_url(url, rows, only_if_empty=True)), flush=True)
