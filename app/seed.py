"""The deterministic demo data: row i of N is a pure function of i.

Benchmarks and checks elsewhere rely on exactly these values. Generated inside PostgreSQL
with ``generate_series`` (no rows cross the wire); 64-bit arithmetic throughout because
``i * 104729`` overflows a 32-bit integer past i = 20,505.
"""

from __future__ import annotations

import asyncpg

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
