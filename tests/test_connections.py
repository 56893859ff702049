"""Connection limits over real sockets: silent and slow request heads, huge headers, too
many connections, a low open-file limit. The server keeps answering everyone else."""

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, running, start_server, stop_server


@pytest.fixture(scope="module")
def guarded(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a 1 s head deadline and room for 30 connections."""
    log = tmp_path_factory.mktemp("connections") / "server.log"
    with running(db_url, log=log, HEADER_TIMEOUT_SECONDS="1", MAX_CONNECTIONS="30") as s:
        yield s


def _connect(server: Server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(10)
    return sock


def _until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got, time.monotonic() - started


def _healthz_ms(server: Server) -> float:
    started = time.monotonic()
    assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200
    return (time.monotonic() - started) * 1000


def _problem(answer: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_a_connection_that_says_nothing_is_closed_after_the_head_deadline(
    guarded: Server,
) -> None:
    sock = _connect(guarded)
    got, took = _until_closed(sock)
    assert got == b""  # nothing was asked, nothing is answered
    assert 0.8 < took < 3


def test_a_half_sent_head_gets_408_at_the_deadline_even_if_it_keeps_trickling(
    guarded: Server,
) -> None:
    sock = _connect(guarded)
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    try:
        for _ in range(20):  # a header byte every 0.2 s: never idle, never complete
            time.sleep(0.2)
            sock.sendall(b"X")
    except (BrokenPipeError, ConnectionResetError):
        pass
    got, _ = _until_closed(sock)
    status, headers, problem = _problem(got)
    assert status == 408 and headers["connection"] == "close"
    assert "HEADER_TIMEOUT_SECONDS" in str(problem["detail"])
    assert time.monotonic() - started < 3


def test_an_http09_request_is_answered_and_closed_not_held(guarded: Server) -> None:
    sock = _connect(guarded)
    sock.sendall(b"GET /healthz\r\n")
    got, took = _until_closed(sock)
    assert got.startswith((b"HTTP/1.1 400", b"HTTP/1.1 408"))
    assert took < 3


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_head(
    guarded: Server,
) -> None:
    sock = _connect(guarded)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while not first.endswith(b'{"status":"ok"}'):
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # ... and no more
    got, took = _until_closed(sock)
    assert got.startswith(b"HTTP/1.1 408") and took < 3


def test_headers_over_64_kib_get_431_without_being_parsed_whole(guarded: Server) -> None:
    ok = httpx.get(f"{guarded.base_url}/healthz", headers={"X-Big": "a" * 60_000}, timeout=5)
    assert ok.status_code == 200
    sock = _connect(guarded)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    started = time.monotonic()
    sent = 0
    try:
        while sent < 64 << 20:  # 64 MiB in 64 KiB writes: quadratic if it were parsed
            sock.sendall(b"a" * 65536)
            sent += 65536
    except (BrokenPipeError, ConnectionResetError):
        pass
    got, _ = _until_closed(sock)
    status, _, problem = _problem(got)
    assert status == 431 and problem["status"] == 431
    assert time.monotonic() - started < 3
    assert _healthz_ms(guarded) < 500


def test_beyond_max_connections_a_new_one_gets_503_at_once_and_the_rest_recover(
    guarded: Server,
) -> None:
    silent = [_connect(guarded) for _ in range(30)]
    try:
        time.sleep(0.2)
        extra = _connect(guarded)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got, took = _until_closed(extra)
        status, headers, problem = _problem(got)
        assert status == 503 and headers["retry-after"] == "1"
        assert "MAX_CONNECTIONS" in str(problem["detail"])
        assert took < 1.5
    finally:
        for sock in silent:
            sock.close()
    time.sleep(0.3)
    assert _healthz_ms(guarded) < 500


def test_the_open_file_limit_is_raised_and_the_limits_logged(guarded: Server) -> None:
    assert guarded.log is not None
    text = guarded.log.read_text()
    assert "open-file limit" in text and "at most 30 connections" in text


def test_under_a_256_descriptor_limit_a_flood_of_idle_connections_does_not_lock_everyone_out(
    db_url: str, tmp_path: Path
) -> None:
    s = start_server(
        db_url, log=tmp_path / "server.log", open_files=256, HEADER_TIMEOUT_SECONDS="2"
    )
    flood: list[socket.socket] = []
    try:
        assert "serving at most" in (tmp_path / "server.log").read_text()
        for _ in range(300):
            flood.append(_connect(s))
        # a new connection is answered at once: 503 while the idle ones hold the cap
        probe = _connect(s)
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got, took = _until_closed(probe)
        assert got.startswith(b"HTTP/1.1 503") and took < 1.5
        time.sleep(2.5)  # the idle ones reach their head deadline and are closed
        assert _healthz_ms(s) < 500
        closed = 0
        for sock in flood:  # the first got nothing, the rest a 503: all were closed
            sock.settimeout(0.5)
            try:
                got, _ = _until_closed(sock)
                closed += got == b"" or got.startswith(b"HTTP/1.1 503")
            except TimeoutError:
                pass
        assert closed == len(flood)
    finally:
        for sock in flood:
            sock.close()
        stop_server(s)
