"""Liveness and readiness.

Each step of ``/readyz`` (a connection, ``SELECT 1``, the datasets' probe) is bounded by
``READINESS_PROBE_SECONDS``, whatever the database does. Data requests get
``COMMAND_TIMEOUT_SECONDS`` (60 s) per statement because a real export scans; the probe
plans a one-row read, which takes milliseconds unless something holds it up, and what
holds it up (a lock, a server that stopped answering) holds up data requests the same
way. A probe allowed 60 s would outlast the orchestrator's own probe timeout (Kubernetes'
default, which deploy/k8s keeps, is 1 s), so its verdict would never be read, while each
unanswered probe kept a pooled connection. Two seconds: far longer than any healthy plan,
short enough to be read; never longer than the statement timeout itself, which data
requests would hit first.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header
from starlette.responses import JSONResponse, Response

from app import auth
from app.database import describe, pool_stats, raw_connection
from app.deps import AppMetrics, AppSettings, Datasets, Db, Lag, ReadDb
from app.errors import NotFound, ProblemError, Unauthorized, problem_response
from app.limits import READINESS_PROBE_SECONDS

router = APIRouter(tags=["health"])
AuthorizationHeader = Annotated[str | None, Header(include_in_schema=False)]


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/metrics",
    summary="Prometheus metrics (`Authorization: Bearer $METRICS_TOKEN`)",
    response_class=Response,
)
async def metrics(
    metrics: AppMetrics, settings: AppSettings, authorization: AuthorizationHeader = None
) -> Response:
    """``METRICS_TOKEN`` set: that bearer token is required. Unset: open in development
    only; elsewhere 404, as if there were none (docs/security.md: scraping in Kubernetes)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    if settings.metrics_token:
        try:
            given = auth.token_from_header(authorization).encode()
        except auth.InvalidToken:
            given = b""
        if not hmac.compare_digest(given, settings.metrics_token.encode()):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <METRICS_TOKEN>'")
    elif settings.environment != "development":
        raise NotFound("no /metrics: set METRICS_TOKEN to scrape it")

    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz", summary="The database answers and every declared dataset is readable")
async def readyz(
    db: Db, read_db: ReadDb, settings: AppSettings, catalog: Datasets, lag_monitor: Lag
) -> Response:
    pool = pool_stats(db)  # before we take a connection ourselves
    within = min(READINESS_PROBE_SECONDS, settings.command_timeout_seconds)
    try:
        async with raw_connection(db, acquire_timeout=within) as conn:
            # A client-side bound is enough here: SELECT 1 waits for no lock, only for a
            # server that stopped answering (which no server-side timeout would end).
            await conn.fetchval("SELECT 1", timeout=within)
    except ProblemError as exc:
        return problem_response(503, exc.detail, headers={"Retry-After": "1"})
    except Exception as exc:  # timeout, connection lost mid-query…
        return problem_response(
            503, f"database not ready: {describe(exc)}", headers={"Retry-After": "1"}
        )
    unreadable = await catalog.check_readable(read_db, within=within)
    if unreadable is not None:
        return problem_response(503, unreadable, headers={"Retry-After": "5"})
    body = {"status": "ready", "datasets": len(catalog.names), "pool": pool}
    if read_db is not db or settings.read_max_lag_seconds is not None:
        try:
            lag = await lag_monitor.lag()
            await lag_monitor.admit(settings.read_max_lag_seconds)
        except ProblemError as exc:
            return problem_response(503, f"read side: {exc.detail}", headers=exc.headers)
        except Exception as exc:
            return problem_response(
                503, f"read side not ready: {describe(exc)}", headers={"Retry-After": "1"}
            )
        body["read"] = {"lag_seconds": lag, "pool": pool_stats(read_db)}
    return JSONResponse(body)
