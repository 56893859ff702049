"""Signed links: ``links.py`` pure, then ``POST /links`` and its URLs against a real
server, followed with no header by httpx, pandas, polars and DuckDB."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from app import auth, links
from tests.support import Server, running

KEY = b"k" * 32
ALICE = auth.Principal("alice", {"sub": "alice", "roles": ["analyst"], "exp": 1, "iat": 0})


def test_a_signed_query_verifies_and_carries_the_signer() -> None:
    query = links.sign(KEY, "/datasets/x.csv", "limit=5&tenant=acme", ALICE, int(time.time()) + 60)
    principal = links.verify(KEY, "/datasets/x.csv", query, "roles")
    assert principal.subject == "alice" and principal.roles == {"analyst"}
    assert "exp" not in principal.claims  # the token's own lifetime does not travel
    assert links.without_link_parameters(query) == [("limit", "5"), ("tenant", "acme")]


def test_a_query_is_signed_in_one_encoding_that_clients_send_back_unchanged() -> None:
    query = links.sign(KEY, "/d", 'after=["a b"]&t__prefix=é&x=1+2', ALICE, int(time.time()) + 60)
    assert query.startswith("after=%5B%22a%20b%22%5D&t__prefix=%C3%A9&x=1%202&rs_expires=")
    sent = httpx.URL(f"http://h/d?{query}").query.decode()  # what httpx puts on the wire
    assert links.verify(KEY, "/d", sent, "roles").subject == "alice"
    assert links.without_link_parameters(sent)[:2] == [("after", '["a b"]'), ("t__prefix", "é")]


def test_any_change_to_a_signed_link_is_refused() -> None:
    expires = int(time.time()) + 60
    query = links.sign(KEY, "/datasets/x.csv", "limit=5", ALICE, expires)
    signed, _, signature = query.rpartition("&rs_signature=")
    x = "/datasets/x.csv"
    tampered = {
        "path": ("/datasets/y.csv", query),
        "a parameter": (x, query.replace("limit=5", "limit=6")),
        "a parameter added": (x, "tenant=globex&" + query),
        "a parameter appended": (x, query + "&limit=99"),
        "the expiry": (x, query.replace(f"rs_expires={expires}", "rs_expires=9999999999")),
        "the claims": (
            x,
            signed.replace("rs_claims=", "rs_claims=e30") + f"&rs_signature={signature}",
        ),
        "the signature": (x, f"{signed}&rs_signature={signature[:-2]}AA"),
        "no signature": (x, signed),
        "another key": (x, links.sign(b"o" * 32, x, "limit=5", ALICE, expires)),
    }
    for name, (path, changed) in tampered.items():
        with pytest.raises(auth.InvalidToken):
            links.verify(KEY, path, changed, "roles")
            pytest.fail(name)
    expired = links.sign(KEY, "/datasets/x.csv", "", ALICE, int(time.time()) - 1)
    with pytest.raises(auth.InvalidToken, match="expired"):
        links.verify(KEY, "/datasets/x.csv", expired, "roles")
    with pytest.raises(ValueError):
        links.sign(KEY, "/datasets/x.csv", "rs_expires=1", ALICE, expires)


@pytest.fixture(scope="module")
def server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("links") / "server.log"
    with running(db_url, log=log, LINK_MAX_TTL_SECONDS="600") as s:
        yield s


def make_link(server: Server, url: str, ttl: int = 300, **claims: object) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/links",
        json={"url": url, "ttl_seconds": ttl},
        headers=server.headers(**claims),
    )


def test_a_link_is_followed_with_no_header_for_get_and_head(server: Server) -> None:
    created = make_link(server, "/datasets/messages.csv?limit=5&channel=sms")
    assert created.status_code == 201, created.text
    link = created.json()["url"]
    assert link.startswith(server.base_url + "/datasets/messages.csv?limit=5&channel=sms&")
    assert created.json()["expires_at"].endswith("Z")
    assert server.token() not in link  # no token in a URL
    got = httpx.get(link)
    assert got.status_code == 200
    rows = got.text.strip().splitlines()
    assert rows[0].startswith("id,") and len(rows) == 6
    assert all(",sms," in row for row in rows[1:])
    head = httpx.head(link)
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/csv")
    # the same on the standard route and the demo's routes
    for path in ("/datasets/messages?limit=2", "/chunked?limit=2"):
        assert httpx.get(make_link(server, path).json()["url"]).status_code == 200


def test_a_changed_or_expired_link_is_401(server: Server) -> None:
    link = make_link(server, "/datasets/messages.csv?limit=5").json()["url"]
    parts = urlsplit(link)
    changes = [
        link.replace("limit=5", "limit=500"),
        link.replace("/messages.csv", "/messages.ndjson"),
        link + "&fields=id",
        link.replace("rs_expires=", "rs_expires=1"),
        link[:-3],
    ]
    for changed in changes:
        response = httpx.get(changed)
        assert response.status_code == 401, changed
        assert response.headers["content-type"] == "application/problem+json"
    assert httpx.post(f"{server.base_url}{parts.path}?{parts.query}").status_code in (401, 405)
    short = make_link(server, "/datasets/messages.csv?limit=1", ttl=1).json()["url"]
    time.sleep(2.1)
    assert httpx.get(short).status_code == 401


def test_link_requests_are_checked(server: Server) -> None:
    assert (
        httpx.post(f"{server.base_url}/links", json={"url": "/datasets/messages"}).status_code
        == 401
    )
    for url, ttl, status in (
        ("/healthz", 60, 404),
        ("/links", 60, 404),
        ("/datasets/nope.csv", 60, 404),
        ("http://elsewhere.example/datasets/messages.csv", 60, 422),
        ("datasets/messages.csv", 60, 422),
        ("/datasets/messages.csv", 0, 422),
        ("/datasets/messages.csv?rs_expires=1", 60, 422),
    ):
        response = make_link(server, url, ttl)
        assert response.status_code == status, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    # a TTL beyond LINK_MAX_TTL_SECONDS (600 here) is shortened to it
    long = make_link(server, "/datasets/messages.csv", 3600).json()
    expires = int(dict(parse_qsl(urlsplit(long["url"]).query))["rs_expires"])
    assert time.time() + 590 < expires <= time.time() + 601


def test_a_link_never_outlives_the_signers_token(server: Server) -> None:
    token = server.token(ttl=30)
    response = httpx.post(
        f"{server.base_url}/links",
        json={"url": "/datasets/messages.csv", "ttl_seconds": 600},
        headers={"Authorization": f"Bearer {token}"},
    )
    expires = int(
        dict(p.split("=") for p in urlsplit(response.json()["url"]).query.split("&"))["rs_expires"]
    )
    assert expires <= time.time() + 31


def test_the_log_has_no_signature(server: Server) -> None:
    link = make_link(server, "/datasets/messages.csv?limit=1").json()["url"]
    httpx.get(link)
    signature = link.rpartition("rs_signature=")[2]
    assert server.log is not None
    time.sleep(0.2)
    text = server.log.read_text()
    assert "rs_signature=REDACTED" in text
    assert signature not in text


def test_data_tools_follow_links_with_no_header(server: Server, tmp_path: Path) -> None:
    import pandas as pd
    import polars as pl

    def link(path: str) -> str:
        return str(make_link(server, path).json()["url"])

    frame = pd.read_csv(link("/datasets/messages.csv?limit=100"))
    assert list(frame["id"]) == list(range(1, 101))
    # polars' own URL readers (object_store) need Content-Length and byte ranges, which a
    # stream cannot give; its Arrow stream reader and its pyarrow Parquet path read links
    parquet = pl.read_parquet(link("/datasets/messages.parquet?limit=100"), use_pyarrow=True)
    assert parquet["id"].to_list() == list(range(1, 101))
    assert pl.read_ipc_stream(link("/datasets/messages.arrows?limit=10")).height == 10
    ndjson = pl.read_ndjson(
        io.BytesIO(httpx.get(link("/datasets/messages.ndjson?limit=10")).content)
    )
    assert ndjson.height == 10
    from tests.test_dataframes import duckdb_with_httpfs

    con = duckdb_with_httpfs()
    count = con.execute(
        "SELECT count(*), min(id), max(id) FROM read_csv(?)",
        [link("/datasets/messages.csv?limit=250")],
    ).fetchone()
    assert count == (250, 1, 250)


def test_a_link_is_made_for_this_server_whatever_the_host_header_says(server: Server) -> None:
    made = httpx.post(
        f"{server.base_url}/links",
        json={"url": "/datasets/messages.csv?limit=1"},
        headers={**server.headers(), "Host": "evil.example"},
    )
    assert made.status_code == 201, made.text
    assert made.json()["url"].startswith(server.base_url + "/datasets/messages.csv?")


def test_public_url_is_the_links_origin_and_production_requires_it(db_url: str) -> None:
    with running(db_url, PUBLIC_URL="https://data.example.com/") as s:
        made = httpx.post(
            f"{s.base_url}/links", json={"url": "/datasets/messages.csv"}, headers=s.headers()
        )
        assert made.json()["url"].startswith("https://data.example.com/datasets/messages.csv?")
    with running(db_url, ENVIRONMENT="production") as s:
        refused = httpx.post(
            f"{s.base_url}/links", json={"url": "/datasets/messages.csv"}, headers=s.headers()
        )
        assert refused.status_code == 503 and "PUBLIC_URL" in refused.json()["detail"]
