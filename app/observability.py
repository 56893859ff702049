"""Metrics (Prometheus) and one structured log line per request.

Each app gets its own ``CollectorRegistry`` (nothing registered at import), exposed at
``/metrics``. ``RequestLog`` is a plain ASGI middleware: it gives every request an id
(``X-Request-ID`` is accepted when it looks sane, and echoed), measures what was sent,
and writes one JSON line when the request is over with the rows, bytes, duration and how
it ended: ``complete``, ``client gone``, ``timeout`` (a client that stopped reading),
``too slow``, ``time limit``, ``shutdown``, ``database error``, ``recovery conflict`` or
``error``. Tokens are never logged: no header is, and in the path and query string every
credential-looking value is replaced by ``REDACTED`` (``redaction.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.redaction import redact_path, redact_query

access = logging.getLogger("rowstream.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


@dataclass
class ExportStats:
    """What an export did; kept in the request state for the log line and the metrics."""

    format: str
    #: The dataset's name (from the configuration, never from the request).
    dataset: str | None = None
    rows: int = 0
    #: complete | client gone | timeout | too slow | time limit | shutdown |
    #: database error | recovery conflict | error
    outcome: str | None = None
    streamed: bool = False

    def add_rows(self, rows: int) -> None:
        self.rows += rows


class Metrics:
    def __init__(
        self,
        active_streams: Callable[[], int],
        pool_in_use: Callable[[], int],
        read_lag: Callable[[], float] = lambda: 0.0,
        partition_holds: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rowstream_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.rows = Counter(
            "rowstream_rows_sent",
            "Rows sent, by format and dataset",
            ["format", "dataset"],
            registry=r,
        )
        self.bytes = Counter(
            "rowstream_bytes_sent", "Response body bytes sent, by route", ["route"], registry=r
        )
        self.first_byte = Histogram(
            "rowstream_time_to_first_byte_seconds",
            "From request to the first body byte",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_duration = Histogram(
            "rowstream_stream_duration_seconds",
            "How long streams ran, by how they ended",
            ["outcome"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.streams_ended = Counter(
            "rowstream_streams_ended", "Streams by how they ended", ["outcome"], registry=r
        )
        self.rejected = Counter(
            "rowstream_rejected",
            "Requests refused for capacity (503) or quota (429)",
            ["status"],
            registry=r,
        )
        Gauge("rowstream_streams_active", "Streams running now", registry=r).set_function(
            active_streams
        )
        Gauge(
            "rowstream_pool_connections_in_use", "Pooled connections checked out", registry=r
        ).set_function(pool_in_use)
        Gauge(
            "rowstream_read_replica_lag_seconds",
            "Replication lag of the read side, as last measured (0 on a primary)",
            registry=r,
        ).set_function(read_lag)
        Gauge(
            "rowstream_partition_holds",
            "Partitioned exports whose snapshot this instance holds open",
            registry=r,
        ).set_function(partition_holds)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestLog:
    """One JSON log line and the request metrics for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 0
        sent = 0
        first_byte: float | None = None
        finished = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent, first_byte, finished
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                await send(message)  # counted once sent: a send cut short may be retried
                if body and first_byte is None:
                    first_byte = time.perf_counter() - started
                sent += len(body)
                finished = not message.get("more_body", False)
                return
            await send(message)

        error = False
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            error = True
            raise
        finally:
            self._record(scope, state, status, sent, first_byte, started, finished, error)

    def _record(
        self,
        scope: Scope,
        state: dict[str, Any],
        status: int,
        sent: int,
        first_byte: float | None,
        started: float,
        finished: bool,
        error: bool,
    ) -> None:
        duration = time.perf_counter() - started
        route = _route(scope)
        export: ExportStats | None = state.get("export")
        if export is not None and export.outcome is not None:
            outcome = export.outcome
        elif finished and not error:
            outcome = "complete"
        elif error:
            outcome = "error"
        else:
            outcome = "client gone"
        metrics: Metrics | None = state.get("metrics")  # the lifespan's state
        if metrics is not None:
            metrics.requests.labels(route, str(status or 499)).inc()
            metrics.bytes.labels(route).inc(sent)
            if first_byte is not None:
                metrics.first_byte.labels(route).observe(first_byte)
            if status in (429, 503):
                metrics.rejected.labels(str(status)).inc()
            if export is not None:
                metrics.rows.labels(export.format, export.dataset or "").inc(export.rows)
                if export.streamed:
                    metrics.streams_ended.labels(outcome).inc()
                    metrics.stream_duration.labels(outcome).observe(duration)
        query = redact_query(scope.get("query_string", b"").decode("latin-1"))
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request_id": state.get("request_id"),
            "method": scope.get("method"),
            "path": redact_path(scope.get("path", "")),
            "query": query or None,
            "route": route,
            "status": status or None,
            "subject": state.get("subject"),
            "dataset": export.dataset if export else None,
            "format": export.format if export else None,
            "rows": export.rows if export else None,
            "bytes": sent,
            "duration_ms": round(duration * 1000, 1),
            "first_byte_ms": round(first_byte * 1000, 1) if first_byte is not None else None,
            "outcome": outcome,
        }
        access.info(orjson.dumps({k: v for k, v in line.items() if v is not None}).decode())


class ExpectedAborts(logging.Filter):
    """Drop the server's "Exception in ASGI application" traceback for a stream aborted on
    purpose (an exception marked ``expected_abort``: a client that stopped reading). Its
    access line already says how it ended; an error-level traceback per slow client would
    bury the real ones. Failures mid-stream (database errors) keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError) and "graceful shutdown" in str(exc):
            return False  # uvicorn ended a response at its shutdown: said in one line above
        return not getattr(exc, "expected_abort", False)


class JSONFormatter(logging.Formatter):
    """Every other log record as one JSON object per line too (access lines pass through)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == access.name:
            return record.getMessage()
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """Our logging as a ``dictConfig``: for this process and for uvicorn's worker processes."""
    formatter = (
        {"()": "app.observability.JSONFormatter"}
        if log_format == "json"
        else {"format": "%(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"aborts": {"()": "app.observability.ExpectedAborts"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["aborts"],
            }
        },
        "root": {"handlers": ["default"], "level": level.upper()},
    }
