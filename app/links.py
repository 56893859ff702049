"""Signed links: a data URL that carries its own short-lived permission.

A browser, ``pd.read_csv(url)`` or DuckDB cannot always send ``Authorization``. ``POST
/links`` turns the path and query of a data route into a URL that is accepted instead of
a token, with the signer's subject, roles and claims, until it expires (at most
``LINK_MAX_TTL_SECONDS``, and never after the signer's own token). The URL ends with

    …&rs_expires=<unix seconds>&rs_claims=<base64url JSON>&rs_signature=<base64url HMAC>

and the HMAC-SHA256 covers the method, the path and every byte of the query before
``&rs_signature=``, so any change to the path, a parameter, the expiry or the claims is
a 401. A link may also carry ``rs_part``, a part of a partitioned export
(``partitions.py``): its snapshot and key range, signed like the rest; such a link, and
only such a link, may be followed by one unsigned parameter, ``&after=``, the key to resume
after (ANDed with the signed range, so it narrows the part and never widens it). A
``HEAD`` is checked as the ``GET`` it precedes (DuckDB sends one first). No token is ever
put in a URL: the claims are signed, not secret, and stop working when the link expires.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from app import auth
from app.auth import InvalidToken, Principal

EXPIRES, CLAIMS, SIGNATURE, PART = "rs_expires", "rs_claims", "rs_signature", "rs_part"
PARAMETERS = (EXPIRES, CLAIMS, SIGNATURE, PART)
#: What may follow the signature, unsigned: the key a dropped download resumes after.
RESUME = "after"
#: Claims a link does not carry over: the token's own lifetime and audience.
_DROPPED = ("exp", "iat", "nbf", "jti", "aud")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, path: str, signed_query: str) -> str:
    message = f"GET\n{path}\n{signed_query}".encode()
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def sign(
    key: bytes,
    path: str,
    query: str,
    principal: Principal,
    expires_at: int,
    *,
    part: str | None = None,
) -> str:
    """``query`` (as the client gave it) with the link parameters appended, signed for
    ``path`` (percent-decoded, as the server sees it); ``part``: a partitioned export's
    part (``partitions.Part.encode()``)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(name in PARAMETERS for name, _ in pairs):
        raise ValueError(f"the URL already has link parameters ({', '.join(PARAMETERS)})")
    # One percent-encoding of the query, signed and returned as it is: clients send an
    # encoded query as they got it, so the bytes the server checks are the bytes signed.
    query = urlencode(pairs, quote_via=quote)
    claims = {k: v for k, v in principal.claims.items() if k not in _DROPPED}
    carried = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    extra = urlencode({EXPIRES: expires_at, CLAIMS: carried, **({PART: part} if part else {})})
    signed_query = f"{query}&{extra}" if query else extra
    signature = _mac(key, path, signed_query)
    return f"{signed_query}&{SIGNATURE}={signature}"


def expiry(seconds: float, principal: Principal) -> int:
    """The Unix time a link made now for ``seconds`` expires: never after the signer's
    token (its ``exp``)."""
    expires_at = int(time.time() + seconds)
    token_expiry: Any = principal.claims.get("exp")
    if isinstance(token_expiry, int | float):
        expires_at = min(expires_at, int(token_expiry))
    return expires_at


def expiry_text(expires_at: int) -> str:
    """``expires_at`` as an RFC 3339 UTC time (``…Z``)."""
    when = datetime.datetime.fromtimestamp(expires_at, datetime.UTC)
    return when.isoformat().replace("+00:00", "Z")


def is_signed(query: str) -> bool:
    return f"{SIGNATURE}=" in query


def verify(key: bytes, path: str, query: str, roles_claim: str) -> Principal:
    """The signer's principal, if ``path?query`` is a link signed with ``key`` that has
    not expired; ``InvalidToken`` otherwise."""
    signed_query, marker, signature = query.rpartition(f"&{SIGNATURE}=")
    signature, _, resumed = signature.partition("&")
    if not marker or "=" in signature or not _resume_only(resumed):
        raise InvalidToken("malformed signed link")
    if not hmac.compare_digest(_mac(key, path, signed_query), signature):
        raise InvalidToken("the signed link's signature does not match")
    fields = dict(parse_qsl(signed_query, keep_blank_values=True))
    if resumed and PART not in fields:
        # only a part's range bounds what after= may reach; any other link (limit=1000)
        # would be paged through by it
        raise InvalidToken("only a part of a partitioned export resumes with after=")
    try:
        expires_at = int(fields[EXPIRES])
        claims: Any = json.loads(_unb64(fields[CLAIMS]))
    except (KeyError, ValueError):
        raise InvalidToken("malformed signed link") from None
    if time.time() >= expires_at:
        raise InvalidToken("the signed link has expired")
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("malformed signed link")
    return Principal(subject, claims, auth.roles_of(claims, roles_claim))


def _resume_only(query: str) -> bool:
    """Whether what follows a signature is nothing, or one ``after=``."""
    return not query or (query.startswith(f"{RESUME}=") and "&" not in query)


def signed_part(query: str) -> str | None:
    """The ``rs_part`` of a link's signed query (call once ``verify`` has passed)."""
    signed_query = query.rpartition(f"&{SIGNATURE}=")[0]
    return dict(parse_qsl(signed_query, keep_blank_values=True)).get(PART)


def without_link_parameters(query: str) -> list[tuple[str, str]]:
    """The query's parameters less the link's own (what the route itself reads)."""
    return [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in PARAMETERS]
