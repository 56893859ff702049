"""The cursor loop: a server-side cursor read in batches, one snapshot, nothing left behind.

An export runs on one pooled connection inside one read-only REPEATABLE READ transaction
(``transaction.snapshot``): a count taken first and the rows streamed after see the same data. The
rows come either from a server-side cursor (``batches``: JSON texts or typed columns,
``STREAM_BATCH_SIZE`` at a time) or from PostgreSQL's own ``COPY … TO STDOUT``
(``copy_chunks``: CSV and text passed through untouched).

``open_stream`` ties it together for a route: it takes the connection, runs ``before``
(counts for the headers) and fetches the first batch *before* the response starts, so an
error there still gets a real status code; it returns a generator that, when closed,
closes the source and rolls back and returns the connection. Whoever drives the generator
must ``aclose()`` it when done (``responses.StreamingResponse`` does, also when the client
goes away). Cleanup is shielded from cancellation and bounded in time; if the task is
cancelled while a fetch is running, asyncpg cancels the query on the server, and the
pool's release (shielded too) resets the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import asyncpg
import databases

from app.encoders import Encoder
from app.limits import CLEANUP_SECONDS, COPY_STREAM_SECONDS, FIRST_BATCH_ROWS
from app.sql import Query
from app.transaction import DbIdentity, Imported, snapshot

R = TypeVar("R")

logger = logging.getLogger(__name__)


async def _settle(conn: asyncpg.Connection) -> None:
    """Wait (shielded, bounded) until a cancelled statement has left ``conn``: asyncpg
    marks the connection idle only when the server's answer to the cancel has arrived,
    and a ROLLBACK sent before that fails ("another operation is in progress"). asyncpg's
    own pool waits the same way before it resets a released connection."""
    protocol = getattr(conn, "_protocol", None)
    if protocol is None or not protocol._is_cancelling():
        return
    with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
        with contextlib.suppress(Exception):
            await protocol._wait_for_cancellation()


async def _cancel(task: asyncio.Future[Any] | None) -> None:
    """Cancel a pending fetch or COPY and wait (shielded, bounded) until it has stopped."""
    if task is None or task.done():
        return
    task.cancel()  # asyncpg then cancels the query on the server
    with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
        with contextlib.suppress(BaseException):
            await task


async def batches(
    conn: asyncpg.Connection, query: Query, batch_size: int
) -> AsyncGenerator[list[Any], None]:
    """Yield ``query``'s rows from a server-side cursor, ``batch_size`` records at a time
    (the first batch is at most ``FIRST_BATCH_ROWS``)."""
    # prepare() + cursor(): an unnamed statement when the statement cache is off, which
    # PgBouncer in transaction mode requires (asyncpg#945).
    statement = await conn.prepare(query.sql)
    cursor = await statement.cursor(*query.args)
    # Always one fetch in flight: PostgreSQL renders batch n+1 while batch n is being
    # encoded and written to the client.
    size = min(batch_size, FIRST_BATCH_ROWS)
    pending: asyncio.Future[list[Any]] | None = asyncio.ensure_future(cursor.fetch(size))
    try:
        while pending is not None:
            rows = await pending
            full = len(rows) == size
            size = batch_size
            pending = asyncio.ensure_future(cursor.fetch(size)) if full else None
            if rows:
                yield rows
    finally:
        await _cancel(pending)
        await _settle(conn)


async def copy_chunks(
    conn: asyncpg.Connection,
    query: Query,
    *,
    queue_size: int = 8,
    coalesce_bytes: int = 0,
    coalesce_seconds: float = 0.0,
    **copy_options: Any,
) -> AsyncGenerator[bytes, None]:
    """Yield PostgreSQL's own ``COPY (query) TO STDOUT`` output, buffer by buffer.

    ``copy_options`` are asyncpg's ``copy_from_query`` options (``format="csv"``…;
    default: COPY's text format, one line per row). The bytes pass through untouched: no
    per-row Python work at all. A small bounded queue between asyncpg's output callback
    and this generator gives back-pressure: when the client reads slowly the queue fills,
    the callback waits, and asyncpg stops reading from PostgreSQL. Closing the generator
    cancels the COPY on the server.

    ``coalesce_bytes``: after the first chunk, chunks are joined until there are that many
    bytes or the oldest has waited ``coalesce_seconds``. asyncpg hands over each socket
    read, about 10 KB; a consumer that pays per chunk (a worker thread's hand-over, an HTTP
    send through the middleware) then pays a few hundred times per 60 MB, not 6,000.
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=queue_size)

    async def produce() -> None:
        # asyncpg gives a COPY one time budget for all of it (command_timeout by default),
        # time spent waiting for a slow client included. A stream is bounded by the send
        # timeout and the idle-in-transaction backstop instead.
        await conn.copy_from_query(
            query.sql,
            *query.args,
            output=queue.put,
            timeout=COPY_STREAM_SECONDS,
            **copy_options,
        )
        await queue.put(None)

    task = asyncio.ensure_future(produce())
    getter: asyncio.Future[bytes | None] | None = None
    loop = asyncio.get_running_loop()
    held: list[bytes] = []  # coalesced chunks not yet yielded
    size, deadline, first = 0, 0.0, True
    try:
        while True:
            if not queue.empty():
                chunk = queue.get_nowait()
            else:
                getter = asyncio.ensure_future(queue.get())
                timeout = max(deadline - loop.time(), 0.0) if held else None
                done, _ = await asyncio.wait(
                    {getter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if task.done():
                        task.result()  # the COPY ended without its end marker: its error
                    else:  # held long enough: out with what there is
                        yield b"".join(held)
                        held, size = [], 0
                    continue
                chunk = getter.result()
            if chunk is None:
                break
            if not coalesce_bytes or first:
                first = False
                yield chunk  # the first at once: it is the response's first byte
                continue
            if not held:
                deadline = loop.time() + coalesce_seconds
            held.append(chunk)
            size += len(chunk)
            if size >= coalesce_bytes:
                yield b"".join(held)
                held, size = [], 0
        if held:
            yield b"".join(held)
        await task
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        await _cancel(task)
        await _settle(conn)


async def copy_all(
    db: databases.Database,
    query: Query,
    before: Callable[[asyncpg.Connection], Awaitable[R]],
    output: Callable[[bytes], Awaitable[None]],
    identity: DbIdentity | None = None,
    imported: Imported | None = None,
    **copy_options: Any,
) -> R:
    """``before``'s result, after the whole ``COPY (query) TO STDOUT`` went to ``output``.

    For the standard (buffered) endpoint: the same snapshot as a stream, and the rows
    arrive as a few large buffers rather than one Python object per row. An exception
    from ``output`` (a memory budget exceeded) cancels the COPY.
    """
    async with snapshot(db, identity=identity, imported=imported) as conn:
        prepared = await before(conn)
        await conn.copy_from_query(query.sql, *query.args, output=output, **copy_options)
    return prepared


async def exact_count(conn: asyncpg.Connection, query: Query) -> int:
    return int(await conn.fetchval(query.sql, *query.args))


async def estimated_count(conn: asyncpg.Connection, query: Query) -> int:
    """The planner's row estimate for ``query``: one planning round trip, no execution."""
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query.sql}", *query.args)
    return int(json.loads(plan)[0]["Plan"]["Plan Rows"])


async def open_stream(
    db: databases.Database,
    source: Callable[[asyncpg.Connection], AsyncGenerator[Any, None]],
    encoder: Encoder,
    before: Callable[[asyncpg.Connection], Awaitable[R]],
    *,
    guard: contextlib.AbstractAsyncContextManager[Any] | None = None,
    idle_timeout: float | None = None,
    on_batch: Callable[[Any], None] | None = None,
    identity: DbIdentity | None = None,
    imported: Imported | None = None,
) -> tuple[R, AsyncGenerator[bytes, None], Callable[[], Awaitable[None]]]:
    """Start an export: ``before``'s result (for headers), the encoded body stream, and
    the cleanup that releases everything.

    ``guard`` (a stream slot) is entered first and held until the stream is closed;
    ``on_batch`` sees each batch as it is sent (for counting rows). Closing the body
    runs the cleanup; the caller must also run it itself when done (idempotent), because
    a generator closed before its first step never runs its ``finally``.
    """
    stack = contextlib.AsyncExitStack()
    try:
        if guard is not None:
            await stack.enter_async_context(guard)
        conn = await stack.enter_async_context(
            snapshot(db, idle_timeout=idle_timeout, identity=identity, imported=imported)
        )
        prepared = await before(conn)
        rows = source(conn)
        try:
            first = await anext(rows)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await rows.aclose()
            raise
    except BaseException:
        with anyio.CancelScope(shield=True):
            await stack.aclose()
        raise
    return prepared, _encode(first, rows, encoder, stack, on_batch), stack.aclose


async def _encode(
    first: Any,
    rows: AsyncGenerator[Any, None],
    encoder: Encoder,
    stack: contextlib.AsyncExitStack,
    on_batch: Callable[[Any], None] | None,
) -> AsyncGenerator[bytes, None]:
    count = on_batch if on_batch is not None else (lambda batch: None)
    try:
        head = encoder.start()
        if first is None:
            yield head + encoder.end()
            return
        count(first)
        yield head + encoder.batch(first)
        async for batch in rows:
            count(batch)
            if chunk := encoder.batch(batch):  # a Parquet row group may still be filling
                yield chunk
        tail = encoder.end()
        if tail:
            yield tail
    finally:
        try:
            await rows.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
