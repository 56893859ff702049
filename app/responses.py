"""Response classes with the two properties Starlette's own do not give us."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import asyncpg
from starlette.responses import Response
from starlette.responses import StreamingResponse as _StarletteStreamingResponse
from starlette.types import Receive, Scope, Send

from app.observability import ExportStats


def _from_database(exc: BaseException) -> bool:
    # InternalClientError: asyncpg's state machine after the connection broke mid-fetch
    database = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    return isinstance(exc, database) or (
        isinstance(exc, OSError) and "asyncpg" in type(exc).__module__
    )


def _classify(exc: BaseException) -> str:
    """How a stream that raised ended: for logs and ``rowstream_streams_ended_total``."""
    if "conflict with recovery" in str(exc):
        return "recovery conflict"  # a hot standby cancelled the query to replay WAL
    if _from_database(exc) or isinstance(exc, ConnectionError):
        return "database error"
    return "error"


class StalledClient(Exception):
    """A chunk waited longer than the send timeout for the client to read.

    Raised to make the server drop the connection. It is an expected outcome (the access
    line says ``timeout``), so the server's traceback for it is not logged
    (``observability.ExpectedAborts``).
    """

    expected_abort = True


class StreamingResponse(_StarletteStreamingResponse):
    """A ``StreamingResponse`` that ends every stream explicitly and says how it ended.

    - It always closes its body iterator. Starlette stops iterating when the client goes
      away but leaves the generator suspended at its ``yield``; its ``finally`` (ROLLBACK,
      returning the connection to the pool) would only run when garbage collection gets
      to it. We close it at once, shielded from the cancellation a disconnect triggers.
    - A chunk that cannot be written within ``send_timeout`` (a client that stopped
      reading; uvicorn has no write timeout) aborts the stream.
    - An exception from the iterator after the headers went out propagates to the server,
      which then drops the connection without the terminating chunk: the client sees a
      truncated transfer, never a complete-looking one.

    ``stats`` (if given) gets the outcome: complete, client gone, timeout or error.
    """

    #: Seconds the iterator's cleanup (ROLLBACK, returning the connection) may take.
    close_timeout: float = 5.0

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        *,
        send_timeout: float | None = None,
        stats: ExportStats | None = None,
        cleanup: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(content, status_code, **kwargs)
        self.send_timeout = send_timeout
        self.stats = stats
        self.cleanup = cleanup

    def _end(self, outcome: str) -> None:
        if self.stats is not None and self.stats.outcome is None:
            self.stats.outcome = outcome

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Returning without an outcome means the disconnect listener cancelled us.
            self._end("client gone")

    async def stream_response(self, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self.body_iterator:
                try:
                    with anyio.fail_after(self.send_timeout):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except TimeoutError:
                    self._end("timeout")
                    raise StalledClient(
                        f"client did not read for {self.send_timeout} s; stream aborted"
                    ) from None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self._end("complete")
        except OSError as exc:
            self._end("database error" if _from_database(exc) else "client gone")
            raise
        except Exception as exc:
            self._end(_classify(exc))
            raise
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            with anyio.move_on_after(self.close_timeout, shield=True):
                if aclose is not None:
                    await aclose()
                if self.cleanup is not None:
                    # also when the iterator never started (then its finally never runs)
                    await self.cleanup()


class BufferedResponse(Response):
    """A response whose whole body is already built (the standard endpoint).

    The body is handed to the server in slices: handing it over at once makes the
    transport copy whatever the socket did not take into its own buffer, a third copy of
    a large result. In slices, each send waits for the socket to drain. A ``bytearray``
    body is accepted as it is (converting it to ``bytes`` would be one more full copy).
    """

    #: Bytes per ASGI message.
    slice_size: int = 1 << 20

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        body = memoryview(self.body)
        end = len(body)
        for start in range(0, end, self.slice_size):
            stop = min(start + self.slice_size, end)
            more = stop < end
            await send(
                {"type": "http.response.body", "body": bytes(body[start:stop]), "more_body": more}
            )
        if not end:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        if self.background is not None:
            await self.background()

    def render(self, content: Any) -> bytes:
        if not isinstance(content, bytes | bytearray):
            raise TypeError("BufferedResponse takes encoded bytes")
        return content  # type: ignore[return-value]


class PrebuiltJSONResponse(BufferedResponse):
    """A ``BufferedResponse`` that is JSON unless told otherwise (e.g. ``text/csv``).

    The standard endpoint materialises the whole result as PostgreSQL-rendered JSON text;
    re-parsing it into Python objects only to serialise it again would double the time
    and the memory.
    """

    media_type = "application/json"
