"""The two ways to get the messages table: all at once, or streamed from a cursor.

The routes stay thin: parameters become a ``Selection`` (``params.py``), the format is
negotiated (``formats.py``), and ``export.py`` picks the query, the source and the encoder.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from app import export, formats
from app.deps import AppSettings, CurrentUser, ReadDb
from app.params import SelectionParams, StandardFormat, StreamFormat
from app.responses import PrebuiltJSONResponse, StreamingResponse

router = APIRouter(tags=["messages"])

AcceptHeader = Annotated[str | None, Header(include_in_schema=False)]
PreferHeader = Annotated[
    str | None,
    Header(
        description="`count=exact`: send `X-Total-Count`, the exact number of rows this "
        "response carries, counted in the same snapshot. Otherwise (`count=estimated`, "
        "the default) `X-Total-Count-Estimate` from the query planner."
    ),
]


@router.get(
    "/messages",
    response_class=PrebuiltJSONResponse,
    summary="Messages, loaded then sent in one response (standard)",
    responses=export.openapi_responses(export.STANDARD_FORMATS),
)
async def list_messages(
    request: Request,
    db: ReadDb,
    settings: AppSettings,
    user: CurrentUser,
    selection: SelectionParams,
    format: StandardFormat = None,
    accept: AcceptHeader = None,
    prefer: PreferHeader = None,
) -> PrebuiltJSONResponse:
    media_type = formats.negotiate(accept, format, export.STANDARD_FORMATS)
    return await export.buffered(request, db, settings, selection, media_type, prefer)


@router.get(
    "/messages/stream",
    response_class=StreamingResponse,
    summary="Messages, streamed from a server-side cursor while the query runs (streaming)",
    responses=export.openapi_responses(export.STREAM_FORMATS),
)
async def stream_messages(
    request: Request,
    db: ReadDb,
    settings: AppSettings,
    user: CurrentUser,
    selection: SelectionParams,
    format: StreamFormat = None,
    accept: AcceptHeader = None,
    prefer: PreferHeader = None,
    accept_encoding: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> StreamingResponse:
    media_type = formats.negotiate(accept, format, export.STREAM_FORMATS)
    return await export.streamed(
        request, db, settings, user.subject, selection, media_type, prefer, accept_encoding
    )


# The original comparison's URLs, so its curl commands keep working.
router.add_api_route(
    "/standard",
    list_messages,
    methods=["GET"],
    response_class=PrebuiltJSONResponse,
    summary="Alias of /messages",
    responses=export.openapi_responses(export.STANDARD_FORMATS),
)
router.add_api_route(
    "/chunked",
    stream_messages,
    methods=["GET"],
    response_class=StreamingResponse,
    summary="Alias of /messages/stream",
    responses=export.openapi_responses(export.STREAM_FORMATS),
)
