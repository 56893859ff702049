"""The auth check: unit tests of ``app.auth`` and the 401s every protected route gives."""

import base64
import json
import time

import httpx
import pytest
from jose import jwt

from app import auth
from tests.support import JWT_SECRET, Server

SECRET = "s" * 40


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def test_issue_then_verify_round_trips_the_subject() -> None:
    token = auth.issue(SECRET, "alice", 60)
    principal = auth.verify(token, SECRET)
    assert principal.subject == "alice"
    assert principal.claims["exp"] - principal.claims["iat"] == 60


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Basic dXNlcjpwYXNz", "scheme"),
        ("Bearer", "empty"),
        ("Bearer    ", "empty"),
    ],
)
def test_token_from_header_rejects(header: str | None, message: str) -> None:
    with pytest.raises(auth.InvalidToken, match=message):
        auth.token_from_header(header)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "JWT", "jwt"])
def test_token_from_header_accepts_bearer_and_jwt(scheme: str) -> None:
    assert auth.token_from_header(f"{scheme} abc.def.ghi") == "abc.def.ghi"


def _bad_tokens() -> dict[str, str]:
    now = int(time.time())
    good_claims = {"sub": "x", "exp": now + 60}
    return {
        "expired": auth.issue(SECRET, "x", -10),
        "wrong signature": auth.issue("other-" + SECRET, "x", 60),
        "alg none": _unsigned({"alg": "none", "typ": "JWT"}, good_claims),
        "alg None": _unsigned({"alg": "None", "typ": "JWT"}, good_claims),
        "HS512 not allowed": jwt.encode(good_claims, SECRET, algorithm="HS512"),
        "no exp": jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"),
        "exp null": jwt.encode({"sub": "x", "exp": None}, SECRET, algorithm="HS256"),
        "exp infinite": jwt.encode({"sub": "x", "exp": float("inf")}, SECRET, algorithm="HS256"),
        "exp string": jwt.encode({"sub": "x", "exp": "soon"}, SECRET, algorithm="HS256"),
        "no sub": jwt.encode({"exp": now + 60}, SECRET, algorithm="HS256"),
        "malformed": "not-a-jwt",
        "two parts": "abc.def",
        "garbage base64": "!!!.@@@.###",
        "deeply nested header": _b64(("[" * 5000 + "]" * 5000).encode()) + ".e30.sig",
        "too long": "a" * 5000,
    }


@pytest.mark.parametrize(("name", "token"), sorted(_bad_tokens().items()))
def test_verify_turns_every_bad_token_into_invalid_token(name: str, token: str) -> None:
    with pytest.raises(auth.InvalidToken):
        auth.verify(token, SECRET)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    token = auth.issue(SECRET, "x", 60, audience="rowstream", issuer="us")
    assert auth.verify(token, SECRET, audience="rowstream", issuer="us").subject == "x"
    with pytest.raises(auth.InvalidToken):
        auth.verify(token, SECRET, audience="someone-else")
    with pytest.raises(auth.InvalidToken):
        auth.verify(auth.issue(SECRET, "x", 60), SECRET, audience="rowstream")


PROTECTED = ["/messages", "/messages/stream", "/standard", "/chunked"]


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer " + auth.issue(JWT_SECRET, "x", -5),
        "Bearer " + auth.issue("wrong-" + JWT_SECRET, "x", 60),
        "Bearer " + _unsigned({"alg": "none"}, {"sub": "x", "exp": int(time.time()) + 60}),
        "Bearer " + _b64(("[" * 3000 + "]" * 3000).encode()) + ".e30.x",
    ],
    ids=["missing", "wrong-scheme", "malformed", "expired", "forged", "alg-none", "nested"],
)
def test_protected_routes_answer_401_problem_with_www_authenticate(
    client: httpx.Client, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get(path, params={"limit": 1}, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401 and body["detail"]
    if authorization:
        assert authorization.split(" ", 1)[-1] not in response.text


@pytest.mark.parametrize("scheme", ["Bearer", "JWT"])
def test_valid_token_is_accepted_with_either_scheme(
    client: httpx.Client, server: Server, scheme: str
) -> None:
    response = client.get(
        "/messages",
        params={"limit": 1},
        headers={"Authorization": f"{scheme} {server.token()}"},
    )
    assert response.status_code == 200
    assert response.json()[0]["id"] == 1


def test_openapi_declares_the_bearer_scheme_for_swagger_authorize(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    assert spec["paths"]["/messages/stream"]["get"]["security"]
