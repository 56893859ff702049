"""A new user's first steps against their own database, as real subprocesses: nothing is
created there, ``datasets init`` declares its tables, ``datasets`` lists them, and the
service serves them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx

from tests.support import JWT_SECRET, execute, run, start_server, stop_server

OWN = (
    'CREATE TABLE "Customers" (id bigint PRIMARY KEY, name text NOT NULL, "e-mail" text)',
    """INSERT INTO "Customers" SELECT i, 'c' || i, NULL FROM generate_series(1, 25) AS i""",
    "CREATE TABLE audit_log (at timestamptz, what text)",
    "CREATE VIEW named AS SELECT id, name FROM \"Customers\" WHERE name <> ''",
    'CREATE VIEW joined AS SELECT c.id, a.what FROM "Customers" c, audit_log a',
    'CREATE MATERIALIZED VIEW stats AS SELECT id, length(name) AS n FROM "Customers"',
    "CREATE UNIQUE INDEX ON stats (id)",
)


def rowstream(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd,
        env={**os.environ, "JWT_SECRET": JWT_SECRET, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _relations(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND relkind IN ('r', 'v', 'm', 'p')"
        )
        return {r["relname"] for r in rows}
    finally:
        await conn.close()


def test_a_users_database_is_read_never_changed(fresh_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database("rowstream_own")
    run(execute(url, *OWN))
    before = run(_relations(url))
    env = {"DATABASE_URL": url}

    # no datasets.toml and no demo table: one line saying what to do, nothing created
    done = rowstream("serve", "--demo", "--port", "1", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "the demo is not installed there" in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rowstream: no datasets.toml here") and "datasets init" in last
    assert run(_relations(url)) == before

    # datasets init: every table with a primary key declared, the rest commented out
    done = rowstream("datasets", "init", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "datasets.toml").read_text()
    assert '[datasets."Customers"]' in text and '# [datasets."audit_log"]' in text
    # views: one over a single table showing its primary key gets it suggested, commented
    # out (a name is no proof); a join gets what to add; a materialized view's unique index
    # is suggested too
    assert '# [datasets."named"]\n# table = "named"\n# key = ["id"]' in text
    assert "'named' is a view showing 'Customers'" in text
    assert '# [datasets."joined"]' in text and "'joined' is a view: declare key" in text
    assert '# [datasets."stats"]\n# table = "stats"\n# key = ["id"]' in text
    again = rowstream("datasets", "init", cwd=tmp_path, env=env)
    assert again.returncode == 2 and "--force" in again.stderr

    listed = rowstream("datasets", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "Customers  (table; key: id)" in listed.stdout
    assert "  e-mail  text" in listed.stdout

    server = start_server(url, DATASETS_FILE=str(tmp_path / "datasets.toml"))
    try:
        headers = server.headers()
        names = httpx.get(f"{server.base_url}/datasets", headers=headers).json()["datasets"]
        assert [d["name"] for d in names] == ["Customers"]
        rows = httpx.get(f"{server.base_url}/datasets/Customers.csv", headers=headers).text
        assert rows.splitlines()[:2] == ["id,name,e-mail", "1,c1,"]
        assert httpx.get(f"{server.base_url}/messages", headers=headers).status_code == 404
    finally:
        stop_server(server)
    assert run(_relations(url)) == before


def test_a_bad_datasets_file_stops_serve_with_one_line(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "datasets.toml").write_text('[datasets.m]\ntable = "messages"\nkey = ["channel"]\n')
    done = rowstream("serve", "--port", "1", cwd=tmp_path, env={"DATABASE_URL": db_url})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rowstream: datasets.toml: dataset 'm': key ['channel'] is not unique")
