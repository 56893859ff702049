"""The auth check: unit tests of ``app.auth`` and the 401s every protected route gives."""

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

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
        "expired": auth.issue(SECRET, "x", -120),  # beyond the default 30 s leeway
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
    policy = auth.Policy(audience="rowstream", issuer="us")
    assert auth.verify(token, SECRET, policy).subject == "x"
    with pytest.raises(auth.InvalidToken):
        auth.verify(token, SECRET, auth.Policy(audience="someone-else"))
    with pytest.raises(auth.InvalidToken):
        auth.verify(auth.issue(SECRET, "x", 60), SECRET, auth.Policy(audience="rowstream"))
    # ``aud`` may be an array holding ours
    listed = auth.issue(SECRET, "x", 60, claims={"aud": ["other", "rowstream"]})
    assert auth.verify(listed, SECRET, auth.Policy(audience="rowstream")).subject == "x"


PROTECTED = ["/messages", "/messages/stream", "/standard", "/chunked"]


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer " + auth.issue(JWT_SECRET, "x", -120),
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


# --- Asymmetric keys, JWKS, lifetimes ---------------------------------------------------


def _pem(private: object) -> str:
    public = private.public_key()  # type: ignore[attr-defined]
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _private_keys() -> dict[str, object]:
    return {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }


PRIVATE = _private_keys()
OTHER = _private_keys()


def _claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 300, **extra}


def _sign(claims: dict[str, object], alg: str, **headers: str) -> str:
    return jwt.encode(claims, PRIVATE[alg], algorithm=alg, headers=headers or None)  # type: ignore[arg-type]


def _hmac_token(header: dict[str, object], claims: dict[str, object], key: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@pytest.mark.parametrize("alg", sorted(PRIVATE))
def test_a_public_key_verifies_its_algorithm_and_nothing_else(alg: str) -> None:
    key = auth.pem_key(_pem(PRIVATE[alg]))
    assert key.algorithm == alg
    good = jwt.encode(_claims(), PRIVATE[alg], algorithm=alg)  # type: ignore[arg-type]
    assert auth.verify(good, [key]).subject == "alice"
    pem = _pem(PRIVATE[alg]).encode()
    hostile = {
        "another key of the same type": jwt.encode(
            _claims(),
            OTHER[alg],  # type: ignore[arg-type]
            algorithm=alg,
        ),
        "HS256 keyed with the public key PEM": _hmac_token(
            {"alg": "HS256", "typ": "JWT"}, _claims(), pem
        ),
        "HS256 keyed with the secret of the service": _hmac_token(
            {"alg": "HS256"}, _claims(), SECRET.encode()
        ),
        "alg none": _unsigned({"alg": "none"}, _claims()),
        "header names another algorithm": good.replace(
            good.split(".")[0], _b64(json.dumps({"alg": "PS256"}).encode())
        ),
        "exp 10^30": jwt.encode(
            _claims(exp=10**30),
            PRIVATE[alg],  # type: ignore[arg-type]
            algorithm=alg,
        ),
        "iat 30 years ahead": jwt.encode(
            _claims(iat=int(time.time()) + 30 * 365 * 86400),
            PRIVATE[alg],  # type: ignore[arg-type]
            algorithm=alg,
        ),
        "signature of another token": ".".join(
            [*good.split(".")[:2], _sign(_claims(sub="eve"), alg).split(".")[2]]
        ),
    }
    for name, token in hostile.items():
        with pytest.raises(auth.InvalidToken):
            auth.verify(token, [key])
            pytest.fail(name)


def test_lifetime_limits_with_the_secret() -> None:
    policy = auth.Policy(max_ttl_seconds=3600, leeway_seconds=30)
    auth.verify(auth.issue(SECRET, "x", 3600), SECRET, policy)
    with pytest.raises(auth.InvalidToken, match="lifetime"):
        auth.verify(auth.issue(SECRET, "x", 3600 + 60), SECRET, policy)
    with pytest.raises(auth.InvalidToken, match="lifetime"):
        auth.verify(jwt.encode({"sub": "x", "exp": 10**30}, SECRET), SECRET)
    future = int(time.time()) + 30 * 365 * 86400
    with pytest.raises(auth.InvalidToken, match="future"):
        auth.verify(
            jwt.encode({"sub": "x", "exp": time.time() + 60, "iat": future}, SECRET), SECRET
        )
    # within the leeway both ways
    skewed = {"sub": "x", "exp": int(time.time()) + 60, "iat": int(time.time()) + 20}
    assert auth.verify(jwt.encode(skewed, SECRET), SECRET, policy).subject == "x"


def _jwk(private: object, kid: str, **extra: str) -> dict[str, object]:
    public = private.public_key()  # type: ignore[attr-defined]
    algorithm = {
        rsa.RSAPublicKey: jwt.algorithms.RSAAlgorithm,
        ec.EllipticCurvePublicKey: jwt.algorithms.ECAlgorithm,
        ed25519.Ed25519PublicKey: jwt.algorithms.OKPAlgorithm,
    }
    for kind, cls in algorithm.items():
        if isinstance(public, kind):
            return {**cls.to_jwk(public, as_dict=True), "kid": kid, **extra}  # type: ignore[attr-defined]
    raise AssertionError(public)


def test_jwks_keys_pick_by_kid_and_the_algorithm_comes_from_the_key() -> None:
    document = {
        "keys": [
            _jwk(PRIVATE["RS256"], "r1"),
            _jwk(PRIVATE["ES256"], "e1"),
            _jwk(PRIVATE["EdDSA"], "d1"),
            _jwk(OTHER["RS256"], "enc", use="enc"),  # not for signatures: skipped
            {"kty": "oct", "k": _b64(b"k" * 32), "kid": "shared"},  # a secret: skipped
            {"kty": "RSA", "kid": "broken"},  # malformed: skipped
        ]
    }
    keys = auth.jwks_keys(document)
    assert {(k.kid, k.algorithm) for k in keys} == {
        ("r1", "RS256"),
        ("e1", "ES256"),
        ("d1", "EdDSA"),
    }
    for alg, kid in (("RS256", "r1"), ("ES256", "e1"), ("EdDSA", "d1")):
        token = jwt.encode(_claims(), PRIVATE[alg], algorithm=alg, headers={"kid": kid})  # type: ignore[arg-type]
        assert auth.verify(token, keys).subject == "alice"
    unknown = jwt.encode(_claims(), PRIVATE["RS256"], algorithm="RS256", headers={"kid": "r9"})  # type: ignore[arg-type]
    with pytest.raises(auth.UnknownKey):
        auth.verify(unknown, keys)
    # a kid naming a key of another type: the ES256 token claims the RSA key's kid
    crossed = jwt.encode(_claims(), PRIVATE["ES256"], algorithm="ES256", headers={"kid": "r1"})  # type: ignore[arg-type]
    with pytest.raises(auth.InvalidToken, match="algorithm"):
        auth.verify(crossed, keys)
    # HS256 "signed" with a published key's JWK text, naming its kid
    confused = _hmac_token(
        {"alg": "HS256", "kid": "r1"}, _claims(), json.dumps(document["keys"][0]).encode()
    )
    with pytest.raises(auth.InvalidToken):
        auth.verify(confused, keys)


def test_roles_come_from_the_configured_claim_and_scope() -> None:
    claims = {"roles": ["analyst", 3], "scope": "read:orders admin", "realm": {"roles": ["ops"]}}
    assert auth.roles_of(claims, "roles") == {"analyst", "read:orders", "admin"}
    assert auth.roles_of(claims, "realm.roles") == {"ops", "read:orders", "admin"}
    assert auth.roles_of({"roles": "a b"}, "roles") == {"a", "b"}
    assert auth.roles_of({}, "roles") == frozenset()
