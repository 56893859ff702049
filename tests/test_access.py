"""Who may export what, against a real server and PostgreSQL: a dataset's ``roles``, its
``row_filter`` bound from claims, and ``DB_ROLE_CLAIM`` running each export as a database
role so that row-level security decides, in every format, count and resume."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app import access, auth
from app.datasets import Column, Dataset, RowFilter
from app.errors import Forbidden
from app.pgtypes import Kind, PgType
from app.settings import Settings
from tests.support import Server, run, running, serving

SCHEMA = """
CREATE TABLE orders (id int PRIMARY KEY, tenant text NOT NULL, total int NOT NULL);
INSERT INTO orders SELECT i, CASE WHEN i % 3 = 0 THEN 'globex' ELSE 'acme' END, i * 10
FROM generate_series(1, 300) AS i;
CREATE TABLE invoices (id int PRIMARY KEY, owner text NOT NULL, amount int NOT NULL);
INSERT INTO invoices SELECT i, CASE WHEN i % 2 = 0 THEN 'rs_alice' ELSE 'rs_bob' END, i
FROM generate_series(1, 400) AS i;
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rs_alice') THEN CREATE ROLE rs_alice; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rs_bob') THEN CREATE ROLE rs_bob; END IF;
END $$;
GRANT SELECT ON invoices, orders TO rs_alice, rs_bob;
CREATE TABLE private (id int PRIMARY KEY);
ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON invoices USING (owner = current_user);
"""

# The row-filtered table comes first: start-up's warm-up must pass it by (it cannot be
# read without a caller's claims).
DATASETS = """
[datasets.tenant_orders]
table = "orders"
roles = ["analyst", "admin"]
row_filter = { tenant = "claim:tenant" }

[datasets.orders]
table = "orders"

[datasets.invoices]
table = "invoices"

[datasets.private]
table = "private"

[datasets.whoami]
query = '''SELECT current_user::text AS db_user,
  current_setting('request.jwt.claims', true)::json->>'sub' AS sub'''
"""

STREAM_FORMATS = ("ndjson", "json", "csv", "arrow", "parquet")


@pytest.fixture(scope="module")
def access_url(fresh_database: Callable[..., str]) -> str:
    url: str = fresh_database("rowstream_access", SCHEMA)
    return url


@pytest.fixture(scope="module")
def server(access_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(
        access_url,
        DATASETS,
        tmp_path_factory.mktemp("access"),
        DB_ROLE_CLAIM="db_role",
        DB_ROLES='["rs_alice", "rs_bob"]',
    ) as s:
        yield s


def ids(response: httpx.Response, fmt: str) -> list[int]:
    """The ``id`` column of a response, decoded with each format's own reader."""
    assert response.status_code == 200, response.text[:300]
    body = response.content
    if fmt == "ndjson":
        return [json.loads(line)["id"] for line in body.splitlines()]
    if fmt == "json":
        return [row["id"] for row in json.loads(body)]
    if fmt == "csv":
        return [int(row["id"]) for row in csv.DictReader(io.StringIO(body.decode()))]
    if fmt == "arrow":
        return pa.ipc.open_stream(body).read_all().column("id").to_pylist()
    return pq.read_table(io.BytesIO(body)).column("id").to_pylist()


def export(
    server: Server, name: str, fmt: str, headers: dict[str, str], **params: Any
) -> httpx.Response:
    return httpx.get(
        f"{server.base_url}/datasets/{name}/stream",
        params={"format": fmt, **params},
        headers={**headers, "Prefer": "count=exact"},
        timeout=30,
    )


ANALYST_ACME = {"roles": ["analyst"], "tenant": "acme", "db_role": "rs_alice"}


def test_a_role_is_needed_and_a_refusal_reveals_nothing(server: Server) -> None:
    for claims in ({"db_role": "rs_alice"}, {"roles": ["viewer"], "db_role": "rs_alice"}):
        response = export(server, "tenant_orders", "ndjson", server.headers(**claims))
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert "role" in body["detail"] and "SELECT" not in response.text
        assert "analyst" not in response.text and "admin" not in response.text
        assert "acme" not in response.text and "globex" not in response.text
    # a space-separated scope grants a role too
    scoped = server.headers(scope="read admin", tenant="acme", db_role="rs_alice")
    assert export(server, "tenant_orders", "csv", scoped).status_code == 200


@pytest.mark.parametrize("fmt", STREAM_FORMATS)
def test_a_row_filter_binds_the_claim_in_every_format(server: Server, fmt: str) -> None:
    acme = [i for i in range(1, 301) if i % 3 != 0]
    response = export(server, "tenant_orders", fmt, server.headers(**ANALYST_ACME))
    assert ids(response, fmt) == acme
    assert response.headers["x-total-count"] == str(len(acme))
    globex = export(
        server,
        "tenant_orders",
        fmt,
        server.headers(roles=["admin"], tenant="globex", db_role="rs_bob"),
    )
    assert ids(globex, fmt) == [i for i in range(3, 301, 3)]
    # the caller's own filters narrow further, never widen: ?tenant=globex with acme's claim
    crossed = export(server, "tenant_orders", fmt, server.headers(**ANALYST_ACME), tenant="globex")
    assert ids(crossed, fmt) == []


def test_a_row_filter_holds_on_the_standard_route_head_and_resume(server: Server) -> None:
    headers = {**server.headers(**ANALYST_ACME), "Prefer": "count=exact"}
    standard = httpx.get(f"{server.base_url}/datasets/tenant_orders", headers=headers)
    assert [r["id"] for r in standard.json()] == [i for i in range(1, 301) if i % 3 != 0]
    head = httpx.head(f"{server.base_url}/datasets/tenant_orders.csv", headers=headers)
    assert head.headers["x-total-count"] == "200"
    resumed = export(
        server, "tenant_orders", "ndjson", server.headers(**ANALYST_ACME), after="[100]"
    )
    assert ids(resumed, "ndjson") == [i for i in range(101, 301) if i % 3 != 0]
    missing = export(
        server, "tenant_orders", "csv", server.headers(roles=["analyst"], db_role="rs_alice")
    )
    assert missing.status_code == 403 and "tenant" in missing.json()["detail"]


def test_the_listing_and_openapi_show_only_what_the_caller_may_read(server: Server) -> None:
    def listed(headers: dict[str, str]) -> set[str]:
        response = httpx.get(f"{server.base_url}/datasets", headers=headers)
        return {d["name"] for d in response.json()["datasets"]}

    plain = server.headers(db_role="rs_alice")
    assert "tenant_orders" not in listed(plain)
    assert "tenant_orders" in listed(server.headers(**ANALYST_ACME))

    def paths(headers: dict[str, str]) -> set[str]:
        return set(httpx.get(f"{server.base_url}/openapi.json", headers=headers).json()["paths"])

    assert "/datasets/tenant_orders/stream" not in paths({})
    assert "/datasets/tenant_orders/stream" not in paths(plain)
    assert "/datasets/orders/stream" in paths({})
    assert "/datasets/tenant_orders/stream" in paths(server.headers(**ANALYST_ACME))


@pytest.mark.parametrize("fmt", STREAM_FORMATS)
def test_row_level_security_gives_each_database_role_its_own_rows(server: Server, fmt: str) -> None:
    alice = export(server, "invoices", fmt, server.headers("alice", db_role="rs_alice"))
    bob = export(server, "invoices", fmt, server.headers("bob", db_role="rs_bob"))
    assert ids(alice, fmt) == list(range(2, 401, 2))
    assert ids(bob, fmt) == list(range(1, 401, 2))
    assert alice.headers["x-total-count"] == bob.headers["x-total-count"] == "200"


def test_the_export_runs_as_the_role_with_the_claims_and_nothing_leaks(server: Server) -> None:
    for sub, role in (("alice", "rs_alice"), ("bob", "rs_bob"), ("alice", "rs_alice")):
        response = export(server, "whoami", "ndjson", server.headers(sub, db_role=role))
        assert response.json() == {"db_user": role, "sub": sub}
    standard = httpx.get(
        f"{server.base_url}/datasets/invoices",
        params={"limit": 3},
        headers=server.headers("bob", db_role="rs_bob"),
    )
    assert [r["id"] for r in standard.json()] == [1, 3, 5]


def test_a_table_the_database_role_may_not_read_is_403(server: Server) -> None:
    response = export(server, "private", "csv", server.headers(db_role="rs_alice"))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "SELECT" not in response.text and "private" not in response.json()["detail"]


@pytest.mark.parametrize("claims", [{}, {"db_role": "postgres"}, {"db_role": ["rs_alice"]}])
def test_a_database_role_not_allowed_is_403(server: Server, claims: dict[str, Any]) -> None:
    response = export(server, "orders", "csv", server.headers(**claims))
    assert response.status_code == 403
    assert "database role" in response.json()["detail"]


def test_row_filter_values_and_db_identity_unit() -> None:
    text = PgType("text", "text", "text", Kind.TEXT)
    dataset = Dataset(
        name="d",
        kind="table",
        source='"d"',
        columns=(Column("t", text, False),),
        key=("t",),
        filters=("t",),
        roles=("analyst",),
        row_filter=(RowFilter("t", text, "org.id"),),
    )
    principal = auth.Principal("a", {"org": {"id": 7}}, frozenset({"analyst"}))
    assert access.row_filter_values(dataset, principal) == ("7",)
    for claims in ({"org": {"id": True}}, {"org": {"id": [7]}}, {}):
        with pytest.raises(Forbidden):
            access.row_filter_values(dataset, auth.Principal("a", claims, frozenset({"analyst"})))
    settings = Settings(db_role_claim="r", db_roles=["x"])
    identity = access.db_identity(settings, auth.Principal("a", {"r": "x", "sub": "a"}))
    assert identity is not None and identity.role == "x"
    assert json.loads(identity.claims_json) == {"r": "x", "sub": "a"}
    assert access.db_identity(Settings(), principal) is None


def test_a_bad_row_filter_or_roles_declaration_is_one_line(tmp_path: Path) -> None:
    from app import datasets

    for body, message in (
        ('row_filter = { tenant = "tenant" }', "row_filter"),
        ("roles = []", "roles"),
    ):
        path = tmp_path / "d.toml"
        path.write_text(f'[datasets.x]\ntable = "orders"\n{body}\n')
        with pytest.raises(datasets.ConfigError, match=message):
            datasets.load(path)


def test_database_roles_hold_through_pgbouncer_in_transaction_mode(
    access_url: str, tmp_path: Path
) -> None:
    """Two server connections shared by every export: each export's role and claims are
    local to its transaction, so none leaks into the next one on the same connection."""
    from bench import pooler

    config = tmp_path / "datasets.toml"
    config.write_text(DATASETS)
    with pooler.running({"rowstream_access": access_url}, pool_size=2) as urls:
        env = {
            "DATASETS_FILE": str(config),
            "DATABASE_POOLER": "transaction",
            "DB_ROLE_CLAIM": "db_role",
            "DB_ROLES": '["rs_alice", "rs_bob"]',
        }
        with running(urls["rowstream_access"], **env) as server:

            async def one(i: int) -> tuple[str, list[int]]:
                role = ("rs_alice", "rs_bob")[i % 2]
                fmt = STREAM_FORMATS[i % len(STREAM_FORMATS)]
                async with httpx.AsyncClient(timeout=60) as client:
                    response = await client.get(
                        f"{server.base_url}/datasets/invoices/stream",
                        params={"format": fmt},
                        headers=server.headers(f"u{i}", db_role=role),
                    )
                return role, ids(response, fmt)

            async def many() -> list[tuple[str, list[int]]]:
                return list(await asyncio.gather(*(one(i) for i in range(12))))

            for role, got in run(many()):
                assert got == list(range(2 if role == "rs_alice" else 1, 401, 2)), role
            plain = httpx.get(
                f"{server.base_url}/datasets/whoami/stream",
                headers=server.headers("carol", db_role="rs_bob"),
            )
            assert plain.json() == {"db_user": "rs_bob", "sub": "carol"}


def test_openapi_hides_restricted_datasets_even_with_the_database_down(tmp_path: Path) -> None:
    from bench.pooler import free_port

    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    with serving(dead, DATASETS, tmp_path, bare=True) as server:
        paths = httpx.get(f"{server.base_url}/openapi.json").json()["paths"]
        assert "/datasets/orders/stream" in paths
        assert not [p for p in paths if "tenant_orders" in p]


def test_a_link_its_caller_could_not_use_is_refused_at_signing(server: Server) -> None:
    """With ``DB_ROLE_CLAIM`` set, a token without a usable database role gets the same
    403 from ``POST /links`` that the link would get, not a 201 for a dead link."""
    url = "/datasets/invoices.csv"
    for claims in ({}, {"db_role": "postgres"}):
        refused = httpx.post(
            f"{server.base_url}/links", json={"url": url}, headers=server.headers(**claims)
        )
        assert refused.status_code == 403, refused.text
        assert "database role" in refused.json()["detail"]
    made = httpx.post(
        f"{server.base_url}/links", json={"url": url}, headers=server.headers(db_role="rs_alice")
    )
    assert made.status_code == 201, made.text
    assert httpx.get(made.json()["url"]).status_code == 200
