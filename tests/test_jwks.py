"""An identity provider's JWKS: fetched, used, refetched on rotation, bounded in rate.

A real HTTP server on the loopback serves the key set and counts its requests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app import auth
from app.jwks import Verifier
from tests.support import running


class Provider:
    """Serves ``self.document`` at ``/jwks.json`` and counts the requests."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.requests = 0
        #: Seconds each request waits before it is answered (a provider that hangs).
        self.hang_seconds = 0.0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests += 1
                time.sleep(provider.hang_seconds)
                body = json.dumps(provider.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, *keys: tuple[str, Any]) -> None:
        self.document = {"keys": [jwk(kid, private) for kid, private in keys]}


def jwk(kid: str, private: Any) -> dict[str, Any]:
    public = private.public_key()
    cls = jwt.algorithms.RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else None
    cls = cls or jwt.algorithms.ECAlgorithm
    return {**cls.to_jwk(public, as_dict=True), "kid": kid}


def token(private: Any, kid: str, sub: str = "alice", **claims: Any) -> str:
    alg = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + 300, "aud": AUDIENCE, **claims}
    return jwt.encode(payload, private, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    try:
        yield p
    finally:
        p.server.shutdown()


AUDIENCE = "rowstream-tests"
RSA_1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_1 = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.anyio
async def test_a_rotation_needs_no_restart_and_bogus_kids_cost_one_fetch(
    provider: Provider,
) -> None:
    provider.publish(("k1", RSA_1))
    verifier = Verifier(
        [], auth.Policy(audience=AUDIENCE), url=provider.url, refresh_min_seconds=0.5
    )
    assert await verifier.refresh()
    assert (await verifier.verify(token(RSA_1, "k1"))).subject == "alice"
    assert provider.requests == 1
    # the provider rotates: k2 (RSA) and e1 (EC) replace k1
    provider.publish(("k2", RSA_2), ("e1", EC_1))
    await asyncio.sleep(0.6)
    assert (await verifier.verify(token(RSA_2, "k2"))).subject == "alice"
    assert (await verifier.verify(token(EC_1, "e1"))).subject == "alice"
    assert provider.requests == 2
    # a flood of made-up kids: at most one fetch per interval, all 401
    for i in range(200):
        with pytest.raises(auth.InvalidToken):
            await verifier.verify(token(RSA_2, f"bogus-{i}"))
    assert provider.requests == 2
    # the retired key no longer verifies once the set has moved on
    with pytest.raises(auth.InvalidToken):
        await verifier.verify(token(RSA_1, "k1"))


@pytest.mark.anyio
async def test_a_provider_that_fails_keeps_the_keys_it_had(provider: Provider) -> None:
    provider.publish(("k1", RSA_1))
    verifier = Verifier([], auth.Policy(audience=AUDIENCE), url=provider.url, refresh_min_seconds=0)
    await verifier.refresh()
    provider.document = {"not": "a jwks"}
    assert not await verifier.refresh()
    assert (await verifier.verify(token(RSA_1, "k1"))).subject == "alice"


def _keys_from(provider: Provider, *, refresh_min_seconds: str) -> dict[str, str]:
    """A server's settings for checking tokens with ``provider``'s keys alone."""
    return {
        "JWT_JWKS_URL": provider.url,
        "JWT_JWKS_REFRESH_MIN_SECONDS": refresh_min_seconds,
        "JWT_SECRET": "",
        "JWT_AUDIENCE": AUDIENCE,
    }


def test_the_service_checks_tokens_against_a_jwks_url(db_url: str, provider: Provider) -> None:
    provider.publish(("k1", RSA_1))
    env = _keys_from(provider, refresh_min_seconds="0.2")
    with running(db_url, **env) as server:
        url = f"{server.base_url}/datasets/messages/stream"
        ok = httpx.get(
            url, params={"limit": 2}, headers={"Authorization": f"Bearer {token(RSA_1, 'k1')}"}
        )
        assert ok.status_code == 200 and len(ok.text.splitlines()) == 2
        provider.publish(("k2", RSA_2))
        time.sleep(0.3)
        rotated = {"Authorization": f"Bearer {token(RSA_2, 'k2')}"}
        assert httpx.get(url, params={"limit": 1}, headers=rotated).status_code == 200
        # with no JWT_SECRET there is no HMAC key: an HS256 token is refused
        hmac_token = auth.issue("s" * 40, "eve", 60)
        refused = httpx.get(url, headers={"Authorization": f"Bearer {hmac_token}"})
        assert refused.status_code == 401
        # signed links have no key either (no LINK_SECRET, no JWT_SECRET): said clearly
        link = httpx.post(
            f"{server.base_url}/links", json={"url": "/datasets/messages.csv"}, headers=rotated
        )
        assert link.status_code == 503 and "LINK_SECRET" in link.json()["detail"]


def test_a_public_key_in_pem_is_enough(db_url: str) -> None:
    pem = (
        EC_1.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with running(db_url, JWT_PUBLIC_KEY=pem, JWT_SECRET="", JWT_AUDIENCE=AUDIENCE) as server:
        now = int(time.time())
        good = jwt.encode({"sub": "a", "exp": now + 60, "aud": AUDIENCE}, EC_1, algorithm="ES256")
        other = jwt.encode(
            {"sub": "a", "exp": now + 60, "aud": "another-app"}, EC_1, algorithm="ES256"
        )
        url = f"{server.base_url}/datasets/messages?limit=1"
        assert httpx.get(url, headers={"Authorization": f"Bearer {good}"}).status_code == 200
        forever = jwt.encode({"sub": "a", "exp": 10**30, "aud": AUDIENCE}, EC_1, algorithm="ES256")
        for refused in (forever, other):
            assert httpx.get(url, headers={"Authorization": f"Bearer {refused}"}).status_code == 401


def test_public_keys_without_an_audience_stop_the_service_at_start() -> None:
    from app.settings import Settings

    pem = (
        EC_1.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ValueError, match="JWT_AUDIENCE"):
        Verifier.from_settings(Settings(jwt_public_key=pem))


def test_a_jwks_file_is_read_at_start(tmp_path: Any) -> None:
    from app.settings import Settings

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk("f1", EC_1)]}))
    verifier = Verifier.from_settings(
        Settings(jwt_jwks_file=path, jwt_audience=AUDIENCE, jwt_secret=None, data_dir=tmp_path)
    )
    assert [k.kid for k in verifier.static if k.kid] == ["f1"]
    assert auth.verify(token(EC_1, "f1"), verifier.keys, verifier.policy).subject == "alice"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="JWT_JWKS_FILE"):
        Verifier.from_settings(Settings(jwt_jwks_file=path, jwt_audience=AUDIENCE))


def test_a_hanging_jwks_url_costs_an_unknown_kid_no_more_than_a_moment(
    db_url: str, provider: Provider, tmp_path: Any
) -> None:
    """The provider answers at start, then stops answering: a token with an unknown
    ``kid`` gets its 401 at once, not after the 5 s fetch timeout, and the log says why
    the fetch failed."""
    provider.publish(("k1", RSA_1))
    env = _keys_from(provider, refresh_min_seconds="0")
    log = tmp_path / "server.log"
    with running(db_url, log=log, **env) as server:
        url = f"{server.base_url}/datasets/messages/stream"
        ok = {"Authorization": f"Bearer {token(RSA_1, 'k1')}"}
        assert httpx.get(url, params={"limit": 1}, headers=ok).status_code == 200
        provider.hang_seconds = 8.0
        for i in range(3):
            unknown = {"Authorization": f"Bearer {token(RSA_2, f'new-{i}')}"}
            started = time.monotonic()
            refused = httpx.get(url, params={"limit": 1}, headers=unknown, timeout=10)
            assert refused.status_code == 401
            assert time.monotonic() - started < 1.0
        # the known key still works meanwhile, and the failed fetch is logged with why
        assert httpx.get(url, params={"limit": 1}, headers=ok).status_code == 200
        time.sleep(5.5)
    assert "fetch failed, keeping 1 keys: no complete answer within 5 s" in log.read_text()
