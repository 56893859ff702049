"""Through nginx, configured as deploy/nginx.conf says: streams arrive whole and in pieces,
and a stream the server aborts is a failed download for the client too. (``make test``
installs nginx where it is missing, as root; see the Makefile.)"""

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    DEPLOY,
    SEED_ROWS,
    Server,
    free_port,
    nginx_conf,
    start_nginx,
    start_server,
    stop_server,
)

EXAMPLE = DEPLOY / "nginx.conf"


@pytest.fixture(scope="module")
def proxied(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    upstream = start_server(db_url, STREAM_BATCH_SIZE="50")
    proc, base = start_nginx(EXAMPLE, [upstream], tmp_path_factory.mktemp("nginx"))
    try:
        yield upstream, base
    finally:
        proc.terminate()
        proc.wait(10)
        stop_server(upstream)


def test_streams_pass_through_nginx_whole_and_in_pieces(proxied: tuple[Server, str]) -> None:
    upstream, base = proxied
    headers = {**upstream.headers(), "Accept-Encoding": "identity"}
    pieces: list[bytes] = []
    with httpx.stream("GET", f"{base}/messages/stream", headers=headers, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        pieces.extend(r.iter_raw())
    body = b"".join(pieces)
    assert body.count(b"\n") == SEED_ROWS
    assert len(pieces) > 10  # not collected into one response by the proxy
    direct = httpx.get(f"{upstream.base_url}/messages/stream", headers=headers, timeout=60)
    assert body == direct.content


def test_an_aborted_stream_is_a_failed_download_through_nginx(db_url: str, tmp_path: Path) -> None:
    upstream = start_server(db_url, STREAM_BATCH_SIZE="10")
    proc, base = start_nginx(EXAMPLE, [upstream], tmp_path)
    try:
        headers = {**upstream.headers(), "Accept-Encoding": "identity"}
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream("GET", f"{base}/messages/stream", headers=headers, timeout=60) as r,
        ):
            for i, _ in enumerate(r.iter_raw()):
                if i == 3:
                    upstream.process.kill()  # the server dies mid-stream
    finally:
        proc.terminate()
        proc.wait(10)
        stop_server(upstream)


def test_http_1_0_to_the_upstream_is_refused_not_silently_truncatable(
    proxied: tuple[Server, str], tmp_path: Path
) -> None:
    upstream, _ = proxied
    # the same example with nginx's default (HTTP/1.0 to upstreams)
    conf = nginx_conf(EXAMPLE, [upstream], free_port(), tmp_path)
    text = conf.read_text()
    assert "proxy_http_version 1.1;" in text
    text = text.replace("proxy_http_version 1.1;", "")
    conf.write_text(text)
    port = int(text.split("listen 127.0.0.1:")[1].split(";")[0])
    proc = subprocess.Popen(
        [
            shutil.which("nginx") or "/usr/sbin/nginx",
            "-c",
            str(conf),
            "-e",
            str(tmp_path / "error.log"),
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/messages/stream?limit=5",
                    headers=upstream.headers(),
                    timeout=10,
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert r.status_code == 505
        assert "proxy_http_version 1.1" in r.json()["detail"]
    finally:
        proc.terminate()
        proc.wait(10)
