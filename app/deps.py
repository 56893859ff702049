"""FastAPI dependencies and the ``Annotated`` aliases routes use: ``Db``, ``CurrentUser``."""

from __future__ import annotations

from typing import Annotated

import databases
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from app import auth
from app.errors import Unauthorized
from app.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> databases.Database:
    db: databases.Database = request.app.state.db
    return db


class _BearerOrJWT(HTTPBearer):
    """Declares the bearer scheme in OpenAPI (Swagger UI's Authorize button) and verifies.

    FastAPI's ``HTTPBearer`` only accepts the word ``Bearer``; we also accept ``JWT``, and
    any failure is our 401 problem response, never FastAPI's 403.
    """

    async def __call__(self, request: Request) -> auth.Principal:  # type: ignore[override]
        state = request.app.state
        settings: Settings = state.settings
        try:
            token = auth.token_from_header(request.headers.get("authorization"))
            principal = auth.verify(
                token,
                state.jwt_secret,
                algorithms=settings.jwt_algorithms,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                max_length=settings.jwt_max_length,
            )
        except auth.InvalidToken as exc:
            raise Unauthorized(str(exc)) from None
        request.state.subject = principal.subject
        return principal


current_principal = _BearerOrJWT(
    bearerFormat="JWT",
    description="`Authorization: Bearer <token>` (or `JWT <token>`); mint one with "
    "`rowstream token --sub NAME`.",
    auto_error=False,
)


def get_read_db(request: Request) -> databases.Database:
    """The database exports read from (``DATABASE_READ_URL``, else the primary)."""
    db: databases.Database = request.app.state.read_db
    return db


Db = Annotated[databases.Database, Depends(get_db)]
ReadDb = Annotated[databases.Database, Depends(get_read_db)]
AppSettings = Annotated[Settings, Depends(get_settings)]
CurrentUser = Annotated[auth.Principal, Depends(current_principal)]
