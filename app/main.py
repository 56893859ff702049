"""The application factory. Nothing happens at import: ``create_app()`` builds the app,
its lifespan opens (and closes) what it needs, and routes reach it through dependencies.

Run it with ``rowstream serve``, or ``uvicorn --factory app.main:create_app``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import (
    __version__,
    adbc,
    database,
    demo,
    errors,
    health,
    links_route,
    not_found,
    openapi,
    partitions_route,
    redirects,
    routes,
    ui,
    warmup,
)
from app.capacity import MemoryBudget, StreamLimiter
from app.catalog import Catalog
from app.deps import State
from app.docs_headers import DocsHeaders
from app.jwks import Verifier
from app.limits import MAX_PARTS
from app.observability import Metrics, RequestLog
from app.partitions import Holds
from app.replica import LagMonitor
from app.settings import Settings

logger = logging.getLogger(__name__)

DESCRIPTION = """
Serve the tables, views and saved queries declared in `datasets.toml` over HTTP, each two
ways:

* **standard**: `GET /datasets/{name}`: every row loaded, then sent as one response;
* **streaming**: `GET /datasets/{name}/stream` (and `/datasets/{name}.ndjson`, `.csv`,
  `.json`, `.arrows`): rows read from a server-side cursor (or `COPY`) in batches and
  sent while the query runs.

`GET /datasets` lists the ones you may read, with their columns, key and filters. Every
data route needs `Authorization: Bearer <JWT>`, or a signed link from `POST /links`
(`/healthz`, `/readyz`, the web page at `/` and these docs do not; `/metrics` takes its own
`METRICS_TOKEN`); mint a token with `rowstream token --sub you` and paste it into
**Authorize**. Errors are `application/problem+json` (RFC 9457).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings``; the datasets file is read (and checked) here."""
    settings = settings or Settings()
    settings.check_production()  # here too: the app may run under plain uvicorn
    catalog = Catalog(
        demo.declared(settings.resolved_datasets_file()), settings.readiness_cache_seconds
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        with database.database_url(settings) as url:
            verifier = Verifier.from_settings(settings)
            if verifier.url:
                await verifier.refresh()
            link_key = settings.resolved_link_secret()
            db = database.create(settings, url)
            await db.connect()
            read_url = settings.database_read_url or url
            read_db = db if read_url == url else database.create(settings, read_url)
            if read_db is not db:
                await read_db.connect()
            lag = LagMonitor(read_db)
            logger.info("database pool open on %s", database.safe_location(url))
            limiter = StreamLimiter(
                settings.stream_capacity,
                settings.stream_per_subject,
                settings.stream_admission_wait_seconds,
            )
            holds = Holds()
            metrics = Metrics(
                active_streams=lambda: limiter.active,
                pool_in_use=lambda: database.pool_stats(db)["in_use"],
                read_lag=lambda: lag.last,
                partition_holds=lambda: len(holds),
            )
            drivers = adbc.pool_for(settings, read_url)
            try:
                await catalog.load(read_db, at_start=True)
                if catalog.loaded:
                    await warmup.warm_up(read_db, catalog.loaded, settings, drivers)
                yield State(
                    settings=settings,
                    verifier=verifier,
                    link_key=link_key,
                    db=db,
                    read_db=read_db,
                    lag=lag,
                    limiter=limiter,
                    budget=MemoryBudget(settings.standard_memory_budget_mb << 20),
                    metrics=metrics,
                    catalog=catalog,
                    drivers=drivers,
                    holds=holds,
                )
            finally:
                await holds.close()
                if drivers is not None:
                    await drivers.close()
                if read_db is not db:
                    await database.close(read_db)
                await database.close(db)

    # Swagger UI's JavaScript and CSS are served by the app itself, not from a CDN.
    app = FastAPIOffline(
        title="rowstream",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app, database.UNREACHABLE, database.describe)
    app.add_middleware(RequestLog)
    app.add_middleware(DocsHeaders)
    # Routes go straight onto the app's router: FastAPI builds an included router's routes
    # lazily, on the first request that reaches them (measured: +30 ms on the first export).
    app.router.routes.extend(health.router.routes)
    app.router.routes.extend(routes.router.routes)
    app.router.routes.extend(links_route.router.routes)
    app.router.routes.extend(partitions_route.router.routes)
    app.router.routes.extend(ui.router.routes)
    for name, declared in catalog.config.datasets.items():
        routes.add_dataset(app.router, name, declared.description)
    if demo.NAME in catalog.config.datasets:
        demo.add_routes(app.router)
    not_found.install(app.router)  # where no route answers under /datasets/ …
    redirects.install(app.router)  # … unless its trailing-slash twin does
    roles = {name: tuple(d.roles or ()) for name, d in catalog.config.datasets.items()}
    # the partitions route's parts are read at once: at most STREAM_PER_SUBJECT of them
    max_parts = min(MAX_PARTS, settings.stream_per_subject)
    openapi.install(app, lambda: catalog.loaded, roles, max_parts)
    _prepare_routes(app)
    return app


def _prepare_routes(app: FastAPI) -> None:
    """Do now what FastAPI does on each route's first request: it reads the endpoint's
    source lines for its error context (``inspect.getsourcelines``, measured at 15 ms).
    A private function, so only where it exists."""
    from fastapi import routing

    extract = getattr(routing, "_extract_endpoint_context", None)
    if extract is None:
        return
    for route in app.router.routes:
        if isinstance(route, routing.APIRoute):
            extract(route.endpoint)
