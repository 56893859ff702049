"""JWT issuing and verification: the whole auth check, with no FastAPI in it.

python-jose is permissive by default, so every choice is explicit here:
- the algorithm allow-list is always passed (``algorithms=None`` lets the token's header
  pick, python-jose#419; a string would be matched as a substring);
- ``exp`` is required (python-jose's ``require_exp`` defaults to False: a token without
  one would never expire); ``aud``/``iss`` are checked when configured;
- a size cap comes before any parsing;
- *any* exception while decoding becomes ``InvalidToken``. python-jose lets some escape
  ``JWTError``: ``RecursionError`` for a deeply nested header, ``JWKError`` for an odd
  ``alg``, ``TypeError``/``OverflowError`` for ``exp: null`` or ``exp: 1e400``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jose import jwt
from jose.exceptions import ExpiredSignatureError

#: Scheme words accepted before the token in ``Authorization`` (case-insensitive).
SCHEMES = ("bearer", "jwt")


class InvalidToken(Exception):
    """The credential is missing, malformed, expired or forged. The message is safe to show."""


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    claims: dict[str, Any]


def token_from_header(value: str | None) -> str:
    """Extract the token from ``Authorization: Bearer <t>`` (or ``JWT <t>``)."""
    if not value:
        raise InvalidToken("missing Authorization header")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() not in SCHEMES:
        raise InvalidToken("unsupported authorization scheme; use 'Bearer <token>'")
    token = token.strip()
    if not token:
        raise InvalidToken("empty token")
    return token


def issue(
    secret: str,
    subject: str,
    ttl_seconds: int,
    *,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    issued_at = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": issued_at, "exp": issued_at + ttl_seconds}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return str(jwt.encode(claims, secret, algorithm=algorithm))


def verify(
    token: str,
    secret: str,
    *,
    algorithms: Sequence[str] = ("HS256",),
    audience: str | None = None,
    issuer: str | None = None,
    max_length: int = 4096,
) -> Principal:
    if len(token) > max_length:
        raise InvalidToken("token too long")
    options = {
        "require_exp": True,
        "require_sub": True,
        "verify_aud": audience is not None,
        "require_aud": audience is not None,
        "require_iss": issuer is not None,
    }
    try:
        if "crit" in jwt.get_unverified_header(token):
            # RFC 7515 §4.1.11: extensions we do not understand must be rejected;
            # python-jose ignores "crit".
            raise InvalidToken("unsupported critical header")
        claims = jwt.decode(
            token,
            secret,
            algorithms=list(algorithms),
            audience=audience,
            issuer=issuer,
            options=options,
        )
    except InvalidToken:
        raise
    except ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except Exception:
        raise InvalidToken("invalid token") from None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("token has no subject")
    return Principal(subject=subject, claims=claims)
