"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from app.database import describe, pool_stats, raw_connection
from app.deps import Db
from app.errors import ProblemError, problem_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz", summary="The database is reachable and its schema is at head")
async def readyz(request: Request, db: Db) -> Response:
    head: str = request.app.state.schema_head
    pool = pool_stats(db)  # before we take a connection ourselves
    try:
        async with raw_connection(db, acquire_timeout=2.0) as conn:
            current = await conn.fetchval("SELECT version_num FROM alembic_version")
    except ProblemError as exc:
        return problem_response(503, exc.detail, headers={"Retry-After": "1"})
    except Exception as exc:  # undefined table, timeout, connection lost mid-query…
        return problem_response(
            503, f"database not ready: {describe(exc)}", headers={"Retry-After": "1"}
        )
    if current != head:
        return problem_response(
            503,
            f"schema at {current}, expected {head}: run 'rowstream migrate'",
            headers={"Retry-After": "5"},
        )
    body = {"status": "ready", "schema": current, "pool": pool}
    read_db = request.app.state.read_db
    if read_db is not db or request.app.state.settings.read_max_lag_seconds is not None:
        settings = request.app.state.settings
        try:
            lag = await request.app.state.lag.lag()
            await request.app.state.lag.admit(settings.read_max_lag_seconds)
        except ProblemError as exc:
            return problem_response(503, f"read side: {exc.detail}", headers=exc.headers)
        except Exception as exc:
            return problem_response(
                503, f"read side not ready: {describe(exc)}", headers={"Retry-After": "1"}
            )
        body["read"] = {"lag_seconds": lag, "pool": pool_stats(read_db)}
    return JSONResponse(body)
