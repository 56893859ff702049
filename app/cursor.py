"""The cursor loop: a server-side cursor read in batches, one snapshot, nothing left behind.

``stream_batches`` is an async generator that owns a pooled connection, a read-only
REPEATABLE READ transaction and a cursor for as long as it runs. Whoever drives it must
``aclose()`` it when done (``responses.StreamingResponse`` does, also when the client
goes away): its ``finally`` blocks roll the transaction back and return the connection.
If the task is cancelled while a fetch is running, asyncpg cancels the query on the
server, and the pool's release (shielded) resets the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import anyio
import asyncpg
import databases

from app.database import raw_connection
from app.queries import Query

T = TypeVar("T")

#: Per-transaction settings: ``SET LOCAL`` ends with the transaction, so nothing leaks to
#: the next user of a pooled (or PgBouncer-shared) connection.
_TX_SETUP = "SET LOCAL TimeZone = 'UTC'"
_CLEANUP_TIMEOUT = 5.0


async def _open(conn: asyncpg.Connection) -> Any:
    tx = conn.transaction(isolation="repeatable_read", readonly=True)
    await tx.start()
    try:
        await conn.execute(_TX_SETUP)
    except BaseException:
        await tx.rollback()
        raise
    return tx


async def _end(tx: Any) -> None:
    """Roll back (read-only: nothing to commit; this also closes the cursor).

    Shielded from cancellation (a client disconnect cancels the stream's task) and bounded
    in time. If the connection is broken or still busy with a cancelled query, the
    rollback fails; the pool's release then resets or discards the connection, so that
    is not an error.
    """
    with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await tx.rollback()


async def stream_batches(
    db: databases.Database, query: Query, batch_size: int
) -> AsyncGenerator[list[str], None]:
    """Yield the first column of ``query``'s rows, ``batch_size`` rows at a time."""
    pending: asyncio.Future[list[Any]] | None = None
    async with raw_connection(db) as conn:
        tx = await _open(conn)
        try:
            # prepare() + cursor(): an unnamed statement when the statement cache is off,
            # which PgBouncer in transaction mode requires (asyncpg#945).
            statement = await conn.prepare(query.sql)
            cursor = await statement.cursor(*query.args)
            # Always one fetch in flight: PostgreSQL renders batch n+1 while batch n is
            # being encoded and written to the client (two cores do twice the work).
            pending = asyncio.ensure_future(cursor.fetch(batch_size))
            while pending is not None:
                rows = await pending
                pending = (
                    asyncio.ensure_future(cursor.fetch(batch_size))
                    if len(rows) == batch_size
                    else None
                )
                if rows:
                    yield [r[0] for r in rows]
        finally:
            if pending is not None and not pending.done():
                pending.cancel()  # asyncpg then cancels the query on the server
                with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
                    with contextlib.suppress(BaseException):
                        await pending
            await _end(tx)


async def copy_chunks(
    db: databases.Database, query: Query, *, queue_size: int = 8, **copy_options: Any
) -> AsyncGenerator[bytes, None]:
    """Yield PostgreSQL's own ``COPY (query) TO STDOUT`` output, buffer by buffer.

    ``copy_options`` are asyncpg's ``copy_from_query`` options (``format="csv"``…;
    default: COPY's text format, one line per row). The bytes pass through
    untouched: no per-row Python work at all. A small bounded queue between asyncpg's
    output callback and this generator gives back-pressure: when the client reads slowly
    the queue fills, the callback waits, and asyncpg stops reading from PostgreSQL.
    Closing the generator cancels the COPY on the server.
    """
    async with raw_connection(db) as conn:
        tx = await _open(conn)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=queue_size)

        async def produce() -> None:
            await conn.copy_from_query(query.sql, *query.args, output=queue.put, **copy_options)
            await queue.put(None)

        task = asyncio.create_task(produce())
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    task.result()  # the COPY failed: raise its error
                    continue
                chunk = getter.result()
                if chunk is None:
                    break
                yield chunk
            await task
        finally:
            if not task.done():
                task.cancel()
                with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
                    with contextlib.suppress(BaseException):
                        await task
            await _end(tx)


async def copy_all(db: databases.Database, query: Query, **copy_options: Any) -> list[bytes]:
    """The whole ``COPY (query) TO STDOUT`` output, materialised as PostgreSQL sent it.

    For the standard (buffered) endpoint: the same snapshot settings as a stream, and the
    rows arrive as a few large buffers rather than one Python object per row.
    """
    chunks: list[bytes] = []

    async def collect(data: bytes) -> None:
        chunks.append(data)

    async with raw_connection(db) as conn:
        tx = await _open(conn)
        try:
            await conn.copy_from_query(query.sql, *query.args, output=collect, **copy_options)
        finally:
            await _end(tx)
    return chunks


async def primed(
    source: AsyncGenerator[T, None], encode: Callable[[T], bytes]
) -> AsyncGenerator[bytes, None]:
    """Run ``source`` up to its first item now, then continue it lazily.

    Errors before the first byte (database down, bad query) raise here, while the handler
    can still answer with a real status code; errors after it abort the stream.
    The returned generator closes ``source`` when it is closed itself.
    """
    try:
        first = await anext(source)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await source.aclose()
        raise
    return _chain(first, source, encode)


async def _chain(
    first: T | None, source: AsyncGenerator[T, None], encode: Callable[[T], bytes]
) -> AsyncGenerator[bytes, None]:
    try:
        if first is not None:
            yield encode(first)
            async for item in source:
                yield encode(item)
    finally:
        await source.aclose()
