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

from app import __version__, database, errors, health, messages, migrate
from app.capacity import StreamLimiter
from app.observability import Metrics, RequestLog
from app.replica import LagMonitor
from app.settings import Settings

logger = logging.getLogger(__name__)

DESCRIPTION = """
Serve the `messages` table over HTTP two ways, for comparison:

* **standard** — `GET /messages` (alias `/standard`): every row loaded, then sent as one
  JSON array;
* **streaming** — `GET /messages/stream` (alias `/chunked`): rows read from a server-side
  cursor in batches and sent as NDJSON while the query runs.

Every data route needs `Authorization: Bearer <JWT>` (`/healthz`, `/readyz`, `/metrics` and
these docs do not); mint a token
with `rowstream token --sub you` and paste it into **Authorize**. Errors are
`application/problem+json` (RFC 9457).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with database.database_url(settings) as url:
            app.state.jwt_secret = settings.resolved_jwt_secret()
            app.state.schema_head = migrate.head()
            db = database.create(settings, url)
            await db.connect()
            app.state.db = db
            read_url = settings.database_read_url or url
            read_db = db if read_url == url else database.create(settings, read_url)
            if read_db is not db:
                await read_db.connect()
            app.state.read_db = read_db
            app.state.lag = LagMonitor(read_db)
            logger.info("database pool open on %s", database.safe_location(url))
            limiter = StreamLimiter(
                settings.stream_capacity,
                settings.stream_per_subject,
                settings.stream_admission_wait,
            )
            app.state.limiter = limiter
            app.state.metrics = Metrics(
                active_streams=lambda: limiter.active,
                pool_in_use=lambda: database.pool_stats(db)["in_use"],
                read_lag=lambda: app.state.lag.last,
            )
            try:
                yield
            finally:
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
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(RequestLog)
    app.include_router(health.router)
    app.include_router(messages.router)
    return app
