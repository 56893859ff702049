"""The cursor loop over a real uvicorn socket: batches arrive as separate chunks, and a
client that goes away leaves nothing behind in PostgreSQL or the pool."""

import asyncio
import socket
import time

import asyncpg
import httpx
import pytest

from tests.conftest import SEED_ROWS, TEST_BATCH, Server

pytestmark = pytest.mark.anyio


def _raw(server: Server) -> dict[str, str]:
    """Headers for reading the wire bytes: no compression (httpx asks for it by default)."""
    return {**server.headers(), "Accept-Encoding": "identity"}


async def test_each_batch_arrives_as_its_own_chunk(server: Server) -> None:
    chunks: list[bytes] = []
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        client.stream("GET", "/messages/stream", headers=_raw(server)) as response,
    ):
        assert response.status_code == 200
        assert "content-length" not in response.headers
        assert response.headers.get("transfer-encoding") == "chunked"
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
    body = b"".join(chunks)
    assert body.count(b"\n") == SEED_ROWS
    assert len(chunks) >= SEED_ROWS // TEST_BATCH


async def test_first_chunk_comes_before_the_stream_ends(server: Server) -> None:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        client.stream("GET", "/chunked", headers=_raw(server)) as response,
    ):
        iterator = response.aiter_raw()
        first = await anext(iterator)
        assert first.count(b"\n") == TEST_BATCH
        rest = 0
        async for chunk in iterator:
            rest += chunk.count(b"\n")
    assert rest == SEED_ROWS - TEST_BATCH


async def _sessions(database_url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT state, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return [(r["state"], r["query"]) for r in rows]
    finally:
        await conn.close()


async def _wait_until_quiet(database_url: str, seconds: float) -> list[tuple[str, str]]:
    deadline = time.monotonic() + seconds
    while True:
        busy = [s for s in await _sessions(database_url) if s[0] != "idle"]
        if not busy or time.monotonic() > deadline:
            return busy
        await asyncio.sleep(0.1)


def _abrupt_disconnect(server: Server, read_bytes: int) -> None:
    """Send a request, read a little of the stream, then reset the connection (RST)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        # A small receive window: the server fills it and blocks writing, mid-stream.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((host, int(port)))
        token = server.token()
        sock.sendall(
            f"GET /messages/stream HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        got = b""
        while len(got) < read_bytes:
            data = sock.recv(65536)
            assert data, "server closed early"
            got += data
        assert got.startswith(b"HTTP/1.1 200")
        time.sleep(0.05)  # let the server block on the full window
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


async def test_clients_that_vanish_leave_no_session_behind(server: Server) -> None:
    for _ in range(10):
        await asyncio.to_thread(_abrupt_disconnect, server, 2000)
    busy = await _wait_until_quiet(server.database_url, 2.0)
    assert busy == [], f"sessions left behind: {busy}"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        ready = (await client.get("/readyz")).json()
        assert ready["pool"]["in_use"] == 0, ready
        # and the service still answers normally
        response = await client.get("/chunked", params={"limit": 5}, headers=server.headers())
        assert response.text.count("\n") == 5


async def test_a_stream_transaction_is_read_only_repeatable_read_utc_with_a_backstop(
    db_url: str,
) -> None:
    from app import cursor, database
    from app.settings import Settings

    db = database.create(Settings(pool_max_size=2), db_url)
    await db.connect()
    try:
        async with cursor.snapshot(db, idle_timeout=42) as conn:
            assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
            assert await conn.fetchval("SHOW transaction_read_only") == "on"
            assert await conn.fetchval("SHOW TimeZone") == "UTC"
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "42s"
        async with cursor.snapshot(db) as conn:  # SET LOCAL: nothing leaked to the next user
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "0"
    finally:
        await database.close(db)
