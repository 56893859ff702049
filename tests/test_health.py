import asyncio
import time
from typing import Any

import asyncpg
import httpx

from tests.support import execute, free_port, run, start_server, stop_server


def test_healthz_needs_no_token(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_datasets_and_pool(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["datasets"] == 1
    assert set(body["pool"]) == {"size", "idle", "in_use"}


def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    # Nothing listens on this port: the service must still start, and say it is not ready.
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    server = start_server(url, bare=True)
    try:
        response = httpx.get(f"{server.base_url}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"]
        assert "database" in response.json()["detail"]
        # and a data route says 503 too, not 500, and does not hang
        data = httpx.get(f"{server.base_url}/chunked", headers=server.headers(), timeout=10)
        assert data.status_code == 503
        assert data.headers["content-type"] == "application/problem+json"
    finally:
        stop_server(server)


def test_readyz_is_503_naming_a_dataset_that_became_unreadable(fresh_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database("rowstream_vanishing")
    run(execute(url, "CREATE TABLE t (id int PRIMARY KEY)"))
    (tmp_path / "datasets.toml").write_text('[datasets.t]\ntable = "t"\n')
    server = start_server(
        url, DATASETS_FILE=str(tmp_path / "datasets.toml"), READINESS_CACHE_SECONDS="0"
    )
    try:
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
        run(execute(url, "DROP TABLE t"))
        response = httpx.get(f"{server.base_url}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "dataset 't' is not readable" in response.json()["detail"]
    finally:
        stop_server(server)


async def _lock_waiters(url: str) -> int:
    """Sessions of ``url``'s database waiting for a lock now."""
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return count
    finally:
        await conn.close()


async def _readyz_while_locked(base_url: str, url: str, table: str) -> tuple[list[Any], int]:
    """Five concurrent /readyz while another session holds ``table`` ACCESS EXCLUSIVE (the
    lock a data request waits behind): their answers, and the most sessions seen waiting
    for a lock meanwhile."""
    locker = await asyncpg.connect(url)
    try:
        async with locker.transaction():
            await locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            most = 0

            async def watch() -> None:
                nonlocal most
                while True:
                    most = max(most, await _lock_waiters(url))
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            try:
                async with httpx.AsyncClient(base_url=base_url, timeout=15) as client:
                    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(5)))
            finally:
                watcher.cancel()
            return [(r.status_code, r.headers, r.json()) for r in answers], most
    finally:
        await locker.close()  # ends the transaction, so releases the lock, whatever happened


def test_readyz_is_503_naming_a_dataset_stuck_behind_a_lock(fresh_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Data requests wait behind an ACCESS EXCLUSIVE lock (a migration's ALTER TABLE, a
    VACUUM FULL): /readyz says so within its bound instead of waiting with them, its one
    probe at a time leaves no session waiting, and once the lock goes it is ready again."""
    url = fresh_database("rowstream_locked")
    tables = ("free", "t", "behind")
    run(execute(url, *(f"CREATE TABLE {t} (id int PRIMARY KEY)" for t in tables)))
    (tmp_path / "datasets.toml").write_text(
        '[datasets.free]\ntable = "free"\n\n[datasets.t]\ntable = "t"\n\n'
        '[datasets.q]\nquery = "SELECT id FROM behind WHERE id > :n"\nparams = { n = "integer" }\n'
    )
    server = start_server(
        url, DATASETS_FILE=str(tmp_path / "datasets.toml"), READINESS_CACHE_SECONDS="0"
    )
    try:
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
        started = time.monotonic()
        answers, most_waiting = run(_readyz_while_locked(server.base_url, url, "t"))
        elapsed = time.monotonic() - started
        for status, headers, body in answers:
            assert status == 503, body
            assert headers["content-type"] == "application/problem+json"
            assert headers["retry-after"]
            assert body["detail"].startswith("dataset 't' is stuck"), body
            assert "lock" in body["detail"]
        assert elapsed < 5, elapsed
        assert most_waiting == 1, "one probe at a time, however many callers"
        assert run(_lock_waiters(url)) == 0
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
        # a saved query, planned only with its parameters, is probed all the same
        answers, _ = run(_readyz_while_locked(server.base_url, url, "behind"))
        assert {a[2]["detail"].split(":")[0] for a in answers} == {"dataset 'q' is stuck"}
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
    finally:
        stop_server(server)


def test_docs_work_offline_every_asset_is_local_and_answers(client: httpx.Client) -> None:
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", page.text)
    assert urls, page.text
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls)
