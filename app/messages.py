"""The two ways to get the messages table: all at once, or streamed from a cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app import cursor, encoders, queries
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
    rows = await cursor.fetch_column(db, queries.messages_json(limit=limit))
    return PrebuiltJSONResponse(encoders.json_array(rows))


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
                }
            }
        }
    },
)
async def stream_messages(
    db: Db, settings: AppSettings, user: CurrentUser, limit: Limit = None
) -> StreamingResponse:
    batches = cursor.stream_batches(
        db, queries.messages_json(limit=limit), settings.stream_batch_size
    )
    body = await cursor.primed(batches, encoders.ndjson)
    return StreamingResponse(body, media_type=encoders.NDJSON)


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
