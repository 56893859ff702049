"""Through PgBouncer in transaction mode (``DATABASE_POOLER=transaction``): two rowstream
processes with concurrent streams, the same rows as a direct read, CSV via COPY, and
overload refused by rowstream rather than queued by PgBouncer. (``make test`` installs
Debian's pgbouncer where it is missing, as root.)"""

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from bench import pooler
from tests.support import Server, raw_request, reset, start_server, stop_server

ROWS = 20_000


@pytest.fixture(scope="module")
def bouncer_url(db_url: str) -> Iterator[str]:
    """PgBouncer 1.18 (transaction mode, the recommended settings) in front of the test database."""
    with pooler.running({"rowstream": db_url}, pool_size=40) as urls:
        yield urls["rowstream"]


@pytest.fixture(scope="module")
def instances(bouncer_url: str) -> Iterator[list[Server]]:
    env = {
        "DATABASE_POOLER": "transaction",
        "STREAM_CAPACITY": "12",
        "STREAM_PER_SUBJECT": "12",
        "POOL_MAX_SIZE": "16",
        "STREAM_BATCH_SIZE": "500",
    }
    servers = [start_server(bouncer_url, **env) for _ in range(2)]
    try:
        yield servers
    finally:
        for s in servers:
            stop_server(s)


async def _streams(servers: list[Server], per_instance: int, fmt: str) -> list[bytes]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as c:

        async def one(server: Server, i: int) -> bytes:
            r = await c.get(
                f"{server.base_url}/messages/stream",
                params={"limit": ROWS, "format": fmt},
                headers={**server.headers(f"client{i}"), "Accept-Encoding": "identity"},
            )
            assert r.status_code == 200, r.text
            return r.content

        return list(
            await asyncio.gather(*(one(s, i) for s in servers for i in range(per_instance)))
        )


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_two_instances_times_ten_streams_through_pgbouncer_match_a_direct_read(
    instances: list[Server], server: Server, fmt: str
) -> None:
    direct = httpx.get(
        f"{server.base_url}/messages/stream",
        params={"limit": ROWS, "format": fmt},
        headers={**server.headers(), "Accept-Encoding": "identity"},
        timeout=60,
    )
    for _wave in range(3):  # server connections get reused across clients between waves
        bodies = asyncio.run(_streams(instances, 10, fmt))
        assert len(bodies) == 20
        assert all(body == direct.content for body in bodies)


def test_more_streams_than_capacity_get_503_from_rowstream_not_a_pgbouncer_wait(
    bouncer_url: str,
) -> None:
    s = start_server(
        bouncer_url,
        DATABASE_POOLER="transaction",
        STREAM_CAPACITY="2",
        STREAM_BATCH_SIZE="10",
        STREAM_ADMISSION_WAIT="0.2",
    )
    held = [
        raw_request(s, "/messages/stream", rcvbuf=4096, token=s.token(f"h{i}")) for i in range(2)
    ]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        r = httpx.get(f"{s.base_url}/messages/stream", headers=s.headers("late"), timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"]
        assert time.monotonic() - started < 2
    finally:
        for sock in held:
            reset(sock)
        stop_server(s)


def test_statements_stay_unnamed_with_the_pooler_setting(db_url: str) -> None:
    """Observed in PostgreSQL: a pool made for a transaction-mode pooler leaves no named
    prepared statement in its session (PgBouncer would hand it to another client: a
    collision, asyncpg#945); a plain pool does, which is what makes the check fail."""
    from app import database
    from app.settings import Settings

    async def named_statements(settings: Settings) -> list[str]:
        db = database.create(settings, db_url)
        await db.connect()
        try:
            async with db.connection() as conn:
                raw = conn.raw_connection
                for i in range(3):
                    await raw.fetchval("SELECT count(*) FROM messages WHERE id > $1", i)
                rows = await raw.fetch("SELECT name FROM pg_prepared_statements")
                return [r["name"] for r in rows]
        finally:
            await db.disconnect()

    assert asyncio.run(named_statements(Settings(database_pooler="transaction"))) == []
    assert asyncio.run(named_statements(Settings())) != []


def test_parts_of_one_snapshot_through_pgbouncer_on_two_instances(
    instances: list[Server], server: Server
) -> None:
    """The hold keeps its transaction (so PgBouncer keeps its server connection); each part
    imports the snapshot on whatever server connection PgBouncer hands its transaction; a
    release through the other instance ends the hold's server session."""
    one, two = instances
    planned = httpx.post(
        f"{one.base_url}/datasets/messages/partitions",
        params={"parts": 4, "id__lte": ROWS},
        headers=one.headers(),
        timeout=30,
    ).json()
    assert len(planned["parts"]) == 4
    ids: list[int] = []
    for i, part in enumerate(planned["parts"]):
        url = part["url"].replace(one.base_url, (one, two)[i % 2].base_url)
        body = httpx.get(url, headers={"Accept": "application/x-ndjson"}, timeout=60)
        assert body.status_code == 200, body.text
        ids += [int(line[6 : line.index(",")]) for line in body.text.splitlines()]
    direct = httpx.get(
        f"{server.base_url}/datasets/messages/stream",
        params={"id__lte": ROWS, "fields": "id"},
        headers=server.headers(),
        timeout=60,
    )
    assert ids == [int(line[6:-1]) for line in direct.text.splitlines()]
    released = httpx.delete(f"{two.base_url}{planned['release']}", headers=two.headers())
    assert released.status_code == 204
    gone = httpx.get(planned["parts"][0]["url"], timeout=30)
    assert gone.status_code == 410, gone.text
