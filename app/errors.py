"""One error type, one handler, one body shape: RFC 9457 ``application/problem+json``.

Every error the service answers with, whether raised by our code (a ``ProblemError``),
by FastAPI's request validation, by Starlette's routing (404/405), or unexpected (500),
leaves through ``problem_response`` so clients parse exactly one format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.pgtypes import ARROW_REFUSAL_SQLSTATE, ARROW_REFUSALS

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """Base of every error we raise on purpose. Subclasses fix the status and title."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions


class BadRequest(ProblemError):
    status, title = 400, "Bad Request"


class NotFound(ProblemError):
    status, title = 404, "Not Found"


class Unauthorized(ProblemError):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str, **extensions: Any) -> None:
        # RFC 6750 §3: a 401 names the scheme to use. error="invalid_token" tells a client
        # that retrying with the same token is pointless.
        super().__init__(
            detail,
            headers={"WWW-Authenticate": 'Bearer realm="rowstream", error="invalid_token"'},
            **extensions,
        )


class Forbidden(ProblemError):
    """A valid token that may not read this: says which rule, never rows or SQL."""

    status, title = 403, "Forbidden"


class NotAcceptable(ProblemError):
    """No format the route serves satisfies ``Accept`` (the body lists what it serves)."""

    status, title = 406, "Not Acceptable"


class RequestTimeout(ProblemError):
    status, title = 408, "Request Timeout"


class Gone(ProblemError):
    """A partition's snapshot is no longer held: its part cannot be read at that moment
    any more, and rows of another moment are never served instead."""

    status, title = 410, "Gone"


class UnprocessableContent(ProblemError):
    """A parameter that is unknown, malformed, repeated or out of range (``field`` names
    it)."""

    status, title = 422, "Unprocessable Content"


class NotRepresentable(UnprocessableContent):
    """A value of the selection has no form in the format asked for (an infinite timestamp
    in Arrow): another format, or a filter leaving the value out, will do."""


class TooManyRequests(ProblemError):
    """One subject holds more streams than its quota (``STREAM_PER_SUBJECT``)."""

    status, title = 429, "Too Many Requests"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(ProblemError):
    status, title = 503, "Service Unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1, **extensions: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extensions)


class HTTPVersionNotSupported(ProblemError):
    status, title = 505, "HTTP Version Not Supported"


class TooLarge(BadRequest):
    """The standard endpoint would have to load more rows than it is allowed to."""


def problem_body(status: int, detail: str, title: str | None = None, **extensions: Any) -> bytes:
    """The one body shape (RFC 9457), also for what the connection answers before the app
    runs (``connections.py``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }
    return orjson.dumps(body, default=str)


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    return Response(
        problem_body(status, detail, title, **extensions),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status, exc.detail, title=exc.title, headers=exc.headers, **exc.extensions
    )


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return problem_response(422, detail or "invalid request", errors=errors)


def refused(exc: BaseException) -> NotRepresentable | None:
    """The ``NotRepresentable`` that ``exc`` (PostgreSQL's error, or the ADBC driver's
    report of it) reports, if it reports one of ``pgtypes.arrow_guard``'s refusals.

    Read by the error's SQLSTATE (where the exception carries one: asyncpg's, the driver's
    DB-API errors; the driver's stream errors are ``OSError`` without it) and by the
    guard's own words, which PostgreSQL quotes verbatim in whatever language it writes
    the rest of its message (``lc_messages``): never by PostgreSQL's English."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is not None and sqlstate != ARROW_REFUSAL_SQLSTATE:
        return None
    text = str(exc)
    found = next((message for message in ARROW_REFUSALS if message in text), None)
    if found is None:
        return None
    return NotRepresentable(f"the selection holds {found}; choose another format, or filter it out")


async def _on_invalid_value(request: Request, exc: Exception) -> Response:
    # PostgreSQL refused a value that passed our validation (SQLSTATE class 22): the
    # request's fault, so a 4xx, though validation should have caught it first; or a
    # value of the data with no form in the format asked for (``refused``).
    if (refusal := refused(exc)) is not None:
        return await _on_problem(request, refusal)
    logger.warning("invalid value reached the database on %s: %s", request.url.path, exc)
    return problem_response(422, "a parameter value is out of range or malformed")


async def _on_privilege(request: Request, exc: Exception) -> Response:
    # The database role an export runs as (DB_ROLE_CLAIM), or the service's own, may not
    # read this: the database's decision, reported without its SQL.
    logger.warning("permission denied by the database on %s: %s", request.url.path, exc)
    return problem_response(403, "the database refused to let this caller read the dataset")


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "an unexpected error occurred; it has been logged")


def install(
    app: FastAPI,
    unreachable: tuple[type[Exception], ...],
    describe: Callable[[BaseException], str],
) -> None:
    """Route every error to one problem response. ``unreachable``: the exceptions that
    mean the database cannot serve us now (503), described by ``describe`` (both from
    ``database.py``, passed in so that this module depends on nothing of ours)."""

    async def on_database_unavailable(request: Request, exc: Exception) -> Response:
        logger.warning("database unavailable on %s: %s", request.url.path, describe(exc))
        return problem_response(
            503, f"database unavailable: {describe(exc)}", headers={"Retry-After": "1"}
        )

    app.add_exception_handler(ProblemError, _on_problem)
    for exc_type in unreachable:
        app.add_exception_handler(exc_type, on_database_unavailable)
    app.add_exception_handler(asyncpg.exceptions.DataError, _on_invalid_value)
    app.add_exception_handler(asyncpg.exceptions.InsufficientPrivilegeError, _on_privilege)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
