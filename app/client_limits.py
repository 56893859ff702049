"""What one connection's request may claim before the app runs, and what a client may
hold: a body's framing, the trusted proxies, the per-address connection counts, and the
throttled log of refusals (``connections.py`` applies them)."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

from uvicorn.middleware.proxy_headers import _TrustedHosts
from uvicorn.server import ServerState

logger = logging.getLogger("app.connections")


@dataclass(frozen=True)
class ConnectionLimits:
    """The settings of the same names (``settings.py`` holds their defaults)."""

    header_timeout_seconds: float
    max_header_bytes: int
    body_timeout_seconds: float
    max_body_bytes: int
    max_connections: int
    max_connections_per_client: int
    #: ``FORWARDED_ALLOW_IPS``: proxies, exempt from the per-client cap.
    trusted_proxies: str


def body_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """A request's ``Content-Length`` (None without one) and whether its body is chunked.
    The parser has already refused a malformed length (400)."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length" and value.strip().isdigit():
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


@functools.cache
def trusted_hosts(spec: str) -> _TrustedHosts:
    """uvicorn's own reading of ``FORWARDED_ALLOW_IPS``, parsed once per process (not kept
    on the configuration: uvicorn pickles that for its worker processes, and this does
    not pickle)."""
    return _TrustedHosts(spec)


def shared_counts(server_state: ServerState) -> dict[str, int]:
    """The per-address connection counts of one server (kept on its shared state)."""
    counts: dict[str, int] | None = getattr(server_state, "rowstream_per_client", None)
    if counts is None:
        counts = {}
        server_state.rowstream_per_client = counts  # type: ignore[attr-defined]
    return counts


_last_refusal_log = 0.0
_refused_since_log = 0


def log_refusal(open_connections: int, maximum: int, address: str | None = None) -> None:
    """A warning at most once a second, with how many were refused since the last one
    (a flood of connections must not become a flood of log lines)."""
    global _last_refusal_log, _refused_since_log
    _refused_since_log += 1
    now = time.monotonic()
    if now - _last_refusal_log >= 1.0:
        where, limit = (
            ("", "MAX_CONNECTIONS")
            if address is None
            else (f" from {address}", "MAX_CONNECTIONS_PER_CLIENT")
        )
        logger.warning(
            "refused %d connection(s): %d open%s, %s is %d",
            _refused_since_log,
            open_connections,
            where,
            limit,
            maximum,
        )
        _last_refusal_log, _refused_since_log = now, 0
