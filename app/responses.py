"""Response classes with the two properties Starlette's own do not give us."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import anyio
import asyncpg
from starlette.responses import Response
from starlette.responses import StreamingResponse as _StarletteStreamingResponse
from starlette.types import Message, Receive, Scope, Send

from app.connections import shutting_down
from app.delivery import UNLIMITED, Delivery, DeliveryLimits, StalledClient
from app.observability import ExportStats

logger = logging.getLogger(__name__)


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


class StreamFailed(Exception):
    """A stream that failed on our side after its headers went out, already logged once.

    Re-raised in place of the cause so the server still drops the connection without
    the final chunk, while the error handler and the server, which would each log the
    cause's traceback again, skip it (``observability.ExpectedAborts``)."""

    expected_abort = True


class StreamingResponse(_StarletteStreamingResponse):
    """A ``StreamingResponse`` that ends every stream explicitly and says how it ended.

    - It always closes its body iterator. Starlette stops iterating when the client goes
      away but leaves the generator suspended at its ``yield``; its ``finally`` (ROLLBACK,
      returning the connection to the pool) would only run when garbage collection gets
      to it. We close it at once, shielded from the cancellation a disconnect triggers.
    - Each chunk is sent within ``DeliveryLimits`` (send timeout, minimum rate, the
      export's ceiling); a client outside them has its connection reset.
    - An exception from the iterator after the headers went out propagates to the server,
      which then drops the connection without the terminating chunk: the client sees a
      truncated transfer, never a complete-looking one.

    ``stats`` (if given) gets the outcome: complete, client gone, timeout, too slow, time
    limit, shutdown or an error's class.
    """

    #: Seconds the iterator's cleanup (ROLLBACK, returning the connection) may take.
    close_timeout: float = 5.0

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        *,
        limits: DeliveryLimits = UNLIMITED,
        stats: ExportStats | None = None,
        cleanup: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(content, status_code, **kwargs)
        self.limits = limits
        self.stats = stats
        self.cleanup = cleanup
        self._delivery: Delivery | None = None

    def _end(self, outcome: str) -> None:
        if self.stats is not None and self.stats.outcome is None:
            self.stats.outcome = outcome

    def _failed(self, exc: Exception) -> NoReturn:
        outcome = _classify(exc)
        self._end(outcome)
        logger.error("stream failed mid-way (%s): %s", outcome, exc, exc_info=exc)
        raise StreamFailed(outcome) from exc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._delivery = Delivery(scope, self.limits)
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Returning without an outcome means we were cancelled: the disconnect
            # listener's doing, or the server's at the end of its graceful shutdown.
            self._end("shutdown" if shutting_down(scope) else "client gone")

    async def stream_response(self, send: Send) -> None:
        assert self._delivery is not None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self.body_iterator:
                await self._delivery.send(
                    send, {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self._end("complete")
        except StalledClient as exc:
            self._end(exc.outcome)
            raise
        except OSError as exc:
            if not _from_database(exc):
                self._end("client gone")
                raise
            self._failed(exc)
        except Exception as exc:
            self._failed(exc)
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
    a large result. In slices, each send waits for the socket to drain, within the same
    ``DeliveryLimits`` as a stream. A ``bytearray`` body is accepted as it is (converting
    it to ``bytes`` would be one more full copy). ``release`` runs when the response is
    over, however it ended, after the body was dropped: it returns the body's memory
    reservation (``capacity.MemoryBudget``). ``stats`` (if given) gets the outcome, as a
    stream's does: complete, client gone, timeout, too slow or shutdown.
    """

    #: Bytes per ASGI message.
    slice_size: int = 1 << 20

    def __init__(
        self,
        content: bytes | bytearray,
        status_code: int = 200,
        *,
        limits: DeliveryLimits = UNLIMITED,
        release: Callable[[], None] | None = None,
        stats: ExportStats | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(content, status_code, **kwargs)
        self.limits = limits
        self.release = release
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "shutdown"  # unless it ends otherwise: cancelled at the server's end
        try:
            await self._send_body(Delivery(scope, self.limits), send)
            outcome = "complete"
        except StalledClient as exc:
            outcome = exc.outcome
            raise
        except OSError:
            outcome = "client gone"
            raise
        except BaseException:
            if not shutting_down(scope):
                outcome = "client gone"  # cancelled by the client's disconnect
            raise
        finally:
            if self.stats is not None and self.stats.outcome is None:
                self.stats.outcome = outcome
            self.body = b""
            if self.release is not None:
                self.release()
        if self.background is not None:
            await self.background()

    async def _send_body(self, delivery: Delivery, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        end = len(self.body)
        with memoryview(self.body) as body:  # released on any exit, so the body can go
            for start in range(0, end, self.slice_size):
                stop = min(start + self.slice_size, end)
                message: Message = {
                    "type": "http.response.body",
                    "body": bytes(body[start:stop]),
                    "more_body": stop < end,
                }
                await delivery.send(send, message)
        if not end:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

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
