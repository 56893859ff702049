"""From a validated request to a response: which query, which source, which encoder.

Formats that PostgreSQL can write completely (CSV, the text lines) come from ``COPY`` and
pass through untouched; the JSON formats come from the cursor as PostgreSQL-rendered JSON
texts that the encoder only joins; Arrow comes from the cursor as typed columns.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from functools import partial
from typing import Any

import asyncpg
import databases
from fastapi import Request

from app import compression, cursor, encoders, queries
from app.errors import HTTPVersionNotSupported, TooLarge
from app.formats import ARROW, CSV, JSON, NDJSON, TEXT
from app.observability import ExportStats
from app.queries import Selection
from app.responses import PrebuiltJSONResponse, StreamingResponse
from app.settings import Settings

#: What each route can answer with; the first is the default.
STREAM_FORMATS = (NDJSON, JSON, CSV, TEXT, ARROW)
STANDARD_FORMATS = (JSON, CSV)

Source = Callable[[asyncpg.Connection], AsyncGenerator[Any, None]]


def count_mode(prefer: str | None) -> str:
    """``exact`` or ``estimated`` from a ``Prefer`` header (RFC 7240, PostgREST's values)."""
    for preference in (prefer or "").split(","):
        key, _, value = preference.strip().partition("=")
        if key.strip().lower() == "count" and value.strip().lower() == "exact":
            return "exact"
    return "estimated"


async def _count_headers(
    conn: asyncpg.Connection, selection: Selection, mode: str
) -> dict[str, str]:
    """Taken inside the export's snapshot, before the first row is read."""
    if mode == "exact":
        total = await cursor.exact_count(conn, queries.count(selection))
        if selection.limit is not None:
            total = min(total, selection.limit)
        return {"X-Total-Count": str(total), "Preference-Applied": "count=exact"}
    estimate = await cursor.estimated_count(conn, queries.as_columns(selection))
    return {"X-Total-Count-Estimate": str(estimate)}


def _plan(selection: Selection, media_type: str, batch_size: int) -> tuple[Source, Any]:
    if media_type == CSV:
        query = queries.as_csv(selection)
        return (
            lambda conn: cursor.copy_chunks(conn, query, **queries.CSV_COPY),
            encoders.Passthrough(CSV),
        )
    if media_type == TEXT:
        query = queries.as_id_lines(selection)
        return lambda conn: cursor.copy_chunks(conn, query), encoders.Passthrough(TEXT)
    if media_type == ARROW:
        query = queries.as_arrow(selection)
        encoder: Any = encoders.ArrowEncoder(selection.fields)
    else:
        query = queries.as_json(selection)
        encoder = encoders.JSONArrayEncoder() if media_type == JSON else encoders.NDJSONEncoder()
    return lambda conn: cursor.batches(conn, query, batch_size), encoder


def _row_counter(stats: ExportStats, media_type: str) -> Callable[[Any], None]:
    """Rows per batch: records from the cursor, lines from COPY (minus the CSV header)."""
    if media_type == CSV:
        state = {"in_quotes": False, "header": True}

        def count_csv(chunk: Any) -> None:
            ended, state["in_quotes"] = encoders.csv_records(chunk, state["in_quotes"])
            stats.rows += ended - (1 if state["header"] else 0)
            state["header"] = False

        return count_csv
    if media_type == TEXT:

        def count_lines(chunk: Any) -> None:
            stats.rows += chunk.count(b"\n")

        return count_lines

    def count_records(batch: Any) -> None:
        stats.rows += len(batch)

    return count_records


async def streamed(
    request: Request,
    db: databases.Database,
    settings: Settings,
    subject: str,
    selection: Selection,
    media_type: str,
    prefer: str | None,
    accept_encoding: str | None,
) -> StreamingResponse:
    if request.scope.get("http_version") == "1.0":
        # HTTP/1.0 has no chunked encoding: the body would end when the connection closes,
        # and a stream cut short would look exactly like a complete one.
        raise HTTPVersionNotSupported(
            "streams need HTTP/1.1 (a truncated HTTP/1.0 body looks complete); behind "
            "nginx set 'proxy_http_version 1.1'"
        )
    await request.app.state.lag.admit(settings.read_max_lag_seconds)
    stats = ExportStats(format=media_type, streamed=True)
    source, encoder = _plan(selection, media_type, settings.stream_batch_size)
    before = partial(_count_headers, selection=selection, mode=count_mode(prefer))
    headers, body, cleanup = await cursor.open_stream(
        db,
        source,
        encoder,
        before,
        guard=request.app.state.limiter.slot(subject),
        idle_timeout=settings.stream_idle_timeout,
        on_batch=_row_counter(stats, media_type),
    )
    request.state.export = stats  # a stream from here on (refusals are not streams)
    headers["Vary"] = "Accept, Accept-Encoding, Prefer"
    encoding = compression.negotiate(accept_encoding)
    if encoding:
        body = compression.compress(body, encoding)
        headers["Content-Encoding"] = encoding
    return StreamingResponse(
        body,
        media_type=media_type,
        headers=headers,
        send_timeout=settings.stream_send_timeout,
        stats=stats,
        cleanup=cleanup,
    )


async def _refuse_too_large(
    conn: asyncpg.Connection, selection: Selection, maximum: int
) -> int | None:
    """The exact row count when it had to be taken; raises when it exceeds ``maximum``.

    Decided in the export's snapshot before any row is loaded: a buffered response holds
    every row in memory at once, which is what the streaming endpoint is for.
    """
    if selection.limit is not None and selection.limit <= maximum:
        return None
    total = await cursor.exact_count(conn, queries.count(selection))
    if selection.limit is not None:
        total = min(total, selection.limit)
    if total > maximum:
        raise TooLarge(
            f"this would load {total:,} rows, more than the {maximum:,} the standard endpoint "
            "buffers (MAX_STANDARD_ROWS); use /messages/stream, which streams any number of "
            "rows in constant memory, or narrow the request (limit=, filters)",
            rows=total,
            maximum=maximum,
            stream="/messages/stream",
        )
    return total


async def buffered(
    request: Request,
    db: databases.Database,
    settings: Settings,
    selection: Selection,
    media_type: str,
    prefer: str | None,
) -> PrebuiltJSONResponse:
    await request.app.state.lag.admit(settings.read_max_lag_seconds)
    mode = count_mode(prefer)
    stats = ExportStats(format=media_type)
    request.state.export = stats

    async def before(conn: asyncpg.Connection) -> dict[str, str]:
        total = await _refuse_too_large(conn, selection, settings.max_standard_rows)
        if total is not None and mode == "exact":
            return {"X-Total-Count": str(total), "Preference-Applied": "count=exact"}
        return await _count_headers(conn, selection, mode)

    if media_type == CSV:
        headers, chunks = await cursor.copy_all(
            db, queries.as_csv(selection), before, **queries.CSV_COPY
        )
        body = encoders.concatenate(chunks)
        stats.rows = max(encoders.csv_records(body, False)[0] - 1, 0)
    else:
        headers, chunks = await cursor.copy_all(
            db, queries.as_json(selection), before, **queries.JSON_LINES_COPY
        )
        stats.rows = sum(chunk.count(b"\n") for chunk in chunks)
        body = encoders.json_array_from_lines(chunks)
    headers["Vary"] = "Accept, Prefer"
    return PrebuiltJSONResponse(body, media_type=media_type, headers=headers)


_ROW = {
    "id": 1,
    "sender_id": 7919,
    "recipient_id": 4729,
    "channel": "sms",
    "body": "c4ca4238a0b923820dcc509a6f75849bc4ca4238a",
    "created_at": "2024-01-01T00:00:01+00:00",
    "is_read": False,
}
_LINE = (
    '{"id":1,"sender_id":7919,"recipient_id":4729,"channel":"sms",'
    '"body":"c4ca4238a0b923820dcc509a6f75849bc4ca4238a",'
    '"created_at":"2024-01-01T00:00:01+00:00","is_read":false}'
)
_EXAMPLES: dict[str, dict[str, Any]] = {
    NDJSON: {"schema": {"type": "string"}, "example": _LINE + "\n"},
    JSON: {"schema": {"type": "array", "items": {"type": "object"}}, "example": [_ROW]},
    CSV: {
        "schema": {"type": "string"},
        "example": "id,sender_id,recipient_id,channel,body,created_at,is_read\n"
        "1,7919,4729,sms,c4ca4238a0b923820dcc509a6f75849bc4ca4238a,"
        "2024-01-01T00:00:01+00:00,false\n",
    },
    TEXT: {"schema": {"type": "string"}, "example": "object_id:1 \nobject_id:2 \n"},
    ARROW: {
        "schema": {
            "type": "string",
            "format": "binary",
            "description": "Arrow IPC stream: schema, one record batch per cursor batch, "
            "end-of-stream marker (read with `pyarrow.ipc.open_stream`).",
        }
    },
}
_PROBLEM = {"application/problem+json": {"schema": {"type": "object"}}}


def openapi_responses(media_types: tuple[str, ...]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a data route: every media type with an example."""
    return {
        200: {
            "description": "The rows, in `id` order. Headers: `X-Total-Count` "
            "(with `Prefer: count=exact`) or `X-Total-Count-Estimate`.",
            "content": {media: _EXAMPLES[media] for media in media_types},
        },
        401: {"description": "Missing, invalid or expired token", "content": _PROBLEM},
        406: {"description": "None of the accepted formats is served", "content": _PROBLEM},
        422: {"description": "Invalid parameter", "content": _PROBLEM},
        503: {"description": "Database unavailable (see `Retry-After`)", "content": _PROBLEM},
    }
