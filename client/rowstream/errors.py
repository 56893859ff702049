"""What the client raises, and which transport failures it resumes after."""

from __future__ import annotations

import httpx


class ClientError(Exception):
    """The server refused the request (its problem ``detail``), or it cannot be resumed."""


def cannot_connect(url: str, exc: Exception) -> ClientError:
    """A request refused before any byte: nothing dropped, nothing to resume."""
    return ClientError(f"cannot connect to {url} ({exc}); is the service running there?")


class IncompleteExport(ClientError):
    """The export ended before all its rows arrived, and resuming did not complete it."""

    def __init__(self, detail: str, *, received: int | None, total: int | None) -> None:
        super().__init__(detail)
        self.received = received
        self.total = total


#: What a dropped connection looks like to httpx: worth resuming.
RETRYABLE = (httpx.TransportError, httpx.RemoteProtocolError)
