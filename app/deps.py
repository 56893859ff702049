"""The lifespan's typed state and the ``Annotated`` dependencies routes use to reach it
(``async``, so FastAPI calls them inline rather than in a worker thread).

The lifespan (``main.py``) opens the resources and yields a ``State``; Starlette gives
each request a shallow copy of it as ``request.state``. Routes never read it directly:
they take ``Db``, ``ReadDb``, ``AppSettings``, ``Datasets``, ``Limiter``, ``Budget``,
``Lag``, ``ExportSources`` (the four a data route reads from) or ``CurrentUser``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypedDict, cast

import databases
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from app import auth, links
from app.adbc import DriverPool
from app.capacity import MemoryBudget, StreamLimiter
from app.catalog import Catalog
from app.errors import Unauthorized
from app.jwks import Verifier
from app.observability import Metrics
from app.partitions import Holds
from app.replica import LagMonitor
from app.settings import Settings


class State(TypedDict):
    settings: Settings
    #: The keys tokens are checked against (``jwks.py``).
    verifier: Verifier
    #: The key of signed links (``links.py``); None: signed links are off.
    link_key: bytes | None
    #: The primary, and where exports read (``DATABASE_READ_URL``; else the primary).
    db: databases.Database
    read_db: databases.Database
    lag: LagMonitor
    limiter: StreamLimiter
    #: What the standard route's bodies may hold at once (``STANDARD_MEMORY_BUDGET_MB``).
    budget: MemoryBudget
    metrics: Metrics
    catalog: Catalog
    #: The ADBC driver's connections for Arrow and Parquet (``adbc.py``); None: not used.
    drivers: DriverPool | None
    #: The partitioned exports this instance holds open (``partitions.py``).
    holds: Holds


def _state(request: Request) -> State:
    return cast(State, request.state._state)


async def get_settings(request: Request) -> Settings:
    return _state(request)["settings"]


async def get_db(request: Request) -> databases.Database:
    return _state(request)["db"]


async def get_read_db(request: Request) -> databases.Database:
    """The database exports read from (``DATABASE_READ_URL``, else the primary)."""
    return _state(request)["read_db"]


async def get_catalog(request: Request) -> Catalog:
    return _state(request)["catalog"]


async def get_limiter(request: Request) -> StreamLimiter:
    return _state(request)["limiter"]


async def get_budget(request: Request) -> MemoryBudget:
    return _state(request)["budget"]


async def get_lag(request: Request) -> LagMonitor:
    return _state(request)["lag"]


async def get_link_key(request: Request) -> bytes | None:
    return _state(request)["link_key"]


async def get_metrics(request: Request) -> Metrics:
    return _state(request)["metrics"]


class _BearerOrJWT(HTTPBearer):
    """Declares the bearer scheme in OpenAPI (Swagger UI's Authorize button) and verifies
    the token, or, on a request with no ``Authorization``, a signed link's signature.

    FastAPI's ``HTTPBearer`` only accepts the word ``Bearer``; we also accept ``JWT``, and
    any failure is our 401 problem response, never FastAPI's 403.
    """

    async def __call__(self, request: Request) -> auth.Principal:  # type: ignore[override]
        state = _state(request)
        query = request.scope["query_string"].decode("latin-1")
        authorization = request.headers.get("authorization")
        try:
            if authorization is None and links.is_signed(query):
                if state["link_key"] is None:
                    raise auth.InvalidToken("signed links are off on this service")
                if request.method not in ("GET", "HEAD"):
                    raise auth.InvalidToken("a signed link is for GET (and HEAD)")
                principal = links.verify(
                    state["link_key"],
                    request.scope["path"],
                    query,
                    state["settings"].jwt_roles_claim,
                )
                request.state.signed_link = True
            else:
                token = auth.token_from_header(authorization)
                principal = await state["verifier"].verify(token)
        except auth.InvalidToken as exc:
            refusal = Unauthorized(str(exc))
            if "content-length" in request.headers or "transfer-encoding" in request.headers:
                # its body is not read: the connection ends with this answer
                refusal.headers["Connection"] = "close"
            raise refusal from None
        request.state.subject = principal.subject
        return principal


current_principal = _BearerOrJWT(
    bearerFormat="JWT",
    description="`Authorization: Bearer <token>` (or `JWT <token>`); mint one with "
    "`rowstream token --sub NAME`. A signed link (`POST /links`) needs no header.",
    auto_error=False,
)

Db = Annotated[databases.Database, Depends(get_db)]
ReadDb = Annotated[databases.Database, Depends(get_read_db)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Datasets = Annotated[Catalog, Depends(get_catalog)]
Limiter = Annotated[StreamLimiter, Depends(get_limiter)]
Budget = Annotated[MemoryBudget, Depends(get_budget)]
Lag = Annotated[LagMonitor, Depends(get_lag)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]
LinkKey = Annotated[bytes | None, Depends(get_link_key)]
CurrentUser = Annotated[auth.Principal, Depends(current_principal)]


@dataclass(frozen=True)
class Sources:
    """What both data routes read from: the read database, the settings, the datasets, the
    replica's lag, the ADBC driver's connections and the partitioned exports held."""

    db: databases.Database
    settings: Settings
    catalog: Catalog
    lag: LagMonitor
    drivers: DriverPool | None
    holds: Holds


async def get_sources(
    request: Request, db: ReadDb, settings: AppSettings, catalog: Datasets, lag: Lag
) -> Sources:
    state = _state(request)
    return Sources(db, settings, catalog, lag, state["drivers"], state["holds"])


ExportSources = Annotated[Sources, Depends(get_sources)]
