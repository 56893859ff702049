"""Connection-level limits uvicorn's HTTP protocol does not have, in a small subclass of it.

``rowstream serve`` is documented for direct use (``--host 0.0.0.0``), so the server itself
must hold against clients that open connections and say nothing, send headers a byte at a
time, or send megabytes of them. uvicorn (httptools) keeps a connection that never sends
a complete request forever, parses any header size (quadratically: httptools grows each
header value by concatenation) and accepts connections until ``accept()`` runs out of file
descriptors. ``LimitedHttpProtocol`` adds, per connection:

- a deadline for the request head (``HEADER_TIMEOUT_SECONDS``): from the connection's
  start, or from the first byte of a later request on a kept-alive connection (the
  silence between requests is uvicorn's keep-alive timeout, ``KEEP_ALIVE_TIMEOUT_SECONDS``);
- a cap on the bytes of one request head (431, counted before the parser sees them);
- a deadline and a cap for the request body (``BODY_TIMEOUT_SECONDS``: 408;
  ``MAX_BODY_BYTES``: 413, from ``Content-Length`` before any byte of it is read). A
  request answered before its body arrived (a 401 from the head) has its connection
  ended (after a short linger, at once under a flood): uvicorn would otherwise keep
  reading a trickling body for ever, since each byte postpones its keep-alive timeout;
- a cap on open connections (``MAX_CONNECTIONS``): beyond it a new connection gets a 503
  with ``Retry-After`` at once, before its request is read; and one per client address
  (``MAX_CONNECTIONS_PER_CLIENT``; trusted proxies, ``FORWARDED_ALLOW_IPS``, exempt);
- a way for a response to cut its connection off with a TCP reset (``abort_connection``):
  ``close()`` would first wait for the unsent data of a stalled client, which holds the
  descriptor and the kernel's send queue for as long as the client keeps the window shut.

Refusals are written here (status line, ``errors.problem_body``, ``Connection: close``):
there is no request yet to run the app for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any

import uvicorn
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.client_limits import (
    ConnectionLimits,
    body_framing,
    log_refusal,
    shared_counts,
    trusted_hosts,
)
from app.errors import PROBLEM_JSON, problem_body
from app.limits import REFUSAL_LINGER_SECONDS, RESERVED_DESCRIPTORS

logger = logging.getLogger(__name__)

#: The ASGI scope extension through which a response reaches its connection.
CONNECTION_EXTENSION = "rowstream.connection"


class ServerConfig(uvicorn.Config):
    """uvicorn's ``Config`` with our limits, for ``LimitedHttpProtocol`` to read.

    A module-level class, so uvicorn's worker processes (which get the configuration
    pickled) rebuild it."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        # ws="none": the service has no WebSocket route, and an upgraded connection would
        # leave this protocol (and its per-client count) behind
        super().__init__(
            app,
            http=LimitedHttpProtocol,
            ws="none",
            forwarded_allow_ips=limits.trusted_proxies,
            **kwargs,
        )
        self.limits = limits


def connection_of(scope: Scope) -> LimitedHttpProtocol | None:
    """The connection a request came on, when the server runs ``LimitedHttpProtocol``."""
    found = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION)
    return found if isinstance(found, LimitedHttpProtocol) else None


def abort_connection(scope: Scope) -> bool:
    """Reset this request's connection at once (unsent data dropped); False if the server
    offers no way to (then the caller's exception makes it ``close()``)."""
    connection = connection_of(scope)
    if connection is None:
        return False
    connection.abort()
    return True


def shutting_down(scope: Scope) -> bool:
    """Whether the server has begun its shutdown (so a cancelled response was cut by it)."""
    connection = connection_of(scope)
    return connection is not None and connection.shutting_down


class LimitedHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, ServerConfig), "LimitedHttpProtocol needs a ServerConfig"
        self.limits: ConnectionLimits = config.limits
        self._trusted_proxies = trusted_hosts(self.limits.trusted_proxies)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        #: Bytes of the current request head seen so far; None once the head is complete.
        self._head_bytes: int | None = 0
        #: Bytes of the current request body seen so far; None when none is awaited.
        self._body_bytes: int | None = None
        self._refused = False
        #: The client address counted against ``MAX_CONNECTIONS_PER_CLIENT``, if any.
        self._counted_as: str | None = None
        #: Open connections per client address, shared by this server's connections.
        self._per_client: dict[str, int] = shared_counts(server_state)
        #: Set when the server begins its shutdown.
        self.shutting_down = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log_refusal(len(self.connections) - 1, self.limits.max_connections)
            self._refuse(
                503,
                f"the server has {self.limits.max_connections} connections open, its limit "
                "(MAX_CONNECTIONS); retry shortly",
                retry_after=1,
            )
            return
        address = self.client[0] if self.client else None
        if address is not None and address not in self._trusted_proxies:
            held = self._per_client.get(address, 0) + 1
            self._per_client[address] = held
            self._counted_as = address
            if held > self.limits.max_connections_per_client:
                log_refusal(held - 1, self.limits.max_connections_per_client, address)
                self._refuse(
                    503,
                    f"this client address has {self.limits.max_connections_per_client} "
                    "connections open, its limit (MAX_CONNECTIONS_PER_CLIENT); retry shortly",
                    retry_after=1,
                )
                return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._disarm_body_timer()
        if self._counted_as is not None:
            left = self._per_client.get(self._counted_as, 1) - 1
            if left > 0:
                self._per_client[self._counted_as] = left
            else:
                self._per_client.pop(self._counted_as, None)
            self._counted_as = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped: the refusal has been written
        if self._head_bytes is None:
            super().data_received(data)
            return
        room = self.limits.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed what fits; if the head did not end within it, refuse the rest unparsed.
        self._head_bytes += room
        super().data_received(data[:room])
        if self.transport.is_closing():
            return  # the parser refused it (400)
        if self._head_bytes is not None and self._head_bytes >= self.limits.max_header_bytes:
            self._refuse(
                431, f"the request's headers exceed {self.limits.max_header_bytes:,} bytes"
            )
            return
        self.data_received(data[room:])  # the head ended: the rest is body or a next request

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()

    # parser callbacks: after a refusal, what the parser still finds is dropped
    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self.scope["extensions"] = {CONNECTION_EXTENSION: self}  # type: ignore[dict-item]
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._head_bytes = None
        self._disarm_head_timer()
        length, chunked = body_framing(self.headers)
        has_body = chunked or bool(length)
        if has_body and self._answering_another():
            # A request with a body pipelined behind an unfinished response (RFC 9112
            # §9.3.2: clients should not): not served; the connection ends after the
            # response under way, so no answer can go to the wrong request.
            self._end_after_current()
            return
        if length is not None and length > self.limits.max_body_bytes:
            self._refuse(413, self._too_large())  # before the app, before any body byte
            return
        super().on_headers_complete()
        if has_body:
            self._disarm_body_timer()
            self._body_bytes = 0
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_seconds, self._body_timed_out
            )

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        if self._body_bytes is not None:
            self._body_bytes += len(body)
            if self._body_bytes > self.limits.max_body_bytes:  # a chunked body, growing
                self._end_request(413, self._too_large())
                return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm_body_timer()
        self._body_bytes = None
        super().on_message_complete()
        self._head_bytes = 0  # what follows is the next request's head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        answered = self.cycle is not None and self.cycle.response_complete
        if answered and self._body_bytes is not None and not self._refused:
            # Answered before its body arrived (a 401 from the head, a 404): the rest of
            # the body is not worth waiting for, and a trickle would hold the connection.
            # The client may still be sending: half-close and linger, so the answer is
            # read before the close; under a flood, close at once (descriptors first).
            self._disarm_body_timer()
            self._refused = True
            if len(self.connections) > self.limits.max_connections // 2:
                self.transport.close()
            else:
                self._close_after_linger()

    def shutdown(self) -> None:
        self.shutting_down = True
        super().shutdown()

    # our own
    def writable(self) -> bool:
        """Whether a send now writes at once (it waits only while writing is paused)."""
        return not self.flow.write_paused

    def abort(self) -> None:
        """Reset the connection (RST): the descriptor and the unsent data go at once.

        ``abort()`` alone drops only the transport's buffer: the socket's close then
        still queues a FIN behind what the kernel holds. A zero linger time makes the
        close a reset, which discards the kernel's send queue too."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout_seconds, self._head_timed_out
            )

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._head_bytes is None:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined head is late: end after this response
            return
        if self._head_bytes:
            self._refuse(
                408,
                f"the request's headers were not complete within "
                f"{self.limits.header_timeout_seconds:g} s (HEADER_TIMEOUT_SECONDS)",
            )
        else:
            self.transport.close()  # said nothing: nothing to answer

    def _disarm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _too_large(self) -> str:
        return f"the request's body exceeds {self.limits.max_body_bytes:,} bytes (MAX_BODY_BYTES)"

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._body_bytes is None:
            return
        self._end_request(
            408,
            f"the request's body was not complete within "
            f"{self.limits.body_timeout_seconds:g} s (BODY_TIMEOUT_SECONDS)",
        )

    def _answering_another(self) -> bool:
        """Whether a response to an earlier request is still under way (or queued)."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _end_after_current(self) -> None:
        """Serve nothing more on this connection: drop what is queued and what arrives,
        and close once the response under way is complete."""
        self._refused = True
        self._disarm_body_timer()
        self.pipeline.clear()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        else:
            self.transport.close()

    def _end_request(self, status: int, detail: str) -> None:
        """Stop reading this request's body: answer ``status`` if the app has not begun
        its response (the app's ``receive`` then sees a disconnect, and what it sends is
        dropped), else end the connection once the response is out."""
        self._disarm_body_timer()
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()
            self._refuse(status, detail)
        elif cycle.response_complete:
            self._refused = True
            self.transport.close()
        else:
            self._refused = True  # drop the rest of the body
            cycle.keep_alive = False  # the response closes the connection when it ends

    def _refuse(self, status: int, detail: str, *, retry_after: int | None = None) -> None:
        """Answer ``status`` without running the app, then close once the client has read.

        The input is read and dropped until the client closes its side or
        ``REFUSAL_LINGER_SECONDS`` pass: closing with unread input would send a reset,
        and the client could lose the answer."""
        self._refused = True
        self._disarm_head_timer()
        self._disarm_body_timer()
        body = problem_body(status, detail)
        head = [
            STATUS_LINE[status],
            b"content-type: %s\r\n" % PROBLEM_JSON.encode(),
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if retry_after is not None:
            head.append(b"retry-after: %d\r\n" % retry_after)
        self.transport.write(b"".join([*head, b"\r\n", body]))
        if len(self.connections) > self.limits.max_connections + RESERVED_DESCRIPTORS // 4:
            self.transport.close()  # a flood: descriptors first, politeness second
            return
        self._close_after_linger()

    def _close_after_linger(self) -> None:
        """Half-close now, close once the client has read (or ``REFUSAL_LINGER_SECONDS``)."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSAL_LINGER_SECONDS, self.transport.close)
