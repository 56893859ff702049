"""The cursor loop over a real uvicorn socket: batches arrive as separate chunks, and a
client that goes away leaves nothing behind in PostgreSQL or the pool."""

import json

import httpx
import pytest

from tests.support import SEED_ROWS, TEST_BATCH, Server

pytestmark = pytest.mark.anyio


def _raw(server: Server) -> dict[str, str]:
    """Headers for reading the wire bytes: no compression (httpx asks for it by default)."""
    return {**server.headers(), "Accept-Encoding": "identity"}


async def test_each_batch_arrives_as_its_own_chunk(server: Server) -> None:
    """The cursor's batches (the JSON array reads a cursor; NDJSON and CSV are rendered
    from binary COPY in 256 KiB pieces, tests/test_render.py)."""
    chunks: list[bytes] = []
    headers = {**_raw(server), "Accept": "application/json"}
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        client.stream("GET", "/messages/stream", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert "content-length" not in response.headers
        assert response.headers.get("transfer-encoding") == "chunked"
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
    assert len(json.loads(b"".join(chunks))) == SEED_ROWS
    assert len(chunks) >= SEED_ROWS // TEST_BATCH


async def test_first_chunk_comes_before_the_stream_ends(server: Server) -> None:
    """The cursor's first fetch is sent on its own (the JSON array reads a cursor)."""
    headers = {**_raw(server), "Accept": "application/json"}
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        client.stream("GET", "/chunked", headers=headers) as response,
    ):
        iterator = response.aiter_raw()
        first = await anext(iterator)
        assert first.count(b'{"id":') == TEST_BATCH  # the first fetch, and nothing more
        rest = 0
        async for chunk in iterator:
            rest += chunk.count(b'{"id":')
    assert rest == SEED_ROWS - TEST_BATCH


async def test_a_stream_transaction_is_read_only_repeatable_read_utc_with_a_backstop(
    db_url: str,
) -> None:
    from app import database, transaction
    from app.settings import Settings

    db = database.create(Settings(pool_max_size=2), db_url)
    await db.connect()
    try:
        async with transaction.snapshot(db, idle_timeout=42) as conn:
            assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
            assert await conn.fetchval("SHOW transaction_read_only") == "on"
            assert await conn.fetchval("SHOW TimeZone") == "UTC"
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "42s"
        async with transaction.snapshot(db) as conn:  # SET LOCAL: nothing leaked to the next user
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "0"
    finally:
        await database.close(db)
