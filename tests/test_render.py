"""NDJSON and CSV rendered in the server from binary COPY (app/render.py, app/render.c).

The renderer must give PostgreSQL's bytes exactly: ``tests/test_pgtypes_properties.py``
checks it value by value (generated values of every type, fed in pieces of 1 to 7 bytes);
here every dataset of ``tests/zoo.py`` goes through two real servers, one rendering in the
server and one letting PostgreSQL render, and the bodies must be the same bytes, compressed
or not, with the same counts.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app import render
from app.pgtypes import Kind, PgType
from tests import zoo
from tests.support import Server, busy_sessions, raw_request, read_all, running, serving


def test_the_renderer_is_built() -> None:
    """``make`` builds it; without it every export would quietly take the slow path."""
    lib = render.library()
    assert lib is not None, f"{render.LIBRARY} is missing: run make"
    assert lib.rs_abi() == render.ABI


def _type(kind: Kind, name: str = "x") -> PgType:
    return PgType(name, name, name, kind)


def test_the_types_postgresql_still_renders() -> None:
    """The columns left to PostgreSQL (``RAW``), per column: floats (shortest round-trip
    text is PostgreSQL's own algorithm), json and jsonb (passed through as it prints them),
    arrays, bytea, and types the service does not know (interval, inet, ranges…); in a
    spreadsheet-safe CSV also text and enum labels, which it prefixes."""
    raw = {
        mode: {k for k in Kind if render.kind(_type(k, "int4"), mode) == render.RAW}
        for mode in ("ndjson", "csv")
    }
    rendered_by_postgresql = {
        Kind.FLOAT,
        Kind.JSON,
        Kind.JSONB,
        Kind.ARRAY,
        Kind.BYTEA,
        Kind.OTHER,
    }
    # integers are looked up by width, so every other kind was asked as "int4" only to
    # give INTEGER its name; the others ignore it
    assert raw["ndjson"] == raw["csv"] == rendered_by_postgresql
    safe = {k for k in Kind if render.kind(_type(k, "int4"), "csv", csv_safe=True) == render.RAW}
    assert safe == rendered_by_postgresql | {Kind.TEXT, Kind.ENUM}
    for name in ("int2", "int4", "int8"):
        assert render.kind(_type(Kind.INTEGER, name), "ndjson") != render.RAW


def test_csv_fields_are_quoted_as_copy_quotes_them() -> None:
    assert render.csv_field("", single=False) == '""'
    assert render.csv_field("\\.", single=True) == '"\\."'
    assert render.csv_field("\\.", single=False) == "\\."
    assert render.csv_field('a,"b"', single=False) == '"a,""b"""'
    assert render.csv_field("plain", single=False) == "plain"


@pytest.fixture(scope="module")
def database_rendered(zoo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server for the zoo, with PostgreSQL rendering every value."""
    directory = tmp_path_factory.mktemp("database-rendered")
    with serving(zoo_url, zoo.DATASETS, directory, TEXT_RENDERING="database") as server:
        yield server


def _get(server: Server, path: str, accept: str, encoding: str) -> httpx.Response:
    headers = {**server.headers(), "Accept": accept, "Accept-Encoding": encoding}
    headers["Prefer"] = "count=exact"
    response = httpx.get(f"{server.base_url}{path}", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response


QUERIES = [
    "/datasets/zoo/stream",
    "/datasets/zoo/stream?csv_safe=1",
    "/datasets/zoo/stream?fields=t,tstz,n&after=[3]&limit=50",
    "/datasets/stamps/stream",
    "/datasets/order_items/stream",
    "/datasets/events_view/stream",
    "/datasets/daily/stream?since=2024-01-01",
    "/datasets/unordered/stream",
]


@pytest.mark.parametrize("path", QUERIES)
@pytest.mark.parametrize("accept", ["application/x-ndjson", "text/csv"])
def test_the_same_bytes_whoever_renders(
    zoo_server: Server, database_rendered: Server, path: str, accept: str
) -> None:
    for encoding in ("identity", "gzip", "zstd"):
        ours = _get(zoo_server, path, accept, encoding)
        theirs = _get(database_rendered, path, accept, encoding)
        sent = encoding if encoding != "identity" else None
        assert ours.headers.get("content-encoding") == sent
        assert theirs.headers.get("content-encoding") == sent
        assert ours.headers["x-total-count"] == theirs.headers["x-total-count"]
        body = ours.content  # httpx decodes gzip and zstd
        assert body == theirs.content, (path, accept, encoding)
        rows = body.count(b"\n") if accept != "text/csv" else None
        if rows is not None:
            assert rows == int(ours.headers["x-total-count"])


def _statements(server: Server) -> list[str]:
    """The statements of the sessions an open, unread stream of 100,000 rows holds."""
    sock = raw_request(server, "/messages/stream?format=ndjson", rcvbuf=4096)
    try:
        assert sock.recv(16).startswith(b"HTTP/1.1 200")
        return [query for _, query in busy_sessions(server.database_url, within=0)]
    finally:
        sock.close()


def test_the_server_reads_binary_copy(server: Server, db_url: str) -> None:
    """Which path ran, seen from PostgreSQL: a binary ``COPY`` when the server renders,
    PostgreSQL's text otherwise."""
    ours = _statements(server)
    assert any("(FORMAT 'binary')" in q for q in ours), ours
    with running(db_url, TEXT_RENDERING="database") as database_rendered:
        theirs = _statements(database_rendered)
    assert theirs and not any("binary" in q.lower() for q in theirs), theirs


def _chunk_sizes(raw: bytes) -> list[int]:
    """The sizes of the HTTP/1.1 chunks of a raw response (RFC 9112 §7.1), in order."""
    _, _, body = raw.partition(b"\r\n\r\n")
    sizes = []
    while body:
        line, _, body = body.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        sizes.append(size)
        body = body[size + 2 :]
    return sizes


def test_a_rendered_stream_arrives_in_pieces(server: Server) -> None:
    """Rendered 256 KiB of binary COPY at a time, each sent as its own chunk: the body is
    streamed, not gathered (100,000 rows of NDJSON, about 19 MB). The chunks are read off
    the wire, as the server framed them."""
    sock = raw_request(server, "/messages/stream?format=ndjson")
    try:
        raw = read_all(sock, timeout=30)
    finally:
        sock.close()
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"0\r\n\r\n")
    sizes = _chunk_sizes(raw)
    assert sum(sizes) > 10 * 1024 * 1024
    # 256 KiB of binary COPY renders to about 420 KB of NDJSON: dozens of chunks, none huge
    assert len(sizes) >= 20 and max(sizes) < 2 * 1024 * 1024, (len(sizes), max(sizes))
