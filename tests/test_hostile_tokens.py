"""A hostile-token corpus against every protected route: always 401 (or 431 for an
oversized header), never 5xx, and the token never shows up in a body or a log line."""

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support import JWT_SECRET, Server, start_server, stop_server

AUD, ISS = "rowstream-api", "rowstream-tests"
PROTECTED = ["/messages", "/messages/stream", "/standard", "/chunked"]


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def raw_token(header: Any, payload: Any, signature: str = "") -> str:
    h = header if isinstance(header, str) else json.dumps(header)
    p = payload if isinstance(payload, str) else json.dumps(payload)
    return f"{b64(h)}.{b64(p)}.{signature}"


def signed(
    claims: dict[str, Any],
    *,
    key: str = JWT_SECRET,
    alg: str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    return str(jwt.encode(claims, key, algorithm=alg, headers=headers))


def corpus() -> dict[str, str]:
    now = int(time.time())
    good = {"sub": "mallory", "exp": now + 300, "aud": AUD, "iss": ISS}
    valid = signed(good)
    head, payload, sig = valid.split(".")
    nested = "[" * 1000 + "]" * 1000
    cases = {
        "alg none": raw_token({"alg": "none", "typ": "JWT"}, good),
        "alg None": raw_token({"alg": "None"}, good),
        "alg NONE": raw_token({"alg": "NONE"}, good),
        "alg nOnE with signature": raw_token({"alg": "nOnE"}, good, sig),
        "alg empty": raw_token({"alg": ""}, good, sig),
        "alg missing": raw_token({"typ": "JWT"}, good, sig),
        "RS256 header, HMAC signature": raw_token({"alg": "RS256"}, good, sig),
        "ES256 header": raw_token({"alg": "ES256"}, good, sig),
        "HS384": signed(good, alg="HS384"),
        "HS512": signed(good, alg="HS512"),
        "alg list": raw_token({"alg": ["HS256"]}, good, sig),
        "expired": signed({**good, "exp": now - 120}),  # beyond the default 30 s leeway
        "exp 30 years ahead": signed({**good, "exp": now + 10**9}),
        "exp 10^30": signed({**good, "exp": 10**30}),
        "iat 30 years ahead": signed({**good, "iat": now + 10**9}),
        "exp null": signed({**good, "exp": None}),
        "exp string": signed({**good, "exp": "tomorrow"}),
        "exp infinite": signed({**good, "exp": float("inf")}),
        "exp 1e400": f"{head}.{b64(json.dumps(good).replace(str(now + 300), '1e400'))}.{sig}",
        "exp missing": signed({k: v for k, v in good.items() if k != "exp"}),
        "nbf in the future": signed({**good, "nbf": now + 3600}),
        "nbf a numeric string": signed({**good, "nbf": str(now - 10)}),
        "nbf NaN": signed({**good, "nbf": float("nan")}),
        "iat NaN": signed({**good, "iat": float("nan")}),
        "iat -Infinity": signed({**good, "iat": float("-inf")}),
        "iat a numeric string": signed({**good, "iat": str(now)}),
        "exp NaN": signed({**good, "exp": float("nan")}),
        "wrong aud": signed({**good, "aud": "someone-else"}),
        "missing aud": signed({k: v for k, v in good.items() if k != "aud"}),
        "aud list without ours": signed({**good, "aud": ["a", "b"]}),
        "wrong iss": signed({**good, "iss": "evil"}),
        "missing iss": signed({k: v for k, v in good.items() if k != "iss"}),
        "missing sub": signed({k: v for k, v in good.items() if k != "sub"}),
        "sub number": signed({**good, "sub": 12345}),
        "sub empty": signed({**good, "sub": ""}),
        "sub object": signed({**good, "sub": {"admin": True}}),
        "bad signature": f"{head}.{payload}.{sig[:-3]}{'BBB' if sig.endswith('AAA') else 'AAA'}",
        "other secret": signed(good, key="another-secret-" + "z" * 40),
        "signature stripped": f"{head}.{payload}.",
        "truncated": valid[:-7],
        "header only": head,
        "extra dots": valid + ".extra",
        "two parts": f"{head}.{payload}",
        "four empty parts": "...",
        "non-base64": "!!!.###.$$$",
        "non-JSON header": f"{b64('hello')}.{payload}.{sig}",
        "header is an array": raw_token("[]", good, sig),
        "header nested 1000 deep": raw_token(nested, good, sig),
        "header nested 5000 deep": raw_token("[" * 5000 + "]" * 5000, good, sig),
        "payload nested 5000 deep": raw_token({"alg": "HS256"}, "[" * 5000 + "]" * 5000, sig),
        "payload is an array": signed_raw_payload("[1, 2, 3]"),
        "payload is a string": signed_raw_payload('"mallory"'),
        "crit header": signed(good, headers={"crit": ["exp"]}),
        "unicode": "é.ü.ß",
        "just above the size cap": "a" * 4097,
        "huge": "a" * 60_000,
        "sql in sub (forged)": raw_token({"alg": "HS256"}, {**good, "sub": "x' OR 1=1--"}, sig),
        "kid traversal with wrong key": signed(good, key="k" * 40, headers={"kid": "../../x"}),
        "jku to elsewhere, wrong key": signed(
            good, key="k" * 40, headers={"jku": "http://127.0.0.1:1/keys"}
        ),
    }
    return cases


def signed_raw_payload(payload: str) -> str:
    """A correctly signed HS256 token whose payload is not a JSON object."""
    import hashlib
    import hmac

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{b64(payload)}"
    mac = hmac.new(JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@pytest.fixture
def strict(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    s = start_server(db_url, log=log, JWT_AUDIENCE=AUD, JWT_ISSUER=ISS)
    try:
        yield s, log
    finally:
        stop_server(s)


def test_every_hostile_token_is_401_on_every_route_and_never_echoed(
    strict: tuple[Server, Path],
) -> None:
    server, log = strict
    statuses: dict[str, set[int]] = {}
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for name, token in corpus().items():
            for path in PROTECTED:
                for scheme in ("Bearer", "JWT"):
                    r = client.get(
                        path,
                        params={"limit": 1},
                        headers={"Authorization": f"{scheme} {token}".encode()},
                    )
                    statuses.setdefault(name, set()).add(r.status_code)
                    assert r.status_code in (401, 431), (name, path, r.status_code, r.text[:300])
                    if r.status_code == 401:
                        assert r.headers["www-authenticate"].startswith("Bearer")
                        assert r.headers["content-type"] == "application/problem+json"
                    if len(token) >= 8:
                        assert token not in r.text, name
        # a valid token with the configured audience and issuer does get in
        ok = signed({"sub": "alice", "exp": int(time.time()) + 60, "aud": AUD, "iss": ISS})
        r = client.get("/chunked", params={"limit": 1}, headers={"Authorization": f"Bearer {ok}"})
        assert r.status_code == 200
    stop_server(server)  # flush the log
    text = log.read_text()
    assert '"status":401' in text  # the requests were logged …
    for name, token in corpus().items():
        if len(token) >= 8:
            assert token not in text, f"token {name!r} appears in the log"
    assert "Traceback" not in text


def test_a_token_for_another_audience_is_refused_when_none_is_configured(
    server: Server,
) -> None:
    """The shared server sets no ``JWT_AUDIENCE``: a token made for another service (it
    carries an ``aud``) is refused; one without ``aud`` is accepted as before."""
    now = int(time.time())
    base = {"sub": "alice", "exp": now + 60}
    for aud in ("other-service", ["other-service"], []):
        token = signed({**base, "aud": aud})
        r = httpx.get(
            f"{server.base_url}/chunked?limit=1", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 401, (aud, r.text)
        assert "audience" in r.json()["detail"]
    r = httpx.get(
        f"{server.base_url}/chunked?limit=1", headers={"Authorization": f"Bearer {signed(base)}"}
    )
    assert r.status_code == 200
