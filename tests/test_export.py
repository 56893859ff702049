"""Every format, filter and header over a real server, parsed back with real parsers."""

import csv
import gzip
import io
import json
from datetime import datetime
from typing import Any

import httpx
import pyarrow as pa
import pytest
import zstandard

from tests import expected
from tests.support import SEED_ROWS, Server

FIELDS = list(expected.row(1))


def _csv_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _get(client: httpx.Client, server: Server, path: str, **kw: Any) -> httpx.Response:
    headers = {**server.headers(), **kw.pop("headers", {})}
    response = client.get(path, headers=headers, **kw)
    assert response.status_code == 200, response.text
    return response


def parse(media_type: str, content: bytes) -> list[dict[str, Any]]:
    """Rows back from each format, with the real parser for it, as JSON-like dicts."""
    if media_type == "application/x-ndjson":
        return [json.loads(line) for line in content.splitlines()]
    if media_type == "application/json":
        return list(json.loads(content))
    if media_type == "text/csv":
        return list(csv.DictReader(io.StringIO(content.decode())))
    if media_type == "application/vnd.apache.arrow.stream":
        rows = pa.ipc.open_stream(content).read_all().to_pylist()
        return [
            {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
            for row in rows
        ]
    raise AssertionError(media_type)


def want(media_type: str, ids: list[int], fields: list[str] = FIELDS) -> list[dict[str, Any]]:
    rows = [{f: expected.row(i)[f] for f in fields} for i in ids]
    if media_type == "text/csv":
        return [{k: _csv_value(v) for k, v in row.items()} for row in rows]
    return rows


STREAM = [
    "application/x-ndjson",
    "application/json",
    "text/csv",
    "application/vnd.apache.arrow.stream",
]


@pytest.mark.parametrize("media_type", STREAM)
def test_every_streamed_format_carries_the_same_rows(
    client: httpx.Client, server: Server, media_type: str
) -> None:
    r = _get(
        client, server, "/messages/stream", params={"limit": 1234}, headers={"Accept": media_type}
    )
    assert r.headers["content-type"].split(";")[0] == media_type
    assert parse(media_type, r.content) == want(media_type, list(range(1, 1235)))


@pytest.mark.parametrize("media_type", ["application/json", "text/csv"])
def test_standard_endpoint_serves_json_and_csv_buffered(
    client: httpx.Client, server: Server, media_type: str
) -> None:
    r = _get(client, server, "/messages", params={"limit": 321}, headers={"Accept": media_type})
    assert r.headers["content-length"] == str(len(r.content))
    assert parse(media_type, r.content) == want(media_type, list(range(1, 322)))


def test_csv_has_a_header_and_rfc4180_lines(client: httpx.Client, server: Server) -> None:
    r = _get(client, server, "/chunked", params={"limit": 2, "format": "csv"})
    assert r.text.splitlines()[0] == ",".join(FIELDS)
    assert r.text.endswith("\n") and r.text.count("\n") == 3


def test_text_plain_is_the_original_line_format(client: httpx.Client, server: Server) -> None:
    r = _get(client, server, "/chunked", params={"limit": 3}, headers={"Accept": "text/plain"})
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "object_id:1 \nobject_id:2 \nobject_id:3 \n"


def test_whole_table_in_csv_and_arrow(client: httpx.Client, server: Server) -> None:
    r = _get(client, server, "/messages/stream", params={"format": "csv"})
    assert r.text.count("\n") == SEED_ROWS + 1
    a = _get(client, server, "/messages/stream", params={"format": "arrow"})
    table = pa.ipc.open_stream(a.content).read_all()
    assert table.num_rows == SEED_ROWS
    assert table.column("id").to_pylist() == list(range(1, SEED_ROWS + 1))


@pytest.mark.parametrize(
    ("path", "fmt"),
    [("/messages/stream", f) for f in ("json", "ndjson", "csv", "arrow")]
    + [("/messages", f) for f in ("json", "csv")],  # the formats the standard route serves
)
def test_filters_combine_with_projection_in_every_format(
    client: httpx.Client, server: Server, path: str, fmt: str
) -> None:
    params = {
        "channel": "sms",
        "is_read": "false",
        "created_after": "2024-01-01T00:10:00Z",
        "created_before": "2024-01-01T03:00:00+00:00",
        "after_id": 700,
        "min_id": 650,
        "fields": "created_at,id,channel",
        "limit": 50,
        "format": fmt,
    }
    r = _get(client, server, path, params=params)
    ids = [i for i in range(701, 10800) if i % 4 == 1 and i % 3 != 0][:50]
    media = r.headers["content-type"].split(";")[0]
    assert parse(media, r.content) == want(media, ids, ["created_at", "id", "channel"])


def test_sender_id_filter_selects_exactly_its_rows(client: httpx.Client, server: Server) -> None:
    r = _get(client, server, "/messages/stream", params={"sender_id": 7919})
    rows = parse("application/x-ndjson", r.content)
    assert rows and all(row["sender_id"] == 7919 for row in rows)
    assert [row["id"] for row in rows] == [
        i for i in range(1, SEED_ROWS + 1) if i * 7919 % 10000 == 7919
    ]


@pytest.mark.parametrize(
    "fields",
    [
        "id;DROP TABLE messages",
        "id,password",
        "ID",
        "",
        " ",
        "id)--",
        "*",
        "row_to_json(messages)",
        "id, channel ,",
        '"id"',
    ],
)
def test_fields_injection_attempts_are_422(
    client: httpx.Client, server: Server, fields: str
) -> None:
    r = client.get("/messages/stream", params={"fields": fields}, headers=server.headers())
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "fields" in r.json()["detail"] or "field" in r.json()["detail"]
    # and the table is still there
    assert _get(client, server, "/chunked", params={"limit": 1}).text.count("\n") == 1


@pytest.mark.parametrize(
    "params",
    [
        {"sender_id": 2**31},
        {"recipient_id": "x"},
        {"after_id": 2**63},
        {"is_read": "maybe"},
        {"created_after": "yesterday"},
        {"channel": "x" * 5000},
        {"limit": 0},
        {"channel": "a\x00b"},
        {"created_after": "9999-12-31T23:59:59-10:00"},
        {"created_before": "0001-01-01T00:00:00+01:00"},
    ],
)
def test_bad_filter_values_are_422_not_500(
    client: httpx.Client, server: Server, params: dict[str, Any]
) -> None:
    r = client.get("/messages/stream", params=params, headers=server.headers())
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_resume_after_id_continues_exactly_where_a_client_stopped(
    client: httpx.Client, server: Server, fmt: str
) -> None:
    whole = _get(client, server, "/chunked", params={"format": fmt, "limit": 5000}).content
    lines = whole.splitlines(keepends=True)
    body = lines[1:] if fmt == "csv" else lines
    cut = 1777  # rows received before the connection dropped
    last_id = int(body[cut - 1].split(b",")[0]) if fmt == "csv" else json.loads(body[cut - 1])["id"]
    rest = _get(
        client, server, "/chunked", params={"format": fmt, "limit": 5000 - cut, "after_id": last_id}
    ).content
    rest_lines = rest.splitlines(keepends=True)[1 if fmt == "csv" else 0 :]
    head = lines[:1] if fmt == "csv" else []
    assert b"".join(head + body[:cut] + rest_lines) == whole


def test_exact_count_header_matches_the_rows_sent(client: httpx.Client, server: Server) -> None:
    params = {"channel": "push", "limit": 400}
    r = _get(client, server, "/messages/stream", params=params, headers={"Prefer": "count=exact"})
    assert r.headers["x-total-count"] == "400"
    assert r.headers["preference-applied"] == "count=exact"
    assert len(parse("application/x-ndjson", r.content)) == 400
    r = _get(
        client,
        server,
        "/messages/stream",
        params={"channel": "push"},
        headers={"Prefer": "count=exact"},
    )
    assert int(r.headers["x-total-count"]) == SEED_ROWS // 4 == r.content.count(b"\n")
    s = _get(
        client,
        server,
        "/messages",
        params={"channel": "push", "format": "csv"},
        headers={"Prefer": "count=exact"},
    )
    assert int(s.headers["x-total-count"]) == s.content.count(b"\n") - 1


def test_estimate_header_by_default(client: httpx.Client, server: Server) -> None:
    r = _get(client, server, "/messages/stream", params={"limit": 10})
    assert "x-total-count" not in r.headers
    assert 1 <= int(r.headers["x-total-count-estimate"]) <= 10
    r = _get(client, server, "/messages/stream", params={"fields": "id", "format": "csv"})
    estimate = int(r.headers["x-total-count-estimate"])
    assert SEED_ROWS * 0.5 < estimate < SEED_ROWS * 1.5


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_compressed_stream_decompresses_to_the_identical_bytes(
    client: httpx.Client, server: Server, encoding: str
) -> None:
    plain = _get(
        client, server, "/chunked", params={"limit": 3000}, headers={"Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    with client.stream(
        "GET",
        "/chunked",
        params={"limit": 3000},
        headers={**server.headers(), "Accept-Encoding": encoding},
    ) as r:
        assert r.headers["content-encoding"] == encoding
        assert "accept-encoding" in r.headers["vary"].lower()
        raw = b"".join(r.iter_raw())
    if encoding == "gzip":
        assert gzip.decompress(raw) == plain.content
    else:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == plain.content
    assert len(raw) < len(plain.content) / 3


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/messages/stream", "image/png"),
        ("/messages", "application/x-ndjson"),
        ("/messages", "application/vnd.apache.arrow.stream"),
    ],
)
def test_unsupported_format_is_406_with_the_supported_list(
    client: httpx.Client, server: Server, path: str, accept: str
) -> None:
    r = client.get(path, headers={**server.headers(), "Accept": accept})
    assert r.status_code == 406
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert "application/json" in body["supported"] and "application/json" in body["detail"]


def test_openapi_lists_every_media_type_with_an_example(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    stream = paths["/messages/stream"]["get"]["responses"]["200"]["content"]
    assert set(stream) == set(STREAM) | {"text/plain", "application/vnd.apache.parquet"}
    standard = paths["/messages"]["get"]["responses"]["200"]["content"]
    assert set(standard) == {"application/json", "text/csv"}
    for content in (stream, standard):
        for media, spec in content.items():
            binary = ("application/vnd.apache.arrow.stream", "application/vnd.apache.parquet")
            assert "example" in spec or media in binary
    params = {p["name"] for p in paths["/messages/stream"]["get"]["parameters"]}
    assert {"fields", "channel", "after_id", "limit", "format", "prefer"} <= params


def test_a_field_named_twice_is_sent_once(client: httpx.Client, server: Server) -> None:
    r = _get(client, server, "/chunked", params={"limit": 1, "fields": "id, channel,id"})
    assert r.text == '{"id":1,"channel":"sms"}\n'


@pytest.mark.parametrize("value", ["0.5", "1700000000", "yesterday", "2024-13-01T00:00:00Z"])
def test_timestamps_must_be_rfc3339(client: httpx.Client, server: Server, value: str) -> None:
    r = client.get("/messages/stream", params={"created_after": value}, headers=server.headers())
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
