"""The keys tokens are checked against, and an identity provider's JWKS kept fresh.

``Verifier`` joins the configured keys (``JWT_SECRET``, ``JWT_PUBLIC_KEY``,
``JWT_JWKS_FILE``) with those fetched from ``JWT_JWKS_URL``. The URL is fetched at start,
again once ``JWT_JWKS_CACHE_SECONDS`` have passed, and at once when a token names a
``kid`` no loaded key has (a rotation needs no restart) — but never more often than
every ``JWT_JWKS_REFRESH_MIN_SECONDS``, so a stream of tokens with made-up ``kid``s
cannot turn into a stream of requests to the identity provider. A failed fetch keeps the
keys it had (logged, with why); one fetch runs at a time, always beside the requests: a
request whose ``kid`` is unknown waits at most ``UNKNOWN_KEY_WAIT_SECONDS`` for it (a
provider answers in milliseconds, so a rotation still passes on its first token), then
gets its 401, so a provider that hangs costs no request more than that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import httpx

from app import auth
from app.auth import Key, Policy, Principal
from app.limits import JWKS_FETCH_SECONDS, MAX_JWKS_BYTES, UNKNOWN_KEY_WAIT_SECONDS
from app.settings import Settings, default

logger = logging.getLogger(__name__)


class Verifier:
    def __init__(
        self,
        static: list[Key],
        policy: Policy,
        *,
        url: str | None = None,
        cache_seconds: float | None = None,
        refresh_min_seconds: float | None = None,
    ) -> None:
        self.static = static
        self.policy = policy
        self.url = url
        self.cache_seconds: float = (
            default("jwt_jwks_cache_seconds") if cache_seconds is None else cache_seconds
        )
        self.refresh_min_seconds: float = (
            default("jwt_jwks_refresh_min_seconds")
            if refresh_min_seconds is None
            else refresh_min_seconds
        )
        self.fetched: list[Key] = []
        self.fetched_at = float("-inf")
        self.attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self._background: asyncio.Future[bool] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier:
        """The configured keys; ``ValueError`` (a start-up error) for a bad one."""
        static: list[Key] = []
        secret = settings.resolved_jwt_secret()
        if secret is not None:
            static += auth.hmac_keys(secret, settings.jwt_algorithms)
        if settings.jwt_public_key:
            static.append(auth.pem_key(settings.jwt_public_key))
        if settings.jwt_jwks_file:
            try:
                document = json.loads(Path(settings.jwt_jwks_file).read_text())
                static += auth.jwks_keys(document)
            except (OSError, ValueError) as exc:
                raise ValueError(f"JWT_JWKS_FILE: {exc}") from None
        public = settings.jwt_public_key or settings.jwt_jwks_file or settings.jwt_jwks_url
        if not static and not settings.jwt_jwks_url:
            raise ValueError("no key to check tokens with: set JWT_SECRET, JWT_PUBLIC_KEY, ...")
        if public and not settings.jwt_audience:
            # An identity provider signs tokens for every application it serves: without
            # an audience, a token issued to any of them would open this one.
            raise ValueError(
                "JWT_AUDIENCE must be set when tokens are checked with an identity "
                "provider's keys (JWT_PUBLIC_KEY, JWT_JWKS_FILE, JWT_JWKS_URL)"
            )
        policy = Policy(
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            max_ttl_seconds=settings.jwt_max_ttl_seconds,
            leeway_seconds=settings.jwt_leeway_seconds,
            max_length=settings.jwt_max_length,
            roles_claim=settings.jwt_roles_claim,
        )
        return cls(
            static,
            policy,
            url=settings.jwt_jwks_url,
            cache_seconds=settings.jwt_jwks_cache_seconds,
            refresh_min_seconds=settings.jwt_jwks_refresh_min_seconds,
        )

    @property
    def keys(self) -> list[Key]:
        return self.static + self.fetched

    async def verify(self, token: str) -> Principal:
        if self.url and time.monotonic() - self.fetched_at > self.cache_seconds:
            self._fetch_beside()  # check with the keys in hand; the new set comes beside
        try:
            return auth.verify(token, self.keys, self.policy)
        except auth.UnknownKey:
            fetch = self._fetch_beside() if self.url else None
            if fetch is None:
                raise
            try:
                async with asyncio.timeout(UNKNOWN_KEY_WAIT_SECONDS):
                    replaced = await asyncio.shield(fetch)
            except TimeoutError:
                raise auth.UnknownKey(
                    "token signed with an unknown key (the key set is being fetched)"
                ) from None
            if not replaced:
                raise
        return auth.verify(token, self.keys, self.policy)

    def _fetch_beside(self) -> asyncio.Future[bool] | None:
        """The fetch under way, or a new one; None when one was tried too recently."""
        if self._background is not None and not self._background.done():
            return self._background
        if time.monotonic() - self.attempted_at < self.refresh_min_seconds:
            return None
        self._background = asyncio.ensure_future(self.refresh())
        return self._background

    async def refresh(self) -> bool:
        """Fetch the JWKS unless one was tried within ``refresh_min_seconds``; True if the
        keys were replaced."""
        async with self._lock:
            if time.monotonic() - self.attempted_at < self.refresh_min_seconds:
                return False
            self.attempted_at = time.monotonic()
            try:
                async with (
                    asyncio.timeout(JWKS_FETCH_SECONDS),
                    httpx.AsyncClient(timeout=JWKS_FETCH_SECONDS) as client,
                    client.stream("GET", str(self.url)) as response,
                ):
                    response.raise_for_status()
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > MAX_JWKS_BYTES:
                            raise ValueError("JWKS document too large")
                    keys = auth.jwks_keys(json.loads(body))
            except (httpx.HTTPError, ValueError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                if isinstance(exc, TimeoutError | httpx.TimeoutException):
                    reason = f"no complete answer within {JWKS_FETCH_SECONDS:g} s"
                logger.warning(
                    "JWT_JWKS_URL: fetch failed, keeping %d keys: %s", len(self.fetched), reason
                )
                return False
            self.fetched, self.fetched_at = keys, time.monotonic()
            logger.info("JWT_JWKS_URL: %d signing keys loaded", len(keys))
            return True
