"""Query parameters of the data routes, validated into a ``queries.Selection``.

Bounds match the column types (``integer``, ``bigint``), so no value can make PostgreSQL
fail with an overflow after the request was accepted: out-of-range input is a 422.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query

from app.errors import ProblemError
from app.queries import COLUMNS, InvalidFields, Selection, parse_fields

INT4 = 2**31 - 1
INT8 = 2**63 - 1


class UnprocessableContent(ProblemError):
    status, title = 422, "Unprocessable Content"


def _utc(value: datetime | None) -> datetime | None:
    """Timestamps without an offset are taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def selection(
    fields: Annotated[
        str | None,
        Query(
            description=f"Comma-separated columns, in the order wanted. Default: all "
            f"({', '.join(COLUMNS)}).",
            examples=["id,channel,created_at"],
            max_length=500,
        ),
    ] = None,
    channel: Annotated[str | None, Query(max_length=100, examples=["sms"])] = None,
    sender_id: Annotated[int | None, Query(ge=-INT4 - 1, le=INT4)] = None,
    recipient_id: Annotated[int | None, Query(ge=-INT4 - 1, le=INT4)] = None,
    is_read: bool | None = None,
    created_after: Annotated[
        datetime | None,
        Query(description="Only rows created after this instant (RFC 3339; no offset = UTC)."),
    ] = None,
    created_before: Annotated[
        datetime | None,
        Query(description="Only rows created before this instant (RFC 3339; no offset = UTC)."),
    ] = None,
    after_id: Annotated[
        int | None,
        Query(
            ge=-INT8 - 1,
            le=INT8,
            description="Resume: only rows with `id` greater than this (the last `id` you got).",
        ),
    ] = None,
    min_id: Annotated[
        int | None, Query(ge=-INT8 - 1, le=INT8, description="Only rows with `id` >= this.")
    ] = None,
    limit: Annotated[
        int | None,
        Query(gt=0, le=INT8, description="At most this many rows, in `id` order. Default: all."),
    ] = None,
) -> Selection:
    try:
        columns = parse_fields(fields)
    except InvalidFields as exc:
        raise UnprocessableContent(str(exc), field="fields") from None
    return Selection(
        fields=columns,
        channel=channel,
        sender_id=sender_id,
        recipient_id=recipient_id,
        is_read=is_read,
        created_after=_utc(created_after),
        created_before=_utc(created_before),
        after_id=after_id,
        min_id=min_id,
        limit=limit,
    )


SelectionParams = Annotated[Selection, Depends(selection)]

FormatParam = Annotated[
    str | None,
    Query(
        description="Overrides `Accept`: `ndjson`, `json`, `csv`, `text` or `arrow` (or a "
        "media type). Not every route serves every format; 406 lists what it does.",
    ),
]
