"""``POST /datasets/{name}/partitions``: one export split into parts of one snapshot, each
a signed link any instance serves; ``DELETE /partitions/{id}``: let its snapshot go.

The query is the export's own (filters, ``fields``, ``format``…) plus ``parts``; it is
checked as the stream route checks it before any snapshot is opened, so a bad one costs
a 422 and nothing on the database. See ``partitions.py`` for how the parts are made and
held.
"""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from app import access, formats, links, partitions, transaction
from app.datasets import Dataset
from app.deps import CurrentUser, ExportSources, LinkKey, ReadDb
from app.errors import BadRequest, NotFound, ServiceUnavailable, UnprocessableContent
from app.limits import MAX_PARTS
from app.links_route import origin
from app.ranges import split
from app.routes import check_format, selection_of

router = APIRouter()

#: The route's own parameter, not the export's.
PARTS = "parts"


def _refuse_unsplittable(dataset: Dataset) -> None:
    """A dataset splits by its key (a key that may be NULL is checked on the rows, in the
    snapshot: ``partitions.split``)."""
    if not dataset.key:
        raise BadRequest(
            f"dataset {dataset.name!r} has no key, so it has no ranges to split into "
            "(declare 'key')",
            field=PARTS,
        )


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
        400: {"description": "The dataset has no key to split by, or a row's key is NULL"},
        401: {"description": "Missing, invalid or expired token"},
        403: {"description": "The caller may not read that dataset"},
        404: {"description": "No such dataset"},
        422: {"description": "A bad parameter (the export's own, or parts, after, limit)"},
        429: {"description": "The caller holds MAX_PARTITION_HOLDS_PER_SUBJECT already"},
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
    settings = sources.settings
    where = origin(request, settings)
    dataset = await sources.catalog.get(sources.db, name)
    access.check_may_read(dataset, user)
    _refuse_unsplittable(dataset)
    selection, requested = selection_of(request, dataset, user, settings, {}, ignored=(PARTS,))
    for given, parameter in ((selection.after, "after"), (selection.limit, "limit")):
        if given is not None:
            raise UnprocessableContent(
                f"{parameter}: a partitioned export reads the whole selection (a part "
                "resumes with after= appended to its link)",
                field=parameter,
            )
    if requested.format is not None:
        check_format(requested.format, formats.streamed())
    if parts > settings.stream_per_subject:
        # the parts are read at once, and each is a stream of the caller's
        raise UnprocessableContent(
            f"parts: at most {settings.stream_per_subject}, the streams one caller may "
            "read at once (STREAM_PER_SUBJECT)",
            field=PARTS,
        )
    await sources.lag.admit(settings.read_max_lag_seconds)  # parts would be refused
    identity = access.db_identity(settings, user)
    # The parts' links and the hold end together: at PARTITION_HOLD_SECONDS, and never
    # after LINK_MAX_TTL_SECONDS or the caller's token.
    expires_at = links.expiry(
        min(settings.partition_hold_seconds, settings.link_max_ttl_seconds), user
    )
    hold_id = partitions.new_id()
    session = partitions.session_name(hold_id, key, user.subject)
    seconds = max(expires_at - time.time(), 1.0)
    hold = await sources.holds.open(sources.db, settings, user.subject, seconds, session)
    try:
        # found on a pooled connection, warm (its caches know the table: the hold's own
        # connection is new), in a transaction that takes the held snapshot as a part does
        taken = hold.snapshot
        async with transaction.snapshot(sources.db, identity=identity, imported=taken) as conn:
            ranges = await split(conn, dataset, selection, parts)
        if sources.holds.get(hold.id) is not hold:  # ended meanwhile (its token, the server)
            raise ServiceUnavailable("the snapshot was let go while its parts were planned")
        hold.parts = len(ranges)
        path = f"/datasets/{name}/stream"
        query = urlencode(
            [(k, v) for k, v in links.without_link_parameters(request.url.query) if k != PARTS]
        )
        listed = []
        for index, (after, until, estimate) in enumerate(ranges):
            part = partitions.Part(
                hold.id, index, taken.snapshot, taken.server, taken.digest, after, until
            )
            signed = links.sign(key, path, query, user, expires_at, part=part.encode())
            listed.append(
                PartLink(
                    url=f"{where}{quote(path)}?{signed}",
                    after=list(after) if after else None,
                    until=list(until) if until else None,
                    estimated_rows=estimate,
                )
            )
    except BaseException:
        await sources.holds.release(hold.id)
        raise
    body = Partitions(
        partition=hold.id,
        expires_at=links.expiry_text(expires_at),
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
    request: Request,
    partition: str,
    user: CurrentUser,
    key: LinkKey,
    sources: ExportSources,
    db: ReadDb,
) -> Response:
    holds = sources.holds
    hold = holds.get(partition)
    if hold is not None:
        # another caller's is as if it did not exist
        released = hold.subject == user.subject and await holds.release(partition)
    elif key is None or len(partition) > 32:
        released = False
    else:  # held by another instance, perhaps: its session is named for its creator
        name = partitions.session_name(partition, key, user.subject)
        released = await partitions.release_elsewhere(db, name)
    if not released:
        raise NotFound(f"no partitioned export {partition[:40]!r} is held")
    return Response(status_code=204)
