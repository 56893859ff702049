import asyncpg
import pytest

from app import demo, migrate
from tests import expected

pytestmark = pytest.mark.anyio

SAMPLE = (1, 2, 3, 4, 79, 80, 20505, 20506, 49999, 50000)


async def _rows(url: str) -> dict[int, dict[str, object]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        records = await conn.fetch(
            "SELECT id, sender_id, recipient_id, channel, body, created_at, is_read "
            "FROM messages WHERE id = any($1::bigint[]) ORDER BY id",
            list(SAMPLE),
        )
        return {r["id"]: {**dict(r), "created_at": r["created_at"].isoformat()} for r in records}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def seed_url(fresh_database) -> str:  # type: ignore[no-untyped-def]
    url: str = fresh_database("rowstream_seed")
    migrate.upgrade(url)
    return url


async def _seed_and_count(url: str, rows: int) -> int:
    conn = await asyncpg.connect(url)
    try:
        await demo.seed(conn, rows)
        return await demo.count(conn)
    finally:
        await conn.close()


async def test_seed_matches_the_formula_including_past_32_bit_overflow(seed_url: str) -> None:
    assert await _seed_and_count(seed_url, 50_000) == 50_000
    got = await _rows(seed_url)
    assert got == {i: expected.row(i) for i in SAMPLE}
    # body length 40..64 as documented
    assert {len(str(got[i]["body"])) for i in SAMPLE} <= set(range(40, 65))


async def test_seed_is_idempotent_and_resizes(seed_url: str) -> None:
    assert await _seed_and_count(seed_url, 1_000) == 1_000
    assert await _seed_and_count(seed_url, 1_000) == 1_000
    conn = await asyncpg.connect(seed_url)
    try:
        assert await conn.fetchval("SELECT min(id) = 1 AND max(id) = 1000 FROM messages")
    finally:
        await conn.close()
