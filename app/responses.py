"""Response classes with the two properties Starlette's own do not give us."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.responses import StreamingResponse as _StarletteStreamingResponse
from starlette.types import Send


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


class PrebuiltJSONResponse(JSONResponse):
    """A ``JSONResponse`` whose body is JSON that is already encoded.

    The standard endpoint materialises the whole result as PostgreSQL-rendered JSON text;
    re-parsing it into Python objects only to serialise it again would double the time
    and the memory.
    """

    def render(self, content: Any) -> bytes:
        # A bytearray is sent as it is (no copy into a bytes object: that would be a
        # second full copy of a possibly large result); the ASGI server writes either.
        if not isinstance(content, bytes | bytearray):
            raise TypeError("PrebuiltJSONResponse takes encoded JSON bytes")
        return content  # type: ignore[return-value]
