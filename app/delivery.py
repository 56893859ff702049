"""How slowly a client may take a response's body, and what happens when it is slower.

A response body (a stream's chunks, a buffered body's slices) is sent message by message;
``Delivery`` sends each within ``DeliveryLimits``: a send timeout for a client that stopped
reading, a minimum rate for one that reads too slowly, a ceiling on an export's life. A
client outside them has its connection reset (``connections.abort_connection``), and the
response ends without its final chunk: a visible failure, which ``after=`` resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import NoReturn

import anyio
from starlette.types import Message, Scope, Send

from app.connections import abort_connection, connection_of
from app.settings import Settings

logger = logging.getLogger(__name__)


class StalledClient(Exception):
    """A client that took a response too slowly: it stopped reading for longer than the
    send timeout, read below the minimum rate, or the export outlived its ceiling.

    Raised after the connection was reset, to end the response without its final chunk.
    It is an expected outcome (the access line says which), so the server's traceback for
    it is not logged (``observability.ExpectedAborts``).
    """

    expected_abort = True

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


@dataclass(frozen=True)
class DeliveryLimits:
    """How slowly a client may take a response's body (the ``STREAM_*`` settings)."""

    #: Seconds one message may wait for the client to read (uvicorn has no write timeout).
    send_timeout: float | None = None
    #: Seconds the whole body may take.
    max_seconds: float | None = None
    #: Bytes per second the client must take, measured over ``window_seconds`` of which
    #: at least half were spent waiting for it; 0 means no minimum.
    min_bytes_per_second: int = 0
    window_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings, *, streamed: bool) -> DeliveryLimits:
        """The ``STREAM_*`` settings; the export's ceiling is for streams only (a buffered
        body is bounded by its size and the memory budget)."""
        return cls(
            send_timeout=settings.stream_send_timeout_seconds,
            max_seconds=settings.stream_max_seconds if streamed else None,
            min_bytes_per_second=settings.stream_min_bytes_per_second,
            window_seconds=settings.stream_min_rate_window_seconds,
        )


#: No limits at all (a response built outside an export).
UNLIMITED = DeliveryLimits()


class Delivery:
    """Sends a body's messages within ``DeliveryLimits``; cuts the connection off if not.

    A cut-off connection is reset (``connections.abort_connection``): closing it would
    wait for the unsent data, holding the descriptor and the kernel's send queue for as
    long as the client keeps its window shut, and the client would never see an end.
    """

    def __init__(self, scope: Scope, limits: DeliveryLimits) -> None:
        self.scope = scope
        self.limits = limits
        self._connection = connection_of(scope)
        self.started = time.monotonic()
        self._window_start = self.started
        self._window_bytes = 0
        self._window_waited = 0.0

    async def send(self, send: Send, message: Message) -> None:
        """``send(message)``, re-checking the limits at every deadline while it waits.

        A wait can be cancelled and the send tried again: uvicorn's ``send`` waits for the
        socket to drain *before* it writes, so a cancelled one has written nothing."""
        limits = self.limits
        if self._connection is not None and self._connection.writable():
            await send(message)  # it will not wait: no deadline to arm (measured: 11 us)
            self._account(0.0, len(message.get("body", b"")))
            return
        waited = 0.0
        while True:
            before = time.monotonic()
            try:
                with anyio.fail_after(self._next_check(before, waited)):
                    await send(message)
            except TimeoutError:
                pass
            else:
                self._account(time.monotonic() - before, len(message.get("body", b"")))
                return
            waited += self._account(time.monotonic() - before, 0)
            if limits.send_timeout is not None and waited >= limits.send_timeout:
                self._cut_off("timeout", f"client did not read for {limits.send_timeout:g} s")

    def _next_check(self, now: float, waited: float) -> float | None:
        """Seconds until a limit could be broken while a send waits (None: none could)."""
        limits = self.limits
        checks = []
        if limits.send_timeout is not None:
            checks.append(limits.send_timeout - waited)
        if limits.max_seconds is not None:
            checks.append(self.started + limits.max_seconds - now)
        if limits.min_bytes_per_second:
            checks.append(self._window_start + limits.window_seconds - now)
        return max(min(checks), 0.0) if checks else None

    def _account(self, waited: float, sent: int) -> float:
        """Count a wait and what it sent; end the export if it broke a limit."""
        limits = self.limits
        self._window_waited += waited
        self._window_bytes += sent
        now = time.monotonic()
        if limits.max_seconds is not None and now - self.started >= limits.max_seconds:
            self._cut_off(
                "time limit", f"the export ran past {limits.max_seconds:g} s (STREAM_MAX_SECONDS)"
            )
        elapsed = now - self._window_start
        if limits.min_bytes_per_second and elapsed >= limits.window_seconds:
            rate = self._window_bytes / elapsed
            # only when the client, not the database, held the export back
            if self._window_waited >= elapsed / 2 and rate < limits.min_bytes_per_second:
                self._cut_off(
                    "too slow",
                    f"client read {rate:,.0f} B/s over {elapsed:.1f} s, below the minimum "
                    f"{limits.min_bytes_per_second:,} (STREAM_MIN_BYTES_PER_SECOND)",
                )
            self._window_start, self._window_bytes, self._window_waited = now, 0, 0.0
        return waited

    def _cut_off(self, outcome: str, detail: str) -> NoReturn:
        abort_connection(self.scope)
        client = self.scope.get("client")
        logger.warning(
            "response cut off (%s) for %s %s: %s",
            outcome,
            f"{client[0]}:{client[1]}" if client else "?",
            self.scope.get("path"),
            detail,
        )
        raise StalledClient(outcome, f"{detail}; connection reset")
