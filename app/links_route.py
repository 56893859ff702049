"""``POST /links``: a signed link to a data route, for tools that cannot send a header.

The token is checked from the request's head before a byte of its body is read (FastAPI
reads a declared body before any dependency runs, so the body is read here, by hand):
a request without a valid token costs the service one header parse, not a connection held
for as long as its sender trickles a body. The link's origin is ``PUBLIC_URL`` (in
development: the address the request reached), never the ``Host`` header, which the
caller writes.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect

from app import access, links
from app.deps import AppSettings, CurrentUser, Datasets, LinkKey, ReadDb
from app.errors import NotFound, RequestTimeout, ServiceUnavailable, UnprocessableContent
from app.limits import DEFAULT_LINK_TTL_SECONDS, MAX_LINK_URL_CHARS
from app.routes import dataset_at
from app.settings import Settings

router = APIRouter()


class LinkRequest(BaseModel):
    url: str = Field(
        pattern=r"^/([^/].*)?$",  # a path (not "//host": that names another server)
        max_length=MAX_LINK_URL_CHARS,
        description="The path and query of a data route",
        examples=["/datasets/messages.csv?limit=10"],
    )
    ttl_seconds: int = Field(
        default=DEFAULT_LINK_TTL_SECONDS,
        ge=1,
        description="Seconds the link lives: at most LINK_MAX_TTL_SECONDS and the token's own "
        "remaining life (a longer one is shortened: `expires_at` says when it ends)",
    )


class Link(BaseModel):
    url: str
    expires_at: str


@router.post(
    "/links",
    tags=["datasets"],
    status_code=201,
    summary="A signed link to a data route (no Authorization header needed)",
    responses={
        401: {"description": "Missing, invalid or expired token (checked before the body)"},
        403: {"description": "The caller may not read that dataset"},
        404: {"description": "No data route at that path"},
        408: {"description": "The body did not arrive within BODY_TIMEOUT_SECONDS"},
        413: {"description": "The body is larger than MAX_BODY_BYTES"},
        422: {
            "description": "A body that is not a JSON object of this shape, not a path, or a "
            "query that already has link parameters"
        },
        503: {
            "description": "Signed links are off (no LINK_SECRET or JWT_SECRET; in "
            "production, no PUBLIC_URL)"
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": LinkRequest.model_json_schema()}},
        }
    },
)
async def create_link(
    request: Request,
    user: CurrentUser,
    key: LinkKey,
    settings: AppSettings,
    catalog: Datasets,
    db: ReadDb,
) -> Link:
    if key is None:
        raise ServiceUnavailable("signed links are off: set LINK_SECRET (or JWT_SECRET)")
    at = origin(request, settings)
    body = await _link_request(request)
    parts = urlsplit(body.url)  # a path and query: LinkRequest's pattern says so
    path = unquote(parts.path)
    loaded = await catalog.all(db)
    name = dataset_at(request.app.router, path)
    if name is None or name not in loaded:
        raise NotFound(f"url: no data route at {path[:80]!r} (GET /datasets lists them)")
    access.check_may_read(loaded[name], user)
    access.db_identity(settings, user)  # a link its caller could not use is not signed
    ttl_seconds = min(body.ttl_seconds, settings.link_max_ttl_seconds)
    expires_at = links.expiry(ttl_seconds, user)
    try:
        query = links.sign(key, path, parts.query, user, expires_at)
    except ValueError as exc:
        raise UnprocessableContent(f"url: {exc}", field="url") from None
    return Link(url=f"{at}{quote(path)}?{query}", expires_at=links.expiry_text(expires_at))


async def _link_request(request: Request) -> LinkRequest:
    """The body, read now that the caller is known (bounded by ``MAX_BODY_BYTES`` and
    ``BODY_TIMEOUT_SECONDS`` in the connection), checked as FastAPI would have."""
    try:
        raw = await request.body()
    except ClientDisconnect:  # the connection cut it off (BODY_TIMEOUT_SECONDS) or left
        raise RequestTimeout("the request's body did not arrive") from None
    try:
        return LinkRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def origin(request: Request, settings: Settings) -> str:
    """``PUBLIC_URL``; in development without it, the address the request arrived at
    (the socket's, not the ``Host`` header's)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    if settings.environment != "development":
        raise ServiceUnavailable(
            "signed links need PUBLIC_URL in production (the origin links are made for)"
        )
    host, port = request.scope.get("server") or (settings.host, settings.port)
    if ":" in host:
        host = f"[{host}]"
    return f"{request.url.scheme}://{host}:{port}"
