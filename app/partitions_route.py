"""``POST /datasets/{name}/partitions``: one export split into parts of one snapshot, each
a signed link any instance serves; ``DELETE /partitions/{id}``: let its snapshot go.

The query is the export's own (filters, ``fields``, ``format``…) plus ``parts``; it is
checked as the stream route checks it before any snapshot is opened, so a bad one costs
a 422 and nothing on the database. See ``partitions.py`` for how the parts are made and
held.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from app import access, links, partitions
from app.deps import CurrentUser, ExportSources, LinkKey, ReadDb
from app.errors import BadRequest, NotFound, ServiceUnavailable, UnprocessableContent
from app.limits import MAX_PARTS
from app.links_route import origin
from app.routes import selection_of

router = APIRouter()

#: The route's own parameter, not the export's.
PARTS = "parts"


class PartLink(BaseModel):
    #: A signed link to the dataset's stream route: an ordinary export of the part.
    url: str
    #: The key the part starts after (exclusive) and ends at (inclusive), as text.
    after: list[str] | None
    until: list[str] | None
    estimated_rows: int


class Partitions(BaseModel):
    partition: str
    #: When the snapshot (and every part's link) expires at the latest.
    expires_at: str
    #: ``DELETE`` it (with the same token) once every part is read: the snapshot is let go.
    release: str
    parts: list[PartLink]


@router.post(
    "/datasets/{name}/partitions",
    tags=["datasets"],
    status_code=201,
    summary="One export in key ranges of one snapshot, each a link any instance serves",
    responses={
        400: {"description": "The dataset has no key to split by"},
        401: {"description": "Missing, invalid or expired token"},
        403: {"description": "The caller may not read that dataset"},
        404: {"description": "No such dataset"},
        422: {"description": "A bad parameter (the export's own, or parts, after, limit)"},
        503: {"description": "Signed links are off, or too many partitioned exports held"},
    },
)
async def create_partitions(
    request: Request,
    name: str,
    user: CurrentUser,
    key: LinkKey,
    sources: ExportSources,
    parts: Annotated[
        int,
        Query(ge=1, le=MAX_PARTS, description="How many parts (fewer when the keys are fewer)"),
    ],
) -> Response:
    if key is None:
        raise ServiceUnavailable("partitions are signed links, which are off: set LINK_SECRET")
    where = origin(request, sources.settings)
    dataset = await sources.catalog.get(sources.db, name)
    access.check_may_read(dataset, user)
    if not dataset.key:
        raise BadRequest(
            f"dataset {name!r} has no key, so it has no ranges to split into (declare 'key')",
            field=PARTS,
        )
    selection, _ = selection_of(request, dataset, user, sources.settings, {}, ignored=(PARTS,))
    for given, parameter in ((selection.after, "after"), (selection.limit, "limit")):
        if given is not None:
            raise UnprocessableContent(
                f"{parameter}: a partitioned export reads the whole selection "
                f"(each part resumes with {parameter}= on its own)",
                field=parameter,
            )
    identity = access.db_identity(sources.settings, user)
    hold = await sources.holds.open(sources.db, sources.settings, user.subject, identity)
    try:
        ranges = await partitions.split(hold.conn, dataset, selection, parts)
    except BaseException:
        await sources.holds.release(hold.id)
        raise
    hold.parts = len(ranges)
    expires_at = int(hold.expires_at)
    token_expiry: Any = user.claims.get("exp")
    if isinstance(token_expiry, int | float):
        expires_at = min(expires_at, int(token_expiry))  # never outlives the signer's token
    path = f"/datasets/{name}/stream"
    query = urlencode(
        [(k, v) for k, v in links.without_link_parameters(request.url.query) if k != PARTS]
    )
    listed = []
    for index, (after, until, estimate) in enumerate(ranges):
        part = partitions.Part(hold.id, index, hold.snapshot, hold.server, after, until)
        signed = links.sign(key, path, query, user, expires_at, part=part.encode())
        listed.append(
            PartLink(
                url=f"{where}{quote(path)}?{signed}",
                after=list(after) if after else None,
                until=list(until) if until else None,
                estimated_rows=estimate,
            )
        )
    when = datetime.datetime.fromtimestamp(expires_at, datetime.UTC)
    body = Partitions(
        partition=hold.id,
        expires_at=when.isoformat().replace("+00:00", "Z"),
        release=f"/partitions/{hold.id}",
        parts=listed,
    )
    return Response(
        body.model_dump_json(),
        status_code=201,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "Location": body.release},
    )


@router.delete(
    "/partitions/{partition}",
    tags=["datasets"],
    status_code=204,
    summary="Let a partitioned export's snapshot go (its parts then answer 410)",
    responses={
        401: {"description": "Missing, invalid or expired token"},
        404: {"description": "No partitioned export of that id is held (any more)"},
    },
)
async def release_partitions(
    request: Request, partition: str, user: CurrentUser, sources: ExportSources, db: ReadDb
) -> Response:
    holds = sources.holds
    hold = holds.get(partition)
    if hold is not None:
        # another caller's is as if it did not exist
        released = hold.subject == user.subject and await holds.release(partition)
    else:  # held by another instance, perhaps: the id is known only to its creator
        released = len(partition) <= 32 and await partitions.release_elsewhere(db, partition)
    if not released:
        raise NotFound(f"no partitioned export {partition[:40]!r} is held")
    return Response(status_code=204)
