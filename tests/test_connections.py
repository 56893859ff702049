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
    """A server with 1 s head, body and keep-alive deadlines, room for 30 connections, 5
    per client address (127.0.0.1, a trusted proxy by default, is exempt)."""
    log = tmp_path_factory.mktemp("connections") / "server.log"
    with running(
        db_url,
        log=log,
        HEADER_TIMEOUT_SECONDS="1",
        BODY_TIMEOUT_SECONDS="1",
        KEEP_ALIVE_TIMEOUT_SECONDS="1",
        MAX_CONNECTIONS="30",
        MAX_CONNECTIONS_PER_CLIENT="5",
        MAX_BODY_BYTES="4096",
    ) as s:
        yield s


def _connect(server: Server, source: str | None = None) -> socket.socket:
    """A connection to ``server``, from the loopback address ``source`` when given (the
    whole 127.0.0.0/8 is this machine's: other addresses are other clients)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    address = (source, 0) if source else None
    sock = socket.create_connection((host, int(port)), source_address=address)
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


def _trickle(sock: socket.socket, byte: bytes) -> None:
    """Send ``byte`` every 0.2 s for 4 s (never idle, never complete), until cut off."""
    try:
        for _ in range(20):
            time.sleep(0.2)
            sock.sendall(byte)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _assert_408(sock: socket.socket, setting: str) -> None:
    got, _ = _until_closed(sock)
    status, headers, problem = _problem(got)
    assert status == 408 and headers["connection"] == "close"
    assert setting in str(problem["detail"])


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
    _trickle(sock, b"X")  # a header byte every 0.2 s: never idle, never complete
    _assert_408(sock, "HEADER_TIMEOUT_SECONDS")
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


def _post_head(sock: socket.socket, length: int, token: str | None = None) -> None:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(
        f"POST /links HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {length}\r\n\r\n".encode()
    )


def test_a_post_without_a_token_gets_401_before_its_body_and_is_closed(guarded: Server) -> None:
    sock = _connect(guarded, "127.0.0.2")
    _post_head(sock, 100)
    sock.sendall(b"{")  # one byte of the hundred announced, then silence
    got, took = _until_closed(sock)
    status, headers, problem = _problem(got)
    assert status == 401 and "www-authenticate" in headers
    assert "Authorization" in str(problem["detail"])
    assert took < 0.5  # answered and closed at once


def test_a_trickled_body_gets_408_at_the_body_deadline(guarded: Server) -> None:
    sock = _connect(guarded, "127.0.0.2")
    started = time.monotonic()
    _post_head(sock, 100, guarded.token())
    _trickle(sock, b" ")
    _assert_408(sock, "BODY_TIMEOUT_SECONDS")
    assert time.monotonic() - started < 4


def test_a_body_over_max_body_bytes_gets_413_from_its_length_or_as_it_grows(
    guarded: Server,
) -> None:
    sock = _connect(guarded, "127.0.0.2")
    _post_head(sock, 10_000_000, guarded.token())  # and not a byte of it
    got, took = _until_closed(sock)
    status, _, problem = _problem(got)
    assert status == 413 and "MAX_BODY_BYTES" in str(problem["detail"]) and took < 1.9
    chunked = _connect(guarded, "127.0.0.2")
    chunked.sendall(
        b"POST /links HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"Authorization: Bearer {guarded.token()}\r\n\r\n".encode()
    )
    try:
        for _ in range(8):
            chunked.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    got, _ = _until_closed(chunked)
    assert _problem(got)[0] == 413
    # a body within the cap is read and answered as before
    ok = httpx.post(
        f"{guarded.base_url}/links",
        json={"url": "/datasets/messages.csv?limit=1"},
        headers=guarded.headers(),
        timeout=5,
    )
    assert ok.status_code == 201, ok.text


def test_an_idle_kept_alive_connection_is_closed_after_keep_alive_timeout(
    guarded: Server,
) -> None:
    sock = _connect(guarded, "127.0.0.2")
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while not first.endswith(b'{"status":"ok"}'):
        first += sock.recv(65536)
    got, took = _until_closed(sock)  # then say nothing
    assert got == b"" and 0.7 < took < 2.5


def test_one_client_address_cannot_take_every_connection(guarded: Server) -> None:
    mine = [_connect(guarded, "127.0.0.3") for _ in range(5)]
    try:
        time.sleep(0.2)
        extra = _connect(guarded, "127.0.0.3")
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got, took = _until_closed(extra)
        status, headers, problem = _problem(got)
        assert status == 503 and headers["retry-after"] == "1" and took < 1.5
        assert "MAX_CONNECTIONS_PER_CLIENT" in str(problem["detail"])
        # another address is served, and so is the trusted proxy's (127.0.0.1) sixth
        other = _connect(guarded, "127.0.0.4")
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _until_closed(other)[0].startswith(b"HTTP/1.1 200")
        proxied = [_connect(guarded, "127.0.0.1") for _ in range(6)]
        proxied[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _until_closed(proxied[-1])[0].startswith(b"HTTP/1.1 200")
        for sock in proxied:
            sock.close()
    finally:
        for sock in mine:
            sock.close()
    time.sleep(0.3)  # the address's count falls with its connections
    again = _connect(guarded, "127.0.0.3")
    again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _until_closed(again)[0].startswith(b"HTTP/1.1 200")


def test_slow_bodies_without_a_token_from_many_addresses_do_not_hold_the_server(
    guarded: Server,
) -> None:
    """The red team's attack, scaled to this server's 30 connections: 60 heads that
    announce a body and send one byte. Each is refused from its head and closed, so
    ``/healthz`` answers throughout and none is held past the linger."""
    attackers = []
    for n in range(60):
        sock = _connect(guarded, f"127.0.1.{n + 1}")
        _post_head(sock, 100)
        sock.sendall(b"{")
        attackers.append(sock)
    assert _healthz_ms(guarded) < 1000
    time.sleep(1.5)
    held = 0
    for sock in attackers:
        sock.settimeout(0.2)
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            held += 1
        except ConnectionResetError:
            pass
        sock.close()
    assert held == 0
    assert _healthz_ms(guarded) < 500


def test_a_body_pipelined_behind_a_response_is_not_served_and_nothing_is_misdirected(
    guarded: Server,
) -> None:
    """``GET`` then a ``POST`` with an oversized body, in one packet: the ``GET`` gets its
    own answer, the ``POST`` none (the connection ends after the ``GET``'s response), so
    no refusal is read as the ``GET``'s answer."""
    sock = _connect(guarded, "127.0.0.2")
    sock.sendall(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /links HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n{"
    )
    got, took = _until_closed(sock)
    assert got.startswith(b"HTTP/1.1 200") and got.count(b"HTTP/1.1 ") == 1, got[:300]
    assert took < 2


def test_nothing_after_a_refusal_in_the_same_packet_is_run(guarded: Server) -> None:
    sock = _connect(guarded, "127.0.0.2")
    sock.sendall(
        b"POST /links HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        + b" " * 5000
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    got, _ = _until_closed(sock)
    assert got.startswith(b"HTTP/1.1 413") and got.count(b"HTTP/1.1 ") == 1, got[:300]


def test_a_websocket_upgrade_does_not_leak_the_address_count(guarded: Server) -> None:
    """The service has no WebSocket route; an upgrade request is an ordinary request, and
    its connection counts against its address like any other, then stops counting."""
    for _ in range(8):  # more than the address's 5
        sock = _connect(guarded, "127.0.0.5")
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.recv(65536)
        sock.close()
    time.sleep(0.3)
    again = _connect(guarded, "127.0.0.5")
    again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _until_closed(again)[0].startswith(b"HTTP/1.1 200")
