"""Arrow record batches from PostgreSQL's binary ``COPY``, decoded in C++ by the ADBC
PostgreSQL driver, for the Arrow and Parquet formats.

Measured on 500,000 ``messages`` rows (docs/benchmarks.md): the driver reads them into
Arrow in about 1.2x the time of ``COPY … (FORMAT csv)``, where parsing PostgreSQL's CSV
text with Arrow's reader costs 1.6x. The driver is blocking C++ with a libpq connection of
its own, so each export here:

- opens one driver connection (not pooled: an export holds a stream slot, which bounds
  them) and joins the export's snapshot: the asyncpg transaction that took the counts
  runs ``pg_export_snapshot()``, the driver's transaction ``SET TRANSACTION SNAPSHOT``, so
  rows and counts come from one snapshot, and the same transaction settings and database
  role (``DB_ROLE_CLAIM``) apply;
- reads each batch in a worker thread, so the event loop goes on sending the previous one;
- when the body is closed early (a client that went away, a cut-off), cancels the running
  query with the driver's cancel (``PQcancel``), waits for the thread, and closes the
  connection: no session is left behind.

The driver streams (through ``COPY``, in batches) only a statement without parameters: with
one it reads the whole result into one batch. So the statement carries none: its values are
set first as transaction-local settings by a bound ``set_config`` call, and the statement
reads them with ``current_setting`` (``sql._SettingsBinder``). No value is spliced in.

Each column is selected as ``pgtypes.binary_sql`` casts it, and each batch's columns are
then cast to our Arrow types (``encoders.ArrowBatches``: the driver's extension types give
their storage, a numeric's text becomes decimal128). Used where it is safe (``use_for``):
no ``__in`` list, not a saved query (its own ``$n``), no PgBouncer in transaction mode
(the driver's statements are its own), and no read replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import anyio
import asyncpg

from app.datasets import Dataset
from app.errors import refused
from app.limits import ADBC_BATCH_BYTES
from app.quoting import literal
from app.settings import Settings
from app.sql import SETTING_PREFIX, Query, Selection
from app.transaction import SET_IDENTITY, TRANSACTION_SETTINGS, DbIdentity

#: The driver's statement option for the size of its record batches (ours: ``limits``).
BATCH_OPTION = "adbc.postgresql.batch_size_hint_bytes"
#: ``LIMIT NULL`` means no limit; the driver cannot bind a NULL of no type, so: this.
NO_LIMIT = 2**62


def available() -> bool:
    """Whether the driver is installed (found, not imported: importing it loads pyarrow,
    which ``ARROW_PRELOAD=false`` leaves to the first Arrow request)."""
    return importlib.util.find_spec("adbc_driver_postgresql") is not None


def use_for(dataset: Dataset, selection: Selection) -> bool:
    """A table or view (a saved query's own ``$n`` need parameters, and the driver streams
    only a statement without any) and no ``__in`` list (a list is no setting). Every type
    is read, as ``pgtypes.binary_sql`` casts it."""
    return not dataset.params and all(c.operator != "in" for c in selection.conditions)


def _statements(
    snapshot: str, identity: DbIdentity | None, args: Sequence[Any]
) -> list[tuple[str, tuple[Any, ...]]]:
    """What the driver's transaction runs before the query: the export's snapshot and
    settings, its role, and the query's values as settings (``sql._SettingsBinder``),
    every value bound."""
    setup: list[tuple[str, tuple[Any, ...]]] = [
        ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", ()),
        (f"SET TRANSACTION SNAPSHOT {literal(snapshot)}", ()),
    ]
    setup += [(s.strip(), ()) for s in TRANSACTION_SETTINGS.split(";")]
    if identity is not None:
        setup.append((SET_IDENTITY, (identity.role, identity.claims_json)))
    if args:
        calls = ", ".join(
            f"set_config('{SETTING_PREFIX}{n}', ${n}, true)" for n in range(1, len(args) + 1)
        )
        values = tuple(str(NO_LIMIT if a is None else a) for a in args)
        setup.append((f"SELECT {calls}", values))
    return setup


def pool_for(settings: Settings, url: str) -> DriverPool | None:
    """The driver's pool where Arrow and Parquet are to come from it: ``ARROW_SOURCE=adbc``,
    the driver installed, straight to the primary (not PgBouncer in transaction mode: the
    driver's statements are its own; not a read replica)."""
    direct = settings.database_pooler == "none" and not settings.database_read_url
    if settings.arrow_source != "adbc" or not direct or not available():
        return None
    return DriverPool(url)


class DriverPool:
    """Idle driver connections kept for the next export: a new one costs about 50 ms (libpq
    connects, then the driver reads the type catalog), a reused one nothing. Only one
    whose transaction ended cleanly is kept; one whose query was cancelled is closed.
    Everything an export sets is local to its transaction."""

    def __init__(self, url: str, max_idle: int = 4) -> None:
        self.url = url
        self.max_idle = max_idle
        self._idle: list[Any] = []

    async def acquire(self) -> Any:
        """An idle connection that still answers (the server may have closed it since:
        a restart, an idle timeout), else a new one."""
        while self._idle:
            driver = self._idle.pop()
            if await asyncio.to_thread(_answers, driver):
                return driver
            await asyncio.to_thread(_close, driver)
        import adbc_driver_postgresql.dbapi as dbapi

        return await asyncio.to_thread(dbapi.connect, self.url, autocommit=True)

    async def release(self, driver: Any, *, reusable: bool) -> None:
        if reusable and len(self._idle) < self.max_idle:
            self._idle.append(driver)
        else:
            await asyncio.to_thread(_close, driver)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for driver in idle:
            await asyncio.to_thread(_close, driver)


async def batches(
    conn: asyncpg.Connection, pool: DriverPool, query: Query, identity: DbIdentity | None
) -> AsyncGenerator[Any, None]:
    """The rows of ``query`` as ``pyarrow.RecordBatch``es, read by the driver inside the
    snapshot of ``conn``'s (open, REPEATABLE READ) transaction."""
    snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
    driver = await pool.acquire()
    reading: asyncio.Future[Any] | None = None
    finished = False
    cursors: list[Any] = []
    try:

        def start() -> Any:
            cursor = driver.cursor()
            cursors.append(cursor)
            for statement, parameters in _statements(snapshot, identity, query.args):
                cursor.execute(statement, parameters or None)
            # ~1 MB batches (the driver's default is 16 MB): memory stays low per stream,
            # and the first batch leaves sooner
            cursor.adbc_statement.set_options(**{BATCH_OPTION: str(ADBC_BATCH_BYTES)})
            cursor.execute(query.sql)  # no parameters: the driver streams it through COPY
            return cursor.fetch_record_batch()

        reading = asyncio.ensure_future(asyncio.to_thread(start))
        reader = await asyncio.shield(reading)
        while True:
            reading = asyncio.ensure_future(asyncio.to_thread(_next, reader))
            batch = await asyncio.shield(reading)
            if batch is None:
                finished = True
                return
            yield batch
    except OSError as exc:
        # the driver reports every error while streaming as an OSError (a lost connection
        # too, which stays one: 503 before the headers); a refused value says so (422)
        refusal = refused(exc)
        if refusal is None:
            raise
        raise refusal from exc
    finally:
        # Shielded: this runs when the body is closed early, often from a cancelled task.
        # Closed before the end (a client gone, a cut-off, an error): the query is cancelled
        # rather than drained, and the connection is not kept.
        with anyio.CancelScope(shield=True):
            if not finished:
                with contextlib.suppress(Exception):
                    driver.adbc_cancel()  # the query stops; a blocked read returns
            if reading is not None and not reading.done():
                with contextlib.suppress(BaseException):
                    await reading
            reusable = finished and await asyncio.to_thread(_end, driver, cursors)
            await pool.release(driver, reusable=reusable)


def _end(driver: Any, cursors: list[Any]) -> bool:
    """Close the export's cursor and roll the driver's transaction back; whether the
    connection is fit for reuse."""
    try:
        for used in cursors:
            used.close()
        with driver.cursor() as cursor:
            cursor.execute("ROLLBACK")
        return True
    except Exception:
        return False


def _answers(driver: Any) -> bool:
    try:
        with driver.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        return True
    except Exception:
        return False


def _next(reader: Any) -> Any:
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


def _close(driver: Any) -> None:
    with contextlib.suppress(Exception):
        driver.close()  # a transaction still open, read-only, ends with it
