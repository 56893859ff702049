"""Response classes with the two properties Starlette's own do not give us."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.responses import Response
from starlette.responses import StreamingResponse as _StarletteStreamingResponse
from starlette.types import Receive, Scope, Send


class StreamingResponse(_StarletteStreamingResponse):
    """A ``StreamingResponse`` that always closes its body iterator.

    Starlette stops iterating when the client goes away but leaves the generator
    suspended at its ``yield``; its ``finally`` (ROLLBACK, returning the connection to the
    pool) would only run when garbage collection gets to it. We close it at once, shielded
    from the cancellation that a disconnect triggers.

    An exception from the iterator after the headers went out propagates to the server,
    which then drops the connection without the terminating chunk: the client sees a
    truncated transfer, never a complete-looking one.
    """

    #: Seconds the iterator's cleanup (ROLLBACK, returning the connection) may take.
    close_timeout: float = 5.0

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                # When the client disconnects, Starlette cancels this task's scope; without
                # the shield every await of the cleanup would be cancelled in turn and the
                # connection would go back to the pool mid-transaction, or not at all.
                with anyio.move_on_after(self.close_timeout, shield=True):
                    await aclose()


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
