"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from app.database import describe, pool_stats, raw_connection
from app.deps import AppMetrics, AppSettings, Datasets, Db, Lag, ReadDb
from app.errors import ProblemError, problem_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: AppMetrics) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz", summary="The database answers and every declared dataset is readable")
async def readyz(
    db: Db, read_db: ReadDb, settings: AppSettings, catalog: Datasets, lag_monitor: Lag
) -> Response:
    pool = pool_stats(db)  # before we take a connection ourselves
    try:
        async with raw_connection(db, acquire_timeout=2.0) as conn:
            await conn.fetchval("SELECT 1")
    except ProblemError as exc:
        return problem_response(503, exc.detail, headers={"Retry-After": "1"})
    except Exception as exc:  # timeout, connection lost mid-query…
        return problem_response(
            503, f"database not ready: {describe(exc)}", headers={"Retry-After": "1"}
        )
    unreadable = await catalog.check_readable(read_db)
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
