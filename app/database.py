"""The connection pool and the way to a raw asyncpg connection.

Access goes through ``databases`` (its pool is opened in the app lifespan), but every
query on a hot path runs on the raw asyncpg connection underneath: ``databases``'
``iterate()`` fixes asyncpg's cursor prefetch at 50 rows and holds a lock for the whole
loop, and its records wrap each row in Python objects we do not need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import databases

from app import embedded
from app.errors import ServiceUnavailable
from app.settings import Settings, default

logger = logging.getLogger(__name__)

#: Errors that mean "the database cannot serve us right now" rather than "bad request":
#: connection lost or refused, server shutting down or starting, statement timed out or
#: cancelled, too many connections. The API answers them with 503 and ``Retry-After``.
UNREACHABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    # asyncpg's protocol confused by a server that closed the connection under it
    # ("cannot switch to state 15; another operation (2) is in progress")
    asyncpg.exceptions.InternalClientError,
    asyncpg.TooManyConnectionsError,
)


class Database(databases.Database):
    """``databases.Database`` whose pool is made from the full DSN, plus the bound on
    waiting for a pooled connection.

    ``databases`` takes the URL apart itself and hands asyncpg only host, port, user,
    password and database: query options (``sslmode``, ``sslrootcert``, a socket
    directory's ``port``, ``target_session_attrs``) were dropped, and a multi-host URL
    (``postgresql://a:5432,b:5432/db``) could not be parsed at all. asyncpg understands
    the DSN as libpq does, so the pool is created from it directly; everything else
    (connections, transactions, queries) is ``databases`` as before.
    """

    def __init__(self, url: str, *, acquire_timeout: float, **options: Any) -> None:
        super().__init__(url, **options)
        self.acquire_timeout = acquire_timeout
        self._dsn = url
        self._pool_options = options

    async def connect(self) -> None:
        if self.is_connected:
            return
        self._backend._pool = await asyncpg.create_pool(dsn=self._dsn, **self._pool_options)
        self.is_connected = True


def connection_options(settings: Settings) -> dict[str, Any]:
    """asyncpg's options for every connection of ours, pooled or not."""
    options: dict[str, Any] = {"command_timeout": settings.command_timeout_seconds}
    if settings.database_pooler == "transaction":
        # PgBouncer in transaction mode hands each transaction a different server
        # connection: named prepared statements would collide (asyncpg#945). With the
        # cache off, asyncpg prepares unnamed statements.
        options["statement_cache_size"] = 0
    return options


def create(settings: Settings, url: str) -> Database:
    """A ``Database`` (not yet connected) with the pool settings applied."""
    return Database(
        url,
        acquire_timeout=settings.pool_acquire_timeout_seconds,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        **connection_options(settings),
    )


async def close(db: databases.Database, grace: float = 5.0) -> None:
    """Close the pool, waiting at most ``grace`` s for connections still in use, then
    terminate them: a stream that never gave its connection back must not keep the
    process alive after SIGTERM (measured: 29 s without this, 5 s with it)."""
    try:
        async with asyncio.timeout(grace):
            await db.disconnect()
    except TimeoutError:
        pool: Any = getattr(db._backend, "_pool", None)
        if pool is not None:
            pool.terminate()
        db._backend._pool = None
        db.is_connected = False


@contextlib.asynccontextmanager
async def raw_connection(
    db: databases.Database, *, acquire_timeout: float | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """Check out one pooled connection and hand over the asyncpg connection beneath it.

    ``databases`` acquires from the pool without a timeout: bound it here, so an exhausted
    pool or an unreachable server answers 503 instead of hanging the request.
    """
    if acquire_timeout is None:
        acquire_timeout = getattr(db, "acquire_timeout", None) or default(
            "pool_acquire_timeout_seconds"
        )
    conn = db.connection()
    try:
        async with asyncio.timeout(acquire_timeout):
            await conn.__aenter__()
    except Exception as exc:  # any failure to get a connection (down, auth, no such db)
        raise ServiceUnavailable(f"database unavailable: {describe(exc)}") from exc
    try:
        yield conn.raw_connection
    finally:
        # Shielded: a stream cancelled by a client disconnect must still give its
        # connection back (asyncpg's release resets it if a transaction is left open).
        # A reset that fails means the connection is dead: asyncpg has terminated it and
        # the pool opens a new one, so that is no error of the request's.
        with anyio.CancelScope(shield=True):
            try:
                await conn.__aexit__(None, None, None)
            except UNREACHABLE as exc:
                logger.info("a pooled connection was dropped on release: %s", describe(exc))


async def renew_connections(db: databases.Database) -> None:
    """Have the pool replace every connection it holds: idle ones when next acquired, busy
    ones when released. Called when one turns out dead, as after a server restart or a
    mass ``pg_terminate_backend`` its idle siblings are dead too, so the retry gets a
    freshly opened connection rather than the next corpse."""
    pool: Any = getattr(db._backend, "_pool", None)
    if pool is not None:
        await pool.expire_connections()


def pool_stats(db: databases.Database) -> dict[str, int]:
    """Connections in the pool, idle, and checked out (``databases`` does not expose it)."""
    pool: Any = getattr(db._backend, "_pool", None)
    if pool is None:
        return {"size": 0, "idle": 0, "in_use": 0}
    size, idle = pool.get_size(), pool.get_idle_size()
    return {"size": size, "idle": idle, "in_use": size - idle}


def describe(exc: BaseException) -> str:
    """A one-line, secret-free description of a connection failure."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def safe_location(url: str) -> str:
    """``host:port/db`` (or the socket directory) of a URL, without credentials."""
    parts = urlsplit(url)
    host = parts.hostname or dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get(
        "host", "localhost"
    )
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The URL to use: ``DATABASE_URL``, or the embedded server started (or joined) for us.

    The embedded server is held for the block and given back when it ends, however it ends
    (a SIGTERM included, see ``cli.cmd_serve``); it stops when no other process holds it.
    """
    if settings.database_url:
        yield settings.database_url
        return
    with embedded.held(Path(settings.data_dir)) as server:
        yield embedded.url(server)


async def check_reachable(url: str, connect_timeout: float = 5.0) -> None:
    """Connect once, raising one of ``UNREACHABLE`` (or a PostgreSQL error) if we cannot."""
    conn: Any = await asyncpg.connect(url, timeout=connect_timeout)
    await conn.close()
