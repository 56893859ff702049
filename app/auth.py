"""JWT issuing and verification: the whole token check, with no FastAPI in it.

Built on PyJWT (python-jose, used before, has no EdDSA and is barely maintained). Every
choice is explicit here:
- each key carries its one algorithm, taken from the key (an HMAC secret: the configured
  ``JWT_ALGORITHMS``; RSA: RS256, or the JWK's ``alg``; EC: ES256/ES384/ES512 by curve;
  Ed25519: EdDSA). A token's header only picks among the keys (``kid``, then ``alg``);
  the signature is checked with the key's algorithm alone, so an HS256 token "signed"
  with a public key, or ``alg: none``, matches no key;
- ``exp`` and ``sub`` are required; ``exp``, ``iat`` and ``nbf`` are finite JSON numbers
  (not numeric strings, ``NaN`` or ``Infinity``, which Python's JSON reader accepts);
  ``exp`` may lie at most ``max_ttl_seconds`` ahead and ``iat`` not in the future (both
  beyond ``leeway_seconds``); ``aud`` (a string or an array) must name the configured
  audience, and a token that names an audience when none is configured is refused (it
  was made for another service); ``iss`` is checked when configured;
- a size cap comes before any parsing, a ``crit`` header is refused (RFC 7515 §4.1.11),
  and *any* exception while decoding becomes ``InvalidToken``.

``jwks.py`` fetches an identity provider's keys; this module only uses them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from app.settings import default

#: Scheme words accepted before the token in ``Authorization`` (case-insensitive).
SCHEMES = ("bearer", "jwt")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class InvalidToken(Exception):
    """The credential is missing, malformed, expired or forged. The message is safe to show."""


class UnknownKey(InvalidToken):
    """The token names a ``kid`` no loaded key has (a JWKS may have rotated: refetch)."""


@dataclass(frozen=True)
class Key:
    """One verification key and the one algorithm it is used with."""

    key: Any
    algorithm: str
    kid: str | None = None


@dataclass(frozen=True)
class Policy:
    """What a valid token must satisfy besides its signature."""

    audience: str | None = None
    issuer: str | None = None
    max_ttl_seconds: float = field(default_factory=lambda: default("jwt_max_ttl_seconds"))
    leeway_seconds: float = field(default_factory=lambda: default("jwt_leeway_seconds"))
    max_length: int = field(default_factory=lambda: default("jwt_max_length"))
    #: The claim holding the caller's roles: a list of strings, or one space-separated.
    roles_claim: str = field(default_factory=lambda: default("jwt_roles_claim"))


@dataclass(frozen=True)
class Principal:
    """Who a verified token (or signed link) speaks for."""

    subject: str
    claims: dict[str, Any]
    roles: frozenset[str] = field(default_factory=frozenset)


def hmac_keys(secret: str, algorithms: Iterable[str] = ("HS256",)) -> list[Key]:
    bad = [a for a in algorithms if a not in HMAC_ALGORITHMS]
    if bad:
        raise ValueError(f"JWT_ALGORITHMS: {bad[0]!r} is not an HMAC algorithm ({HMAC_ALGORITHMS})")
    return [Key(secret.encode(), a) for a in algorithms]


def _algorithm_of(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _EC_ALGORITHMS:
            raise ValueError(f"unsupported elliptic curve {public_key.curve.name}")
        return _EC_ALGORITHMS[public_key.curve.name]
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(f"unsupported public key type {type(public_key).__name__}")


def pem_key(pem: str) -> Key:
    """``JWT_PUBLIC_KEY``: an RSA, EC or Ed25519 public key in PEM."""
    try:
        public_key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ValueError(f"JWT_PUBLIC_KEY: not a PEM public key ({exc})") from None
    return Key(public_key, _algorithm_of(public_key))


def jwks_keys(document: Any) -> list[Key]:
    """The signing keys of a JWKS document (RFC 7517); keys marked for encryption, of an
    unknown type or malformed are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS is a JSON object with a 'keys' array")
    keys = []
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            # The algorithm: the JWK's ``alg``, else its type's (RSA: RS256, EC: by curve,
            # OKP: EdDSA); a key whose ``alg`` does not fit its type fails to parse.
            parsed = jwt.PyJWK(entry)
        except Exception:
            continue
        if parsed.algorithm_name in HMAC_ALGORITHMS:
            continue  # a shared secret has no place in a published key set
        kid = entry.get("kid")
        keys.append(Key(parsed.key, parsed.algorithm_name, kid if isinstance(kid, str) else None))
    return keys


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
    claims: dict[str, Any] | None = None,
    now: float | None = None,
) -> str:
    issued_at = int(now if now is not None else time.time())
    payload: dict[str, Any] = {**(claims or {})}
    payload |= {"sub": subject, "iat": issued_at, "exp": issued_at + ttl_seconds}
    if audience:
        payload["aud"] = audience
    if issuer:
        payload["iss"] = issuer
    return jwt.encode(payload, secret, algorithm=algorithm)


def claim_at(claims: dict[str, Any], name: str) -> Any:
    """The claim ``name``; a dotted name reaches into objects (``realm_access.roles``)."""
    value: Any = claims
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def roles_of(claims: dict[str, Any], roles_claim: str) -> frozenset[str]:
    """The roles a token grants: ``roles_claim`` (a list of strings, or a space-separated
    string; see ``claim_at``) and the OAuth ``scope`` string."""
    found: set[str] = set()
    for source in (claim_at(claims, roles_claim), claims.get("scope")):
        if isinstance(source, str):
            found.update(source.split())
        elif isinstance(source, list):
            found.update(r for r in source if isinstance(r, str))
    return frozenset(found)


def _candidates(keys: Sequence[Key], header: dict[str, Any]) -> list[Key]:
    kid, alg = header.get("kid"), header.get("alg")
    if kid is not None and any(k.kid is not None for k in keys):
        named = [k for k in keys if k.kid == kid]
        if not named:
            raise UnknownKey("token signed with an unknown key")
        keys = named
    matching = [k for k in keys if k.algorithm == alg]
    if not matching:
        raise InvalidToken("token algorithm does not match its key")
    return matching


def verify(token: str, keys: str | Sequence[Key], policy: Policy | None = None) -> Principal:
    """The principal of a valid ``token`` under ``keys`` (a secret: HS256) and ``policy``."""
    policy = policy or Policy()
    if isinstance(keys, str):
        keys = hmac_keys(keys)
    if len(token) > policy.max_length:
        raise InvalidToken("token too long")
    try:
        header = jwt.get_unverified_header(token)
        if "crit" in header:
            raise InvalidToken("unsupported critical header")
        claims = None
        candidates = _candidates(keys, header)
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    audience=policy.audience,
                    issuer=policy.issuer,
                    leeway=policy.leeway_seconds,
                    options={
                        "require": ["exp", "sub"],
                        "verify_aud": policy.audience is not None,
                        "verify_iat": False,  # checked below, with a clearer message
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue
        if claims is None:
            # every key of the token's algorithm refused its signature: made with another
            # key (a development key of another folder, another service's secret)
            raise InvalidToken("token signed with another key")
        if policy.audience is None and "aud" in claims:
            raise InvalidToken("token is for another audience (this service sets none)")
        _check_times(claims, policy, time.time())
    except InvalidToken:
        raise
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except Exception:
        raise InvalidToken("invalid token") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("token has no subject")
    return Principal(subject, claims, roles_of(claims, policy.roles_claim))


def _check_times(claims: dict[str, Any], policy: Policy, now: float) -> None:
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if name in claims and not (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ):
            raise InvalidToken(f"token's {name} is not a finite number")
    exp, iat = claims["exp"], claims.get("iat")
    if exp - now > policy.max_ttl_seconds + policy.leeway_seconds:
        raise InvalidToken("token lifetime exceeds the maximum this service accepts")
    if iat is not None and iat > now + policy.leeway_seconds:
        raise InvalidToken("token issued in the future")


def claims_json(principal: Principal) -> str:
    """The claims as ``request.jwt.claims`` carries them to PostgreSQL (PostgREST's name)."""
    return json.dumps(principal.claims, separators=(",", ":"), ensure_ascii=False)
