"""How streams end, over a real socket: clients that vanish or stall, a database killed
mid-stream, HTTP/1.0 and shutdown. Each must leave nothing behind and never look complete."""

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support import (
    Server,
    busy_sessions,
    metric,
    raw_request,
    read_all,
    reset,
    run,
    running,
    sigterm_during_a_stalled_stream,
    start_server,
    stop_server,
)


@pytest.fixture(scope="module")
def tight(db_url: str) -> Iterator[Server]:
    """A server with small batches (slow streams) and a 1 s send timeout."""
    s = start_server(
        db_url,
        STREAM_BATCH_SIZE="10",
        STREAM_SEND_TIMEOUT="1",
        STREAM_CAPACITY="200",
        STREAM_PER_SUBJECT="200",
    )
    try:
        yield s
    finally:
        stop_server(s)


def _read_some(sock: socket.socket, at_least: int) -> bytes:
    got = b""
    while len(got) < at_least:
        data = sock.recv(65536)
        assert data, "server closed early"
        got += data
    return got


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "arrow"])  # rendered, rendered, ADBC
def test_a_hundred_vanishing_clients_leave_nothing_behind(tight: Server, fmt: str) -> None:
    for i in range(100):
        # even: reads a little while the server is fetching; odd: never reads, so the
        # server is blocked writing into a full window when the client resets
        path = f"/messages/stream?format={fmt}"
        sock = raw_request(tight, path, rcvbuf=4096 if i % 2 else None)
        if i % 2 == 0:
            assert _read_some(sock, 3000).startswith(b"HTTP/1.1 200")
        else:
            time.sleep(0.02)
        reset(sock)
    assert busy_sessions(tight.database_url, within=2.0) == []
    assert httpx.get(f"{tight.base_url}/readyz").json()["pool"]["in_use"] == 0
    assert metric(tight, "rowstream_streams_active") == 0
    assert metric(tight, "rowstream_streams_ended_total", outcome="client gone") >= 90
    # and the service still answers normally
    r = httpx.get(f"{tight.base_url}/chunked", params={"limit": 5}, headers=tight.headers())
    assert r.text.count("\n") == 5


def test_a_stalled_reader_is_cut_off_after_the_send_timeout(tight: Server) -> None:
    before = metric(tight, "rowstream_streams_ended_total", outcome="timeout")
    sock = raw_request(tight, "/messages/stream", rcvbuf=4096)
    time.sleep(3)  # read nothing: the server's send blocks, then times out (1 s)
    assert metric(tight, "rowstream_streams_ended_total", outcome="timeout") == before + 1
    assert busy_sessions(tight.database_url) == []
    # what the client can still read ends without the terminating chunk
    data = read_all(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 200") and not data.endswith(b"0\r\n\r\n")


def _stream_backend_pids(database_url: str) -> list[int]:
    async def pids() -> list[int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
                'AND query LIKE \'%FROM "public"."messages"%\''  # a cursor\'s or a COPY\'s
            )
            return [r["pid"] for r in rows]
        finally:
            await conn.close()

    return run(pids())


def _terminate(database_url: str, pid: int) -> None:
    async def kill() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()

    run(kill())


def _kill_stream(database_url: str) -> None:
    """Terminate the database session of the running stream (waiting up to 10 s for it)."""
    deadline = time.monotonic() + 10
    pids: list[int] = []
    while not pids and time.monotonic() < deadline:
        pids = _stream_backend_pids(database_url)
    assert pids, "no stream session found"
    for pid in pids:
        _terminate(database_url, pid)


def test_a_database_killed_mid_stream_is_a_failed_download_every_time(tight: Server) -> None:
    for _ in range(5):
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "GET",
                # the JSON array reads a cursor, 10 rows a fetch: still running when killed
                # (a rendered COPY of these 100,000 rows may be read whole before that)
                f"{tight.base_url}/messages/stream?format=json",
                headers={**tight.headers(), "Accept-Encoding": "identity"},
            ) as r,
        ):
            chunks = r.iter_raw()
            next(chunks)
            _kill_stream(tight.database_url)
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in chunks:
                    pass
        # the next request succeeds
        ok = httpx.get(f"{tight.base_url}/chunked", params={"limit": 3}, headers=tight.headers())
        assert ok.status_code == 200 and ok.text.count("\n") == 3
    outcomes = {
        o: metric(tight, "rowstream_streams_ended_total", outcome=o)
        for o in ("database error", "error", "client gone", "complete")
    }
    assert outcomes["database error"] >= 5, outcomes


def test_http_1_0_is_refused_for_streams_with_a_clear_problem(server: Server) -> None:
    sock = raw_request(server, "/messages/stream?limit=2", version="1.0")
    data = read_all(sock)
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505")
    assert b"application/problem+json" in head
    assert b"proxy_http_version 1.1" in body
    # the buffered endpoint has a Content-Length, so HTTP/1.0 is fine there
    sock = raw_request(server, "/messages?limit=2", version="1.0")
    assert read_all(sock).startswith(b"HTTP/1.1 200")
    sock.close()


def test_sigterm_gives_streams_a_grace_period_then_aborts_them_honestly(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    s = start_server(db_url, log=log, STREAM_BATCH_SIZE="10", STREAM_SEND_TIMEOUT="60")
    took, sock = sigterm_during_a_stalled_stream(s)
    # --graceful-timeout defaults to 10 s; exit within that plus 3 s
    assert 1 < took < 13, took  # it did wait for the stream, and not forever
    data = read_all(sock)
    sock.close()
    assert not data.endswith(b"0\r\n\r\n")
    assert busy_sessions(db_url) == []
    assert s.process.returncode is not None
    assert '"outcome":"shutdown"' in log.read_text()  # not "client gone": we cut it


def test_a_stalled_reader_is_one_access_line_not_a_server_traceback(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    s = start_server(db_url, log=log, STREAM_BATCH_SIZE="10", STREAM_SEND_TIMEOUT="1")
    try:
        sock = raw_request(s, "/messages/stream", rcvbuf=4096)
        time.sleep(3)  # read nothing: cut off after the 1 s send timeout
        sock.close()
        time.sleep(0.5)
    finally:
        stop_server(s)
    text = log.read_text()
    assert '"outcome":"timeout"' in text
    assert "Exception in ASGI application" not in text and "StalledClient" not in text


def _server_sockets(server: Server, client: socket.socket) -> list[str]:
    """The server's side of ``client``'s connection as the kernel has it (any process,
    orphans included): the states of sockets on the server's port facing that client."""
    import psutil

    port = int(server.base_url.rsplit(":", 1)[1])
    mine = client.getsockname()[1]
    return [
        c.status
        for c in psutil.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port == mine
    ]


def test_a_stalled_stream_is_reset_so_its_descriptor_and_send_queue_go_at_once(
    tight: Server,
) -> None:
    sock = raw_request(tight, "/messages/stream", rcvbuf=4096)
    try:
        time.sleep(0.5)
        assert _server_sockets(tight, sock) == ["ESTABLISHED"]
        time.sleep(2)  # past the 1 s send timeout
        # close() would keep it (FIN_WAIT, its unsent data queued) while the window is shut
        assert _server_sockets(tight, sock) == []
        with pytest.raises(ConnectionResetError):
            while sock.recv(1 << 20):
                pass
    finally:
        sock.close()
    assert busy_sessions(tight.database_url) == []


@pytest.fixture(scope="module")
def paced(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Streams must end within 2 s and be read at 100 kB/s (measured over 0.5 s)."""
    with running(
        db_url,
        log=tmp_path_factory.mktemp("paced") / "server.log",
        STREAM_BATCH_SIZE="10",
        STREAM_SEND_TIMEOUT_SECONDS="10",
        STREAM_MAX_SECONDS="2",
        STREAM_MIN_BYTES_PER_SECOND="100000",
        STREAM_MIN_RATE_WINDOW_SECONDS="0.5",
    ) as s:
        yield s


def test_a_slow_reader_is_cut_off_visibly_with_a_metric_and_a_log_line(paced: Server) -> None:
    before = metric(paced, "rowstream_streams_ended_total", outcome="too slow")
    sock = raw_request(paced, "/messages/stream", rcvbuf=4096)
    got = b""
    started = time.monotonic()
    try:
        while time.monotonic() - started < 10:  # about 20 kB/s
            chunk = sock.recv(2048)
            if not chunk:
                break
            got += chunk
            time.sleep(0.1)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    took = time.monotonic() - started
    assert got.startswith(b"HTTP/1.1 200") and not got.endswith(b"0\r\n\r\n")
    assert took < 1.9, took  # cut by the rate, before the 2 s ceiling
    assert metric(paced, "rowstream_streams_ended_total", outcome="too slow") == before + 1
    assert paced.log is not None and "cut off (too slow)" in paced.log.read_text()
    assert busy_sessions(paced.database_url) == []


@pytest.fixture(scope="module")
def brief(db_url: str) -> Iterator[Server]:
    """Streams must end within 50 ms (the whole table, rendered in the server, takes
    about 0.2 s to this test's client)."""
    with running(db_url, STREAM_MAX_SECONDS="0.05") as s:
        yield s


def test_an_export_past_stream_max_seconds_ends_visibly_and_the_resume_completes_it(
    brief: Server, tmp_path: Path
) -> None:
    from app import fetch
    from rowstream.client import ClientError

    before = metric(brief, "rowstream_streams_ended_total", outcome="time limit")
    output = tmp_path / "messages.ndjson"
    attempts = 0
    while True:
        attempts += 1
        assert attempts < 100
        try:
            done = fetch.fetch(
                f"{brief.base_url}/messages/stream",
                output,
                token=brief.token(),
                resume=True,
                retries=0,  # each cut-off ends the call: resumed by the next one
                quiet=True,
            )
            break
        except ClientError:
            continue  # cut off at the ceiling: what was complete is kept
    assert attempts > 1  # at least one stream hit the ceiling
    assert metric(brief, "rowstream_streams_ended_total", outcome="time limit") >= before + 1
    ids = [int(line.split(b'"id":', 1)[1].split(b",", 1)[0]) for line in output.open("rb")]
    assert done.rows == len(ids) == 100_000 and ids == sorted(set(ids))


def test_a_database_failure_mid_stream_is_logged_once(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    s = start_server(db_url, log=log, STREAM_BATCH_SIZE="10")
    try:
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "GET", f"{s.base_url}/messages/stream?format=json", headers=s.headers()
            ) as r,
        ):
            chunks = r.iter_raw()
            next(chunks)
            _kill_stream(db_url)
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in chunks:
                    pass
        time.sleep(0.3)
    finally:
        stop_server(s)
    text = log.read_text()
    assert "stream failed mid-way (database error)" in text
    assert text.count("Traceback") == 1, text
    assert '"outcome":"database error"' in text


def test_a_parquet_stream_cut_mid_way_has_no_footer_and_no_reader_opens_it(
    tight: Server,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    got = b""
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "GET",
            f"{tight.base_url}/messages/stream",
            params={"format": "parquet"},
            headers={**tight.headers(), "Accept-Encoding": "identity"},
        ) as r,
    ):
        assert r.headers["content-disposition"] == 'attachment; filename="messages.parquet"'
        chunks = r.iter_raw()
        while len(got) <= 4:  # the magic number, then a first row group
            got += next(chunks)
        _kill_stream(tight.database_url)
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in chunks:
                got += chunk
    assert got.startswith(b"PAR1") and not got.endswith(b"PAR1")  # no footer
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(pa.BufferReader(got))


def _access_line(log: Path, path: str) -> dict[str, object]:
    import json

    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    found = [x for x in lines if x.get("path") == path and "outcome" in x]
    assert len(found) == 1, found
    return found[0]


def test_a_buffered_response_cut_off_or_shut_down_logs_how_it_ended_in_one_line(
    db_url: str, tmp_path: Path
) -> None:
    """The standard route's body to a client that reads nothing: cut off at the send
    timeout with a reset (logged ``timeout``), or ended by SIGTERM (``shutdown``); never
    ``error``, and no traceback."""
    log = tmp_path / "server.log"
    server = start_server(db_url, log=log, STREAM_SEND_TIMEOUT_SECONDS="1")
    try:
        sock = raw_request(server, "/standard?limit=100000", rcvbuf=4096)
        time.sleep(3)
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while sock.recv(1 << 20):
                pass
        sock.close()
    finally:
        stop_server(server)
    assert _access_line(log, "/standard")["outcome"] == "timeout"
    assert "Traceback" not in log.read_text()

    log = tmp_path / "shutdown.log"
    server = start_server(db_url, log=log, STREAM_SEND_TIMEOUT_SECONDS="60")
    sock = raw_request(server, "/standard?limit=100000", rcvbuf=4096)
    try:
        time.sleep(1)  # the body is being sent into a full window
        stop_server(server)
    finally:
        sock.close()
    assert _access_line(log, "/standard")["outcome"] == "shutdown"
    assert "Traceback" not in log.read_text()
