"""Query parameters of the data routes, validated into a ``queries.Selection``.

Bounds match the column types (``integer``, ``bigint``), so no value can make PostgreSQL
fail with an overflow after the request was accepted: out-of-range input is a 422.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, Query

from app.errors import ProblemError
from app.queries import COLUMNS, InvalidFields, Selection, parse_fields

INT4 = 2**31 - 1
INT8 = 2**63 - 1


class UnprocessableContent(ProblemError):
    status, title = 422, "Unprocessable Content"


_NAME = "|".join(COLUMNS)
#: ``fields``: column names, comma-separated (spaces allowed around them).
FIELDS_PATTERN = rf"^\s*({_NAME})\s*(,\s*({_NAME})\s*)*$"
#: RFC 3339 date-time; the offset may be left out (then UTC).
DATETIME_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?$"


def _instant(name: str, value: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp (without an offset: UTC). Numbers are not timestamps."""
    if value is None:
        return None
    text = value.strip().replace("z", "Z").replace("t", "T")
    if "." in text:  # Python takes at most 6 fractional digits
        head, _, rest = text.partition(".")
        digits = rest.rstrip("Z").split("+")[0].split("-")[0]
        text = head + "." + digits[:6] + rest[len(digits) :]
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)  # out of range in UTC (year 0 or 10000) fails here
    except (ValueError, OverflowError):
        raise UnprocessableContent(
            f"{name}: not an RFC 3339 date-time between years 1 and 9999 (UTC)", field=name
        ) from None


def _datetime_query(description: str) -> object:
    return Query(
        description=description,
        pattern=DATETIME_PATTERN,
        json_schema_extra={"format": "date-time"},
        examples=["2024-01-01T00:10:00Z"],
    )


def selection(
    fields: Annotated[
        str | None,
        Query(
            description=f"Comma-separated columns, in the order wanted. Default: all "
            f"({', '.join(COLUMNS)}).",
            examples=["id,channel,created_at"],
            max_length=500,
            pattern=FIELDS_PATTERN,
        ),
    ] = None,
    channel: Annotated[
        str | None, Query(max_length=100, pattern=r"^[^\x00]*$", examples=["sms"])
    ] = None,
    sender_id: Annotated[int | None, Query(ge=-INT4 - 1, le=INT4)] = None,
    recipient_id: Annotated[int | None, Query(ge=-INT4 - 1, le=INT4)] = None,
    is_read: bool | None = None,
    created_after: Annotated[
        str | None,
        _datetime_query("Only rows created after this instant (RFC 3339; no offset = UTC)."),
    ] = None,
    created_before: Annotated[
        str | None,
        _datetime_query("Only rows created before this instant (RFC 3339; no offset = UTC)."),
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
        created_after=_instant("created_after", created_after),
        created_before=_instant("created_before", created_before),
        after_id=after_id,
        min_id=min_id,
        limit=limit,
    )


SelectionParams = Annotated[Selection, Depends(selection)]


#: ``?format=`` values: the shorthands and the media types each route serves (a test keeps
#: these in step with ``formats.ALIASES`` and the routes' formats).
StreamFormatName = Literal[
    "application/json",
    "application/jsonl",
    "application/jsonlines",
    "application/vnd.apache.arrow.stream",
    "application/x-jsonlines",
    "application/x-ndjson",
    "arrow",
    "csv",
    "json",
    "jsonl",
    "ndjson",
    "text",
    "text/csv",
    "text/plain",
]
StandardFormatName = Literal["application/json", "csv", "json", "text/csv"]

StreamFormat = Annotated[
    StreamFormatName | None,
    Query(description="Overrides `Accept`: `ndjson` (default), `json`, `csv`, `text` or `arrow`."),
]
StandardFormat = Annotated[
    StandardFormatName | None,
    Query(description="Overrides `Accept`: `json` (default) or `csv`."),
]
