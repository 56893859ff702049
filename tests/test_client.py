"""``rowstream.client`` against a real server: rows, Arrow, dataframes, and resuming after
the database side of a stream is killed mid-way (every row once, in key order)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from rowstream.client import Client, ClientError, IncompleteExport
from tests.support import SEED_ROWS, Server, execute, free_port, run, start_server, stop_server


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.base_url, server.token(), backoff_seconds=0.05) as c:
        yield c


def _kill_streams(database_url: str) -> int:
    """Terminate the sessions of running streams; return how many there were."""
    killed = run(
        execute(
            database_url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' "
            'AND query LIKE \'%FROM "public"."messages"%\'',
        )
    )
    return int(killed)


def test_rows_dataframes_and_a_download(client: Client, tmp_path: Path) -> None:
    assert "messages" in {d["name"] for d in client.datasets()}
    rows = list(client.iter_rows("messages", limit=500, fields="id,channel"))
    assert [r["id"] for r in rows] == list(range(1, 501)) and set(rows[0]) == {"id", "channel"}
    frame = client.to_pandas("messages", limit=300, channel="sms")
    assert len(frame) == 300 and set(frame["channel"]) == {"sms"}
    assert client.to_polars("messages", limit=200).height == 200
    done = client.download("messages", tmp_path / "m.ndjson", limit=50)
    assert done.rows == 50 and len((tmp_path / "m.ndjson").read_bytes().splitlines()) == 50
    arrow = client.download("messages", tmp_path / "m.arrows", format="arrow", limit=50)
    assert arrow.rows is None and arrow.bytes > 0
    with pa.ipc.open_stream(tmp_path / "m.arrows") as reader:
        assert reader.read_all().column("id").to_pylist() == list(range(1, 51))
    # a filter named like an argument of download
    named = client.download("messages", tmp_path / "n.csv", format="csv", params={"limit": 3})
    assert named.rows == 3
    with pytest.raises(ClientError, match="the server sent text/csv, not application/x-ndjson"):
        client.download("messages", tmp_path / "x", route="/datasets/messages.csv", limit=1)


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_download_killed_mid_way_is_resumed_to_the_same_bytes(
    server: Server, client: Client, tmp_path: Path, fmt: str
) -> None:
    """The file is cut back to its last whole row and continued with ``after=``: it equals
    an uninterrupted download byte for byte (the CSV header once)."""
    killed: list[int] = []
    asked: list[str] = []
    client.http.event_hooks["request"].append(lambda request: asked.append(str(request.url)))

    def kill_once(done: int, total: int | None) -> None:
        if not killed and done >= 1000:
            killed.append(_kill_streams(server.database_url))

    out = tmp_path / f"m.{fmt}"
    done = client.download("messages", out, format=fmt, progress=kill_once)
    assert killed and killed[0] >= 1
    resumed = [url for url in asked if "after=" in url]
    assert len(resumed) == 1, asked  # cut once, continued once
    assert done.rows == SEED_ROWS
    whole = httpx.get(
        f"{server.base_url}/datasets/messages/stream",
        params={"format": fmt},
        headers=server.headers(),
        timeout=60,
    )
    assert out.read_bytes() == whole.content


@pytest.mark.parametrize("kind", ["rows", "batches"])
def test_a_stream_killed_mid_way_is_resumed_to_every_row_once(
    server: Server, client: Client, kind: str
) -> None:
    """The whole table (100,000 rows, far more than the socket buffers hold): its stream is
    still running when the first rows arrive, and is killed then."""
    ids: list[int] = []
    killed = 0
    items = client.iter_rows("messages") if kind == "rows" else client.iter_batches("messages")
    for item in items:
        ids.extend([item["id"]] if kind == "rows" else item.column("id").to_pylist())
        if not killed and len(ids) >= 1000:
            killed = _kill_streams(server.database_url)
    assert killed >= 1
    assert ids == list(range(1, SEED_ROWS + 1))


def test_a_server_restarted_mid_stream_is_resumed_to_every_row_once(db_url: str) -> None:
    """The server process dies (SIGKILL) mid-stream and a new one comes up on the same port
    a little later: the client's retries back off through the refused connections, then
    resume with ``after=`` against the new process."""
    port = free_port()
    first = start_server(db_url, port=port)
    replacement: list[Server] = []
    ids: list[int] = []
    try:
        with Client(first.base_url, first.token(), retries=8, backoff_seconds=0.2) as client:
            for row in client.iter_rows("messages"):
                ids.append(row["id"])
                if len(ids) == 1000:
                    first.process.kill()
                    first.process.wait()
                    restart = threading.Timer(
                        0.5, lambda: replacement.append(start_server(db_url, port=port))
                    )
                    restart.start()
            restart.join()
    finally:
        for server in (first, *replacement):
            stop_server(server)
    assert replacement, "the replacement server never started"
    assert ids == list(range(1, SEED_ROWS + 1))


def test_without_retries_a_dropped_stream_is_an_error_never_a_short_result(
    server: Server,
) -> None:
    received = 0
    with (
        Client(server.base_url, server.token(), retries=0) as client,
        pytest.raises(IncompleteExport) as caught,
    ):
        for _ in client.iter_rows("messages"):
            received += 1
            if received == 1000:
                assert _kill_streams(server.database_url) >= 1
    assert caught.value.total == SEED_ROWS and caught.value.received == received < SEED_ROWS


def test_the_client_imports_none_of_the_servers_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rowstream.client; "
        "print(sorted(m for m in ('fastapi', 'starlette', 'asyncpg', 'databases', 'uvicorn', "
        "'app') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
