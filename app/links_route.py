"""``POST /links``: a signed link to a data route, for tools that cannot send a header."""

from __future__ import annotations

import datetime
import time
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app import access, links
from app.deps import AppSettings, CurrentUser, Datasets, LinkKey, ReadDb
from app.errors import NotFound, ServiceUnavailable
from app.formats import SUFFIXES
from app.params import UnprocessableContent
from app.routes import DEMO_PATHS

router = APIRouter()


class LinkRequest(BaseModel):
    url: str = Field(
        pattern=r"^/([^/].*)?$",  # a path (not "//host": that names another server)
        max_length=8192,
        description="The path and query of a data route",
        examples=["/datasets/messages.csv?limit=10"],
    )
    ttl_seconds: int = Field(
        default=600,
        ge=1,
        description="Seconds the link lives: at most LINK_MAX_TTL_SECONDS and the token's own "
        "remaining life (a longer one is shortened: `expires_at` says when it ends)",
    )


class Link(BaseModel):
    url: str
    expires_at: str


def dataset_of(path: str, names: list[str]) -> str | None:
    """The dataset a data route's path reads, or None when it is not a data route."""
    if path in DEMO_PATHS:
        return "messages" if "messages" in names else None
    rest = path.removeprefix("/datasets/")
    if rest == path:
        return None
    for name in names:
        if rest in (name, f"{name}/stream") or rest in (f"{name}.{s}" for s in SUFFIXES):
            return name
    return None


@router.post(
    "/links",
    tags=["datasets"],
    status_code=201,
    summary="A signed link to a data route (no Authorization header needed)",
    responses={
        400: {"description": "A body that is not JSON"},
        401: {"description": "Missing, invalid or expired token"},
        403: {"description": "The caller may not read that dataset"},
        404: {"description": "No data route at that path"},
        422: {"description": "Not a path, or a query that already has link parameters"},
        503: {"description": "Signed links are off (no LINK_SECRET or JWT_SECRET)"},
    },
)
async def create_link(
    body: LinkRequest,
    request: Request,
    user: CurrentUser,
    key: LinkKey,
    settings: AppSettings,
    catalog: Datasets,
    db: ReadDb,
) -> Link:
    if key is None:
        raise ServiceUnavailable("signed links are off: set LINK_SECRET (or JWT_SECRET)")
    parts = urlsplit(body.url)  # a path and query: LinkRequest's pattern says so
    path = unquote(parts.path)
    loaded = await catalog.all(db)
    name = dataset_of(path, list(loaded))
    if name is None:
        raise NotFound(f"url: no data route at {path[:80]!r} (GET /datasets lists them)")
    access.check_may_read(loaded[name], user)
    ttl_seconds = min(body.ttl_seconds, settings.link_max_ttl_seconds)
    expires_at = int(time.time() + ttl_seconds)
    token_expiry: Any = user.claims.get("exp")
    if isinstance(token_expiry, int | float):
        expires_at = min(expires_at, int(token_expiry))  # never outlives the signer's token
    try:
        query = links.sign(key, path, parts.query, user, expires_at)
    except ValueError as exc:
        raise UnprocessableContent(f"url: {exc}", field="url") from None
    base = str(request.base_url).rstrip("/")
    when = datetime.datetime.fromtimestamp(expires_at, datetime.UTC)
    return Link(
        url=f"{base}{quote(path)}?{query}", expires_at=when.isoformat().replace("+00:00", "Z")
    )
