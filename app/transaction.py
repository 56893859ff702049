"""An export's transaction: one pooled connection in one read-only REPEATABLE READ
snapshot, with the settings that fix how values print and the caller's database role.

Everything an export reads (counts, rows, the ADBC driver's copy of the same snapshot)
runs inside ``snapshot``; it ends with a rollback that is shielded from cancellation and
bounded in time, so a client that goes away leaves no transaction behind. A part of a
partitioned export (``partitions.py``) begins it with another transaction's snapshot
(``Imported``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import databases

from app.database import describe, raw_connection, renew_connections
from app.errors import Gone, ServiceUnavailable
from app.limits import BEGIN_ATTEMPTS, CLEANUP_SECONDS
from app.quoting import literal

logger = logging.getLogger(__name__)

#: How a pooled connection that the server closed while it sat idle fails on its next
#: statement: closed, a protocol left confused by the unsolicited FATAL ("cannot switch to
#: state 15"), the socket gone, or the server's "terminating connection" itself.
BROKEN = (
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    OSError,
)

#: Per-transaction settings: ``SET LOCAL`` ends with the transaction, so nothing leaks to
#: the next user of a pooled (or PgBouncer-shared) connection. They fix how values print,
#: whatever the server's defaults: UTC, ISO dates, shortest exact floats.
TRANSACTION_SETTINGS = (
    "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL extra_float_digits = 1"
)


@dataclass(frozen=True)
class DbIdentity:
    """Whom an export's transaction reads as (``DB_ROLE_CLAIM``; see ``access.py``): its
    role and the caller's claims as ``request.jwt.claims``, both set local to the
    transaction, so nothing outlives it on a pooled or PgBouncer-shared connection."""

    role: str
    claims_json: str


@dataclass(frozen=True)
class Imported:
    """The snapshot a part of a partitioned export reads in (``partitions.py``): another
    transaction's ``pg_export_snapshot()``, and the tag of the database server holding it
    (``SERVER_TAG``), since only that server can give it."""

    snapshot: str
    server: str
    #: ``SERVER_AND_SNAPSHOT``'s digest of the snapshot when it was exported.
    digest: str


#: Which database server a connection reached: its database and the moment its postmaster
#: started (a primary and its replicas, or a restarted server, differ).
_SERVER = (
    "left(md5(current_database() || ' ' || "
    "extract(epoch FROM pg_postmaster_start_time())::text), 16)"
)
SERVER_TAG = f"SELECT {_SERVER}"
#: The server's tag and a digest of the transaction's snapshot (its xmin, xmax and running
#: transactions): an imported snapshot is the exported one only if the digests agree
#: (snapshot names are numbered per server and may repeat after a crash restart).
SERVER_AND_SNAPSHOT_COLUMNS = f"{_SERVER}, left(md5(pg_current_snapshot()::text), 16)"
SERVER_AND_SNAPSHOT = f"SELECT {SERVER_AND_SNAPSHOT_COLUMNS}"

#: Bound, not spliced: ``set_config('role', …, true)`` is ``SET LOCAL ROLE`` (PostgREST's).
SET_IDENTITY = "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)"


@contextlib.asynccontextmanager
async def snapshot(
    db: databases.Database,
    *,
    idle_timeout: float | None = None,
    identity: DbIdentity | None = None,
    imported: Imported | None = None,
) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside a read-only REPEATABLE READ transaction (UTC).

    ``idle_timeout``: the database backstop for streams. Should everything else fail, the
    server itself ends a transaction left idle longer than this. ``identity``: the
    database role and claims the transaction reads as (row-level security applies).
    ``imported``: the snapshot the transaction takes (``SET TRANSACTION SNAPSHOT``, its
    first statement), or ``Gone`` when that snapshot is no longer held.
    """
    setup = TRANSACTION_SETTINGS
    if idle_timeout is not None:
        milliseconds = int(idle_timeout * 1000)
        setup += f"; SET LOCAL idle_in_transaction_session_timeout = {milliseconds}"
    for attempt in range(1, BEGIN_ATTEMPTS + 1):
        async with contextlib.AsyncExitStack() as held:
            conn = await held.enter_async_context(raw_connection(db))
            tx = conn.transaction(isolation="repeatable_read", readonly=True)
            try:
                await tx.start()
                if imported is not None:
                    await _import(conn, tx, imported)
                await conn.execute(setup)
                if identity is not None:
                    await conn.fetchrow(SET_IDENTITY, identity.role, identity.claims_json)
            except TimeoutError:
                raise  # a slow server is not a dead connection: no retry, no renewal
            except BROKEN as exc:
                # The server closed this pooled connection while it sat idle (a restart,
                # pg_terminate_backend, an idle timeout): asyncpg may only notice now,
                # and with a confused protocol state. Nothing has been sent to the client
                # yet, so drop it, have the pool renew its connections, and begin again.
                with contextlib.suppress(asyncpg.InterfaceError):  # already let go of
                    conn.terminate()
                await renew_connections(db)
                if attempt == BEGIN_ATTEMPTS:
                    raise ServiceUnavailable(f"database unavailable: {describe(exc)}") from exc
                logger.info("a pooled connection was dead (%s); retrying", describe(exc))
                continue
            try:
                yield conn
            finally:
                await _end(tx)
            return


async def _import(conn: asyncpg.Connection, tx: Any, imported: Imported) -> None:
    """Take ``imported``'s snapshot in the transaction just begun, on its own server.

    An unknown snapshot is a snapshot no longer held (its exporting transaction ended) or
    one held on another server: the two are told apart by the server's tag, outside the
    failed transaction. Taken, the tag is checked again, so a snapshot of the same name on
    another server (they are numbered per server) is never read."""
    try:
        await conn.execute(f"SET TRANSACTION SNAPSHOT {literal(imported.snapshot)}")
    except (
        asyncpg.exceptions.UndefinedObjectError,  # "snapshot … does not exist"
        asyncpg.exceptions.InvalidParameterValueError,  # "invalid snapshot identifier"
        asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # its source has ended
        asyncpg.exceptions.FeatureNotSupportedError,  # exported in another database
    ) as exc:
        await _end(tx)
        _refuse_other_server(await conn.fetchval(SERVER_TAG), imported)
        raise Gone(
            "this part's snapshot is no longer held (the partitioned export was released or "
            "outlived PARTITION_HOLD_SECONDS, or its instance stopped): ask for the "
            f"partitions again ({describe(exc)})"
        ) from None
    server, digest = await conn.fetchrow(SERVER_AND_SNAPSHOT)
    try:
        _refuse_other_server(server, imported)
        if digest != imported.digest:
            raise Gone(
                "this part's snapshot is no longer held (another snapshot has its name now): "
                "ask for the partitions again"
            )
    except (ServiceUnavailable, Gone):
        await _end(tx)
        raise


def _refuse_other_server(tag: str, imported: Imported) -> None:
    if tag != imported.server:
        raise ServiceUnavailable(
            "this part's snapshot is held on another database server than the one this "
            "instance reached (a part must reach the server its partitions were planned on: "
            "the same DATABASE_READ_URL, one server)"
        )


async def _end(tx: Any) -> None:
    """Roll back (read-only: nothing to commit; this also closes any cursor).

    Shielded from cancellation (a client disconnect cancels the stream's task) and bounded
    in time. If the connection is broken or still busy with a cancelled query, the
    rollback fails; the pool's release then resets or discards the connection, so that
    is not an error.
    """
    with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
        with contextlib.suppress(
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,  # still busy: the pool discards it
            OSError,
        ):
            await tx.rollback()
