"""The ``rowstream`` command as a user runs it: real subprocesses, real database."""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from app import auth, embedded, migrate
from tests.support import (
    JWT_SECRET,
    SEED_ROWS,
    Server,
    free_port,
    raw_request,
    sigterm_during_a_stalled_stream,
)

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


@pytest.mark.parametrize("environment", ["production", "development"])
def test_a_short_secret_is_refused_in_one_line(environment: str) -> None:
    for command in (("token", "--sub", "a"), ("serve", "--port", "1")):
        done = rowstream(*command, env={"JWT_SECRET": "short", "ENVIRONMENT": environment})
        assert done.returncode == 2
        assert done.stderr.strip().splitlines()[-1].startswith("rowstream: JWT_SECRET")
        assert "Traceback" not in done.stderr


def _published_secrets() -> set[str]:
    """Every value this repository gives a secret setting, in any of its files."""
    root = Path(__file__).resolve().parent.parent
    setting = re.compile(r"\b(?:JWT_SECRET|LINK_SECRET|METRICS_TOKEN)\s*[:=]\s*['\"]?([^\s'\"]+)")
    found: set[str] = set()
    for path in [*root.glob("*.yml"), *root.glob("*.md"), *root.glob("Dockerfile")]:
        found.update(setting.findall(path.read_text()))
    for path in [*(root / "deploy").rglob("*"), *(root / "docs").glob("*.md")]:
        if path.is_file():
            found.update(setting.findall(path.read_text(errors="replace")))
    return {value for value in found if len(value) >= 32 and not value.startswith(("$", "<"))}


def test_a_published_or_placeholder_secret_stops_production_in_one_line() -> None:
    from app.settings import PUBLISHED_SECRETS

    published = _published_secrets() | PUBLISHED_SECRETS
    placeholders = [
        *published,
        "replace-me-with-a-long-random-secret-value-please",
        "ab" * 20,
    ]
    for value in placeholders:
        for name in ("JWT_SECRET", "LINK_SECRET"):
            env = {
                "ENVIRONMENT": "production",
                "JWT_SECRET": secrets.token_urlsafe(48),
                name: value,
            }
            done = rowstream("serve", "--port", "1", env=env)
            assert done.returncode == 2, (name, value, done.stderr)
            line = done.stderr.strip().splitlines()[-1]
            assert line.startswith(f"rowstream: {name} cannot be used in production"), line
            assert "Traceback" not in done.stderr
    done = rowstream(
        "serve",
        "--port",
        "1",
        env={
            "ENVIRONMENT": "production",
            "JWT_SECRET": secrets.token_urlsafe(48),
            "METRICS_TOKEN": "changeme-changeme-changeme-changeme",
        },
    )
    assert done.returncode == 2 and "METRICS_TOKEN" in done.stderr.splitlines()[-1]
    # development keeps working with the value the compose files once carried
    for value in PUBLISHED_SECRETS:
        made = rowstream("token", "--sub", "a", env={"JWT_SECRET": value})
        assert made.returncode == 0, made.stderr


def test_token_carries_extra_claims_json_or_text() -> None:
    done = rowstream(
        *("token", "--sub", "a", "--claim", 'roles=["analyst"]', "--claim", "tenant=acme"),
        *("--claim", "level=3"),
        env={"JWT_SECRET": SECRET},
    )
    principal = auth.verify(done.stdout.strip().splitlines()[-1], SECRET)
    assert principal.claims["tenant"] == "acme" and principal.claims["level"] == 3
    assert principal.roles == {"analyst"}
    bad = rowstream("token", "--sub", "a", "--claim", "novalue", env={"JWT_SECRET": SECRET})
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


def test_link_prints_a_signed_link_that_needs_no_header(server: Server) -> None:
    done = rowstream(
        *("link", "/datasets/messages.csv?limit=3", "--ttl", "60", "--url", server.base_url),
        env={"ROWSTREAM_TOKEN": server.token()},
    )
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip().splitlines()[-1]
    assert "expires at" in done.stderr and server.token() not in link
    assert len(httpx.get(link).text.strip().splitlines()) == 4
    refused = rowstream(
        "link", "/healthz", "--url", server.base_url, env={"ROWSTREAM_TOKEN": server.token()}
    )
    assert refused.returncode != 0 and "404" in refused.stderr


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


# --- shutdown with the embedded server: signals, and a run that was killed ---------------

#: Demo rows: enough for a stream to stall on a client that reads nothing.
DEMO_ROWS = 100_000


def _embedded_postgres(data: Path) -> list[psutil.Process]:
    """The PostgreSQL processes (server and backends) whose data is under ``data``: the
    server names it on its command line, every one of them runs in it."""
    where = str(data.resolve())
    found = []
    for p in psutil.process_iter(["name", "cmdline", "cwd", "status"]):
        if p.info["name"] != "postgres" or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if where in " ".join(p.info["cmdline"] or []) or (p.info["cwd"] or "").startswith(where):
            found.append(p)
    return found


def _left_running(data: Path, within: float = 2.0) -> list[psutil.Process]:
    """The embedded server's processes still there after up to ``within`` s."""
    deadline = time.monotonic() + within
    while (left := _embedded_postgres(data)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _holders(data: Path) -> list[int]:
    """The PIDs in the library's handle file: the processes it counts as holding a handle."""
    return list(json.loads((data / "pg" / embedded.HANDLES).read_text()))


def _sigint_at_its_default() -> None:
    # as in a terminal's foreground job: a shell's background job starts with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def serve_embedded() -> Iterator[tuple[Path, Callable[[], Server]]]:
    """A DATA_DIR and a way to start ``rowstream serve`` there without DATABASE_URL (so on
    the embedded server) on a free port; whatever is left at the end is killed.

    The directory is not under pytest's ``tmp_path``: another pytest session starting on
    the machine makes ``/tmp/pytest-of-<user>`` private again, and the server's own system
    user (when run as root) could no longer reach its data (initdb: "Permission denied").
    """
    data = Path(tempfile.mkdtemp(prefix="rowstream-serve-"))
    started: list[subprocess.Popen[bytes]] = []

    def start() -> Server:
        port = free_port()
        process = subprocess.Popen(
            [
                *[sys.executable, "-m", "app.cli", "serve", "--demo", "--rows", str(DEMO_ROWS)],
                *["--host", "127.0.0.1", "--port", str(port), "--graceful-timeout", "1"],
                *["--log-level", "warning"],
            ],
            env={
                **os.environ,
                "DATABASE_URL": "",
                "DATA_DIR": str(data),
                "JWT_SECRET": JWT_SECRET,
                "STREAM_BATCH_SIZE": "10",
                "STREAM_SEND_TIMEOUT": "60",
            },
            stdout=subprocess.DEVNULL,
            preexec_fn=_sigint_at_its_default,
        )
        started.append(process)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"serve exited with {process.returncode}"
            assert time.monotonic() < deadline, "serve did not answer in 60 s"
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    return Server(base_url, process, "")
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    try:
        yield data, start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
        leftovers = _embedded_postgres(data)
        for p in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        for p in psutil.wait_procs(leftovers, timeout=5)[1]:
            p.kill()
        shutil.rmtree(data, ignore_errors=True)


def test_sigterm_stops_the_embedded_server_after_the_streams_grace(
    serve_embedded: tuple[Path, Callable[[], Server]],
) -> None:
    data, start = serve_embedded
    server = start()
    assert _embedded_postgres(data)
    # a stream blocked on a client that reads nothing: it gets --graceful-timeout (1 s)
    took, sock = sigterm_during_a_stalled_stream(server)
    sock.close()
    assert 1 < took < 5, took
    assert server.process.returncode == -signal.SIGTERM  # ends by the signal, as uvicorn does
    assert _left_running(data) == []
    assert _holders(data) == []


def test_sigint_stops_the_embedded_server_after_the_streams_grace(
    serve_embedded: tuple[Path, Callable[[], Server]],
) -> None:
    data, start = serve_embedded
    server = start()
    sock = raw_request(server, "/messages/stream", rcvbuf=4096)  # stalls: reads nothing
    time.sleep(0.5)
    started = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(30) == 130  # what the command answers to Ctrl+C
    assert 1 < time.monotonic() - started < 5
    sock.close()
    assert _left_running(data) == []
    assert _holders(data) == []


def test_a_killed_runs_stale_handle_is_repaired_so_the_next_exit_stops_the_server(
    serve_embedded: tuple[Path, Callable[[], Server]],
) -> None:
    data, start = serve_embedded
    killed = start()
    killed.process.kill()
    killed.process.wait()
    # nothing could stop it: the server runs on, and counts the dead process as a holder
    assert _embedded_postgres(data)
    assert _holders(data) == [killed.process.pid]

    server = start()  # joins the running server, forgetting the dead holder
    assert _holders(data) == [server.process.pid]
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == -signal.SIGTERM
    assert _left_running(data) == []
    assert _holders(data) == []


def test_list_settings_take_a_comma_separated_list_as_well_as_json() -> None:
    from app.settings import Settings

    for given in ("rs_alice,rs_bob", " rs_alice , rs_bob ", '["rs_alice", "rs_bob"]'):
        done = rowstream("token", "--sub", "a", env={"JWT_SECRET": SECRET, "DB_ROLES": given})
        assert done.returncode == 0, done.stderr
        assert Settings(db_roles=given).db_roles == ["rs_alice", "rs_bob"]
    assert Settings(jwt_algorithms="HS256,HS512").jwt_algorithms == ["HS256", "HS512"]
    broken = rowstream("token", "--sub", "a", env={"JWT_SECRET": SECRET, "DB_ROLES": "[oops"})
    assert broken.returncode != 0 and "Traceback" not in broken.stderr
    assert "DB_ROLES" in broken.stderr or "db_roles" in broken.stderr


def test_link_to_an_unreachable_server_is_one_line_and_a_non_zero_exit() -> None:
    done = rowstream(
        "link",
        "/datasets/messages.csv",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        env={"ROWSTREAM_TOKEN": "t", "JWT_SECRET": SECRET},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("rowstream: link: cannot reach http://127.0.0.1:") and "running" in line


def test_serve_says_where_its_development_key_is_and_a_token_from_elsewhere_is_named(
    db_url: str, tmp_path: Path
) -> None:
    """With no JWT_SECRET, serve prints where its generated key is and the command that
    mints a token with it; that command's token is accepted, and one signed with another
    folder's key is refused as "signed with another key"."""
    import httpx

    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(Path.cwd())}
    env.pop("JWT_SECRET", None)
    env.pop("DATA_DIR", None)
    server_dir, elsewhere = tmp_path / "server", tmp_path / "elsewhere"
    server_dir.mkdir()
    elsewhere.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=server_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = ""
        deadline = time.monotonic() + 30
        while "rowstream token" not in line:
            assert time.monotonic() < deadline and process.poll() is None
            line = process.stdout.readline()
        assert str(server_dir / ".data" / "jwt_secret") in line
        command = line.split("mint one with: ", 1)[1].strip()
        data_dir = command.split()[0].removeprefix("DATA_DIR=")
        minted = subprocess.run(
            [sys.executable, "-m", "app.cli", "token", "--sub", "you"],
            cwd=elsewhere,
            env={**env, "DATA_DIR": data_dir},
            capture_output=True,
            text=True,
            timeout=60,
        )
        token = minted.stdout.strip().splitlines()[-1]
        url = f"http://127.0.0.1:{port}/datasets"
        ok = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert ok.status_code == 200
        other = (
            subprocess.run(
                [sys.executable, "-m", "app.cli", "token", "--sub", "you"],
                cwd=elsewhere,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        refused = httpx.get(url, headers={"Authorization": f"Bearer {other}"}, timeout=10)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "token signed with another key"
    finally:
        process.terminate()
        process.wait(15)
