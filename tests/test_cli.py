"""The ``rowstream`` command as a user runs it: real subprocesses, real database."""

import os
import subprocess
import sys
import time
from pathlib import Path

from app import auth, migrate
from tests.support import SEED_ROWS, free_port

SECRET = "cli-secret-" + "y" * 40


def rowstream(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_token_prints_a_token_that_verifies_on_its_last_line() -> None:
    done = rowstream("token", "--sub", "alice", "--ttl", "120", env={"JWT_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    principal = auth.verify(token, SECRET)
    assert principal.subject == "alice"
    assert principal.claims["exp"] - principal.claims["iat"] == 120


def test_token_without_secret_in_development_generates_and_keeps_one(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "JWT_SECRET": ""}
    first = rowstream("token", "--sub", "a", env=env).stdout.strip().splitlines()[-1]
    second = rowstream("token", "--sub", "a", env=env).stdout.strip().splitlines()[-1]
    secret = (tmp_path / "data" / "jwt_secret").read_text().strip()
    assert len(secret) >= 32
    assert auth.verify(first, secret).subject == auth.verify(second, secret).subject == "a"
    assert (tmp_path / "data" / "jwt_secret").stat().st_mode & 0o077 == 0


def test_production_refuses_a_short_secret_in_one_line() -> None:
    done = rowstream(
        "token", "--sub", "a", env={"JWT_SECRET": "short", "ENVIRONMENT": "production"}
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("rowstream: JWT_SECRET")
    assert "Traceback" not in done.stderr


def test_unreachable_database_is_one_clear_line_not_a_traceback() -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    for command in (["migrate"], ["seed", "--rows", "10"], ["serve", "--port", str(free_port())]):
        done = rowstream(*command, env={"DATABASE_URL": url, "JWT_SECRET": SECRET})
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("rowstream: cannot reach the database at 127.0.0.1:"), last
        assert "nobody" not in last  # no credentials in the message


def test_migrate_and_seed_against_a_given_database(fresh_database) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database("rowstream_cli")
    env = {"DATABASE_URL": url, "JWT_SECRET": SECRET}
    migrated = rowstream("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema at {migrate.head()}" in migrated.stdout
    seeded = rowstream("seed", "--rows", "1234", env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert "seeded 1234 rows" in seeded.stdout


def test_without_database_url_the_embedded_server_is_started_and_stopped(tmp_path: Path) -> None:
    import psutil

    data = tmp_path / "d"
    env = {"DATABASE_URL": "", "DATA_DIR": str(data), "JWT_SECRET": SECRET}
    done = rowstream("seed", "--rows", "100", env=env)
    assert done.returncode == 0, done.stderr
    assert "seeded 100 rows" in done.stdout
    assert (data / "pg" / "PG_VERSION").exists()
    # stopping the command stopped the server it started
    left = [
        p.info
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and str(data) in " ".join(p.info["cmdline"] or [])
    ]
    assert left == []


def test_workers_serve_from_several_processes(db_url: str) -> None:
    import httpx
    import psutil

    from tests.support import start_server, stop_server

    server = start_server(db_url, WORKERS="2")
    try:
        children = psutil.Process(server.process.pid).children(recursive=True)
        assert len([c for c in children if "python" in c.name()]) >= 2
        for _ in range(10):
            r = httpx.get(
                f"{server.base_url}/chunked",
                params={"limit": 3},
                headers=server.headers(),
                timeout=10,
            )
            assert r.status_code == 200 and r.text.count("\n") == 3
    finally:
        stop_server(server)


def test_workers_without_database_url_is_refused_in_one_line(tmp_path: Path) -> None:
    done = rowstream(
        "serve",
        env={"DATABASE_URL": "", "DATA_DIR": str(tmp_path), "WORKERS": "2", "JWT_SECRET": SECRET},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("rowstream: WORKERS > 1 needs")


def test_serve_listens_where_a_dotenv_file_says(db_url: str, tmp_path: Path) -> None:
    import httpx

    port = free_port()
    (tmp_path / ".env").write_text(f"PORT={port}\nHOST=127.0.0.1\nJWT_SECRET={SECRET}\n")
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(Path.cwd())}
    for name in ("PORT", "HOST", "JWT_SECRET"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "nothing listens on the .env port"
                time.sleep(0.1)
        assert r.status_code == 200
    finally:
        process.terminate()
        process.wait(15)


def test_psql_opens_the_services_database_with_psqls_own_options(db_url: str) -> None:
    done = rowstream(
        "psql", "-A", "-t", "-c", "SELECT count(*) FROM messages", env={"DATABASE_URL": db_url}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(SEED_ROWS)
