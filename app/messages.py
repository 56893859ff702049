"""The two ways to get the messages table: all at once, or streamed from a cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from app import cursor, encoders, formats, queries
from app.deps import AppSettings, CurrentUser, Db
from app.responses import PrebuiltJSONResponse, StreamingResponse

router = APIRouter(tags=["messages"])

Limit = Annotated[
    int | None,
    Query(
        gt=0,
        le=2**63 - 1,
        description="Return at most this many rows (in `id` order). Default: all.",
    ),
]

Format = Annotated[
    str | None,
    Query(description="Overrides `Accept`: `ndjson` (default) or `text` (`object_id:{id} \\n`)."),
]

#: What the streaming route can answer with; the first is the default.
STREAM_FORMATS = (formats.NDJSON, formats.TEXT)

_ROW_EXAMPLE: dict[str, Any] = {
    "id": 1,
    "sender_id": 7919,
    "recipient_id": 4729,
    "channel": "sms",
    "body": "c4ca4238a0b923820dcc509a6f75849bc4ca4238a",
    "created_at": "2024-01-01T00:00:01+00:00",
    "is_read": False,
}


@router.get(
    "/messages",
    response_class=PrebuiltJSONResponse,
    summary="All messages, loaded then sent as one JSON array (standard)",
    responses={200: {"content": {"application/json": {"example": [_ROW_EXAMPLE]}}}},
)
async def list_messages(db: Db, user: CurrentUser, limit: Limit = None) -> PrebuiltJSONResponse:
    chunks = await cursor.copy_all(
        db, queries.messages_json(limit=limit), **queries.JSON_LINES_COPY
    )
    return PrebuiltJSONResponse(encoders.json_array_from_lines(chunks))


@router.get(
    "/messages/stream",
    response_class=StreamingResponse,
    summary="All messages, streamed from a server-side cursor as NDJSON (streaming)",
    responses={
        200: {
            "content": {
                encoders.NDJSON: {
                    "schema": {"type": "string"},
                    "example": '{"id":1,"sender_id":7919,…}\n{"id":2,…}\n',
                },
                formats.TEXT: {
                    "schema": {"type": "string"},
                    "example": "object_id:1 \nobject_id:2 \n",
                },
            }
        },
        406: {"description": "No acceptable format", "content": {"application/problem+json": {}}},
    },
)
async def stream_messages(
    db: Db,
    settings: AppSettings,
    user: CurrentUser,
    limit: Limit = None,
    format: Format = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> StreamingResponse:
    media_type = formats.negotiate(accept, format, STREAM_FORMATS)
    if media_type == formats.TEXT:
        body = await cursor.primed(
            cursor.copy_chunks(db, queries.message_ids_text(limit=limit)), bytes
        )
    else:
        batches = cursor.stream_batches(
            db, queries.messages_json(limit=limit), settings.stream_batch_size
        )
        body = await cursor.primed(batches, encoders.ndjson)
    return StreamingResponse(body, media_type=media_type)


# The original comparison's URLs, so its curl commands keep working.
router.add_api_route(
    "/standard",
    list_messages,
    methods=["GET"],
    response_class=PrebuiltJSONResponse,
    include_in_schema=True,
    summary="Alias of /messages",
)
router.add_api_route(
    "/chunked",
    stream_messages,
    methods=["GET"],
    response_class=StreamingResponse,
    include_in_schema=True,
    summary="Alias of /messages/stream",
)
