"""Any declared dataset over a real server: every type in every format equals what
PostgreSQL itself returns; odd identifiers, composite keys, views and saved queries;
resume, filters, HEAD, suffix URLs, the dataset list and the OpenAPI document."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pyarrow as pa
import pytest

from tests import zoo
from tests.support import Server, raw_request, run, serving
from tests.zoo import ZOO_COLUMNS, ZOO_ROWS

STREAM_FORMATS = ["ndjson", "json", "csv", "arrow"]


def _get(server: Server, path: str, **kw: Any) -> httpx.Response:
    headers = {**server.headers(), **kw.pop("headers", {})}
    response = httpx.get(server.base_url + path, headers=headers, timeout=30, **kw)
    assert response.status_code == 200, response.text
    return response


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def _json(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def theirs_json(url: str, relation: str, order: str) -> list[dict[str, Any]]:
    """``row_to_json`` of every row, as PostgreSQL renders it, parsed."""
    rows = run(_fetch(url, f"SELECT row_to_json(z)::text FROM {relation} z ORDER BY {order}"))
    return [_json(r[0]) for r in rows]


def _csv_cells(body: bytes) -> tuple[list[str], list[list[str | None]]]:
    """CSV records, with COPY's unquoted empty field read as None (NULL) and ``""`` as ''."""
    text = body.decode()
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    records: list[list[str | None]] = []
    for line in _split_unquoted(text, "\n")[1:-1]:  # the header; after the last newline
        fields = next(csv.reader(io.StringIO(line)))
        raw = _split_unquoted(line, ",")
        records.append([None if r == "" else f for f, r in zip(fields, raw, strict=True)])
    return header, records


def _split_unquoted(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` outside double quotes, the quotes kept (so an
    unquoted empty field, COPY's NULL, stays distinguishable from ``""``)."""
    out, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def csv_text(value: Any) -> str | None:
    """The text of a JSON value, as the CSV format carries it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return "json"  # compared parsed, see below
    return str(value)


def rows_of(fmt: str, body: bytes) -> list[dict[str, Any]]:
    if fmt == "ndjson":
        assert body.endswith(b"\n")
        return [_json(line) for line in body.decode().split("\n")[:-1]]
    if fmt == "json":
        return list(_json(body.decode()))
    raise AssertionError(fmt)


# --- every type, every format ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"), [("/stream", "ndjson"), ("/stream", "json"), ("", "json")]
)
def test_every_type_in_json_equals_row_to_json(
    zoo_server: Server, zoo_url: str, path: str, fmt: str
) -> None:
    body = _get(zoo_server, f"/datasets/zoo{path}", params={"format": fmt}).content
    assert rows_of(fmt, body) == theirs_json(zoo_url, "zoo", "id")


@pytest.mark.parametrize("path", ["/datasets/zoo/stream", "/datasets/zoo"])
def test_every_type_in_csv_is_the_text_of_its_json_value(
    zoo_server: Server, zoo_url: str, path: str
) -> None:
    header, records = _csv_cells(_get(zoo_server, path, params={"format": "csv"}).content)
    assert header == list(ZOO_COLUMNS)
    expected = theirs_json(zoo_url, "zoo", "id")
    assert len(records) == len(expected) == ZOO_ROWS
    for record, row in zip(records, expected, strict=True):
        for name, cell in zip(header, record, strict=True):
            value = row[name]
            if isinstance(value, dict | list):
                assert cell is not None and _json(cell) == value, name
            else:
                assert cell == csv_text(value), (name, cell, value)


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_timestamps_json_prints_unlike_copy_are_still_exact(
    zoo_server: Server, zoo_url: str, fmt: str
) -> None:
    """BC, infinite and five-digit-year values take ``to_json``'s way in CSV too."""
    body = _get(zoo_server, "/datasets/stamps/stream", params={"format": fmt}).content
    expected = theirs_json(zoo_url, "stamps", "id")
    if fmt == "ndjson":
        assert rows_of(fmt, body) == expected
        return
    header, records = _csv_cells(body)
    got = [dict(zip(header, r, strict=True)) for r in records]
    for row in got:
        row["g"] = _json(row["g"])  # an array: JSON text, compared parsed
    assert got == [{k: v if k == "g" else csv_text(v) for k, v in row.items()} for row in expected]


#: Every zoo column but the array and bytea ones: with ``ARROW_SOURCE=copy-text`` these come
#: from COPY text parsed by Arrow's CSV reader; a selection with any of those comes from
#: cursor records. By default every column comes from the ADBC driver's binary COPY.
FROM_COPY_TEXT = [c for c in ZOO_COLUMNS if c not in ("by", "ia", "ta")]


@pytest.fixture(scope="module")
def copy_text_server(zoo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The zoo's datasets with the ADBC driver off (``ARROW_SOURCE=copy-text``)."""
    directory = tmp_path_factory.mktemp("zoo-copy-text")
    with serving(zoo_url, zoo.DATASETS, directory, ARROW_SOURCE="copy-text") as s:
        yield s


@pytest.mark.parametrize("path", ["cursor records", "copy text", "binary copy"])
def test_every_type_in_arrow_is_typed_and_equal(
    zoo_server: Server, copy_text_server: Server, zoo_url: str, path: str
) -> None:
    selected = FROM_COPY_TEXT if path == "copy text" else ZOO_COLUMNS
    server = zoo_server if path == "binary copy" else copy_text_server
    params = {"format": "arrow", "fields": ",".join(selected)}
    body = _get(server, "/datasets/zoo/stream", params=params).content
    table = pa.ipc.open_stream(body).read_all()
    assert table.column_names == selected
    table = _with_nulls_for(table, [c for c in ZOO_COLUMNS if c not in selected])
    types = {f.name: f.type for f in table.schema}
    assert types["i2"] == pa.int16() and types["i4"] == pa.int32() and types["i8"] == pa.int64()
    assert types["n52"] == pa.decimal128(5, 2) and types["n"] == pa.string()
    assert types["r"] == pa.float32() and types["d"] == pa.float64()
    assert types["dt"] == pa.date32() and types["tm"] == pa.time64("us")
    assert types["ts"] == pa.timestamp("us") and types["tstz"] == pa.timestamp("us", tz="UTC")
    assert types["by"] == pa.binary() and types["ia"] == pa.list_(pa.int32())
    assert types["ta"] == pa.list_(pa.string()) and types["ip"] == pa.string()
    text = {"n", "u", "iv", "j", "jb", "m", "ip"}
    columns = ", ".join(f"{c}::text AS {c}" if c in text else c for c in ZOO_COLUMNS)
    expected = [dict(r) for r in run(_fetch(zoo_url, f"SELECT {columns} FROM zoo ORDER BY id"))]
    got = table.to_pylist()
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        for name in selected:
            a, b = ours[name], theirs[name]
            if isinstance(b, float) and b != b:
                assert a != a, name  # NaN
            else:
                assert a == b, (name, a, b)


def _with_nulls_for(table: pa.Table, names: list[str]) -> pa.Table:
    """``table`` with the columns it lacks added as the types the full selection has, so
    the type assertions read the same for both paths (their values are not compared)."""
    kinds = {"by": pa.binary(), "ia": pa.list_(pa.int32()), "ta": pa.list_(pa.string())}
    kinds |= {
        "n": pa.string(),
        "n52": pa.decimal128(5, 2),
        "tm": pa.time64("us"),
        "ip": pa.string(),
    }
    for name in names:
        kinds.setdefault(name, pa.string())
        table = table.append_column(name, pa.nulls(table.num_rows, kinds[name]))
    return table


def test_parquet_has_the_arrow_schema_and_values_in_row_groups(
    zoo_server: Server, tmp_path: Path
) -> None:
    """A file written as it goes: several row groups (``PARQUET_ROW_GROUP_ROWS`` is 100 on
    the zoo's server), zstd, and exactly the Arrow format's table."""
    import pyarrow.parquet as pq

    response = _get(zoo_server, "/datasets/zoo.parquet")
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert response.headers["content-disposition"] == 'attachment; filename="zoo.parquet"'
    path = tmp_path / "zoo.parquet"
    path.write_bytes(response.content)
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups == -(-ZOO_ROWS // 100)
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    arrow = pa.ipc.open_stream(_get(zoo_server, "/datasets/zoo.arrows").content).read_all()
    table = parquet.read()
    assert table.schema.remove_metadata() == arrow.schema
    assert repr(table.to_pylist()) == repr(arrow.to_pylist())  # NaN equal to NaN


def test_download_names_the_file_for_every_format_and_ranges_get_the_whole_body(
    zoo_server: Server,
) -> None:
    for fmt, ext in (("ndjson", "ndjson"), ("csv", "csv"), ("arrow", "arrow"), ("json", "json")):
        r = _get(zoo_server, "/datasets/zoo/stream", params={"format": fmt, "download": "1"})
        assert r.headers["content-disposition"] == f'attachment; filename="zoo.{ext}"'
    assert "content-disposition" not in _get(zoo_server, "/datasets/zoo/stream").headers
    standard = _get(zoo_server, "/datasets/zoo", params={"download": "1", "format": "csv"})
    assert standard.headers["content-disposition"] == 'attachment; filename="zoo.csv"'
    bad = httpx.get(
        f"{zoo_server.base_url}/datasets/zoo",
        params={"download": "yes"},
        headers=zoo_server.headers(),
    )
    assert bad.status_code == 422 and bad.json()["field"] == "download"
    # no byte ranges: a Range request is answered with the whole body, never a slice
    whole = _get(zoo_server, "/datasets/zoo.csv")
    ranged = _get(zoo_server, "/datasets/zoo.csv", headers={"Range": "bytes=0-1"})
    assert ranged.status_code == 200 and ranged.content == whole.content
    assert ranged.headers["accept-ranges"] == "none"


def test_nulls_in_every_format(zoo_server: Server) -> None:
    params = {"id": "1"}
    line = _get(zoo_server, "/datasets/zoo/stream", params=params).text
    assert json.loads(line) == {c: (1 if c == "id" else None) for c in ZOO_COLUMNS}
    body = _get(zoo_server, "/datasets/zoo.csv", params=params).text
    assert body.splitlines()[1] == "1" + "," * (len(ZOO_COLUMNS) - 1)
    table = pa.ipc.open_stream(_get(zoo_server, "/datasets/zoo.arrows", params=params).content)
    row = table.read_all().to_pylist()[0]
    assert all(v is None for k, v in row.items() if k != "id")


# --- odd identifiers, composite keys, resume ------------------------------------------


def test_odd_identifiers_and_a_composite_key(zoo_server: Server, zoo_url: str) -> None:
    body = _get(zoo_server, "/datasets/order_items/stream").content
    ours = rows_of("ndjson", body)
    assert ours == theirs_json(zoo_url, '"Order Items"', '"Order", "select"')
    assert list(ours[0]) == ["Order", "select", "línea ✓", 'a"b']
    header = _get(zoo_server, "/datasets/order_items.csv", params={"limit": 1}).text
    assert header.splitlines()[0] == 'Order,select,línea ✓,"a""b"'


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
@pytest.mark.parametrize("cut", [1, 9, 10, 11, 257, 399])
def test_resume_after_any_row_equals_the_uninterrupted_export(
    zoo_server: Server, fmt: str, cut: int
) -> None:
    whole = _get(zoo_server, "/datasets/order_items/stream", params={"format": fmt}).content
    lines = whole.decode().splitlines(keepends=True)
    head, body = (lines[:1], lines[1:]) if fmt == "csv" else ([], lines)
    last = body[cut - 1]
    if fmt == "csv":
        order, day = last.split(",")[:2]
        key = [int(order), day]
    else:
        row = json.loads(last)
        key = [row["Order"], row["select"]]
    rest = _get(
        zoo_server,
        "/datasets/order_items/stream",
        params={"format": fmt, "after": json.dumps(key)},
    ).content.decode()
    rest_lines = rest.splitlines(keepends=True)[len(head) :]
    assert "".join(head + body[:cut] + rest_lines) == whole.decode()


def test_resume_uses_the_key_index(zoo_url: str) -> None:
    """The service's own SQL for ``after=`` on a composite key is an index range scan."""
    from app import datasets, introspection, sql

    async def plan() -> str:
        conn = await asyncpg.connect(zoo_url)
        try:
            config = datasets.DatasetsFile.model_validate(
                {"datasets": {"o": {"table": "Order Items"}}}
            )
            dataset = (await introspection.describe_all(conn, config))["o"]
            selection = sql.Selection(fields=dataset.column_names, after=("20", "2024-01-05"))
            query = sql.as_json(dataset, selection)
            await conn.execute("SET enable_seqscan = off")  # a 400-row table: force the choice
            rows = await conn.fetch(f"EXPLAIN {query.sql}", *query.args)
            return "\n".join(r[0] for r in rows)
        finally:
            await conn.close()

    text = run(plan())
    assert "Index" in text and "Order Items_pkey" in text
    assert "Sort" not in text


# --- views and saved queries ------------------------------------------------------------


def test_a_view_with_a_declared_key(zoo_server: Server, zoo_url: str) -> None:
    rows = rows_of("ndjson", _get(zoo_server, "/datasets/events_view/stream").content)
    assert rows == theirs_json(zoo_url, "events_view", "n")
    resumed = _get(zoo_server, "/datasets/events_view/stream", params={"after": "[500]"}).text
    assert [json.loads(line)["n"] for line in resumed.splitlines()] == list(range(502, 601, 2))


def test_a_saved_query_with_a_parameter(zoo_server: Server, zoo_url: str) -> None:
    got = rows_of(
        "ndjson", _get(zoo_server, "/datasets/daily/stream", params={"since": "2024-01-15"}).content
    )
    expected = run(
        _fetch(
            zoo_url,
            "SELECT day::text, channel, count(*)::int AS n FROM events WHERE day >= '2024-01-15' "
            "GROUP BY 1, 2 ORDER BY 1, 2",
        )
    )
    assert [(r["day"], r["channel"], r["n"], r["s"]) for r in got] == [
        (r["day"], r["channel"], r["n"], ":not_a_param") for r in expected
    ]
    after = json.dumps([got[3]["day"], got[3]["channel"]])
    rest = _get(
        zoo_server, "/datasets/daily/stream", params={"since": "2024-01-15", "after": after}
    )
    assert rows_of("ndjson", rest.content) == got[4:]


def test_a_saved_query_needs_its_parameter(zoo_server: Server) -> None:
    r = httpx.get(f"{zoo_server.base_url}/datasets/daily/stream", headers=zoo_server.headers())
    assert r.status_code == 422 and "since" in r.json()["detail"]
    r = httpx.get(
        f"{zoo_server.base_url}/datasets/daily/stream",
        params={"since": "'; DROP TABLE events; --"},
        headers=zoo_server.headers(),
    )
    assert r.status_code == 422 and "since" in r.json()["detail"]


def test_a_query_without_a_key_streams_but_cannot_resume(zoo_server: Server) -> None:
    rows = rows_of("ndjson", _get(zoo_server, "/datasets/unordered/stream").content)
    assert sorted(r["n"] for r in rows) == list(range(1, 11))
    r = httpx.get(
        f"{zoo_server.base_url}/datasets/unordered/stream",
        params={"after": "[3]"},
        headers=zoo_server.headers(),
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert "no key" in r.json()["detail"]


# --- routes -----------------------------------------------------------------------------


def test_the_dataset_list_describes_each_dataset(zoo_server: Server) -> None:
    listing = _get(zoo_server, "/datasets").json()["datasets"]
    by_name = {d["name"]: d for d in listing}
    assert list(by_name) == ["zoo", "stamps", "order_items", "events_view", "daily", "unordered"]
    zoo = by_name["zoo"]
    assert zoo["key"] == ["id"] and zoo["description"] == "Every supported type"
    n52 = {
        "name": "n52",
        "type": "numeric(5,2)",
        "kind": "numeric",
        "nullable": True,
        "arrow_as_text": None,
    }
    assert n52 in zoo["columns"]
    id_column = {"name": "id", "type": "integer", "kind": "integer", "nullable": False}
    assert {**id_column, "arrow_as_text": None} in zoo["columns"]
    j = next(c for c in zoo["columns"] if c["name"] == "j")
    assert j["arrow_as_text"] == "Arrow has no type for json: PostgreSQL's text of it"
    # which operators each filter takes, as the query-string parser decides
    assert zoo["operators"]["id"] == ["eq", "ne", "gt", "gte", "lt", "lte", "in", "isnull"]
    assert "prefix" in zoo["operators"]["t"] and zoo["operators"]["j"] == ["isnull"]
    assert zoo["estimated_rows"] == ZOO_ROWS
    assert zoo["links"]["stream"] == "/datasets/zoo/stream"
    assert by_name["daily"]["params"] == [{"name": "since", "type": "date"}]
    assert by_name["order_items"]["key"] == ["Order", "select"]


@pytest.mark.parametrize(
    ("suffix", "media"),
    [
        ("ndjson", "application/x-ndjson"),
        ("json", "application/json"),
        ("csv", "text/csv"),
        ("arrows", "application/vnd.apache.arrow.stream"),
        ("parquet", "application/vnd.apache.parquet"),
    ],
)
def test_suffix_urls_stream_the_same_as_format(zoo_server: Server, suffix: str, media: str) -> None:
    by_suffix = _get(zoo_server, f"/datasets/zoo.{suffix}", params={"limit": 50})
    fmt = {"arrows": "arrow"}.get(suffix, suffix)
    by_format = _get(zoo_server, "/datasets/zoo/stream", params={"limit": 50, "format": fmt})
    assert by_suffix.headers["content-type"].split(";")[0] == media
    assert by_suffix.content == by_format.content


@pytest.mark.parametrize("path", ["/datasets/zoo", "/datasets/zoo/stream", "/datasets/zoo.csv"])
def test_head_answers_headers_without_a_body(zoo_server: Server, path: str) -> None:
    r = httpx.head(
        zoo_server.base_url + path,
        headers={**zoo_server.headers(), "Prefer": "count=exact"},
        params={"b": "true"},
    )
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["x-total-count"] == str((ZOO_ROWS - 2) // 2 + 1)  # even ids ≥ 4, and row 2
    assert "content-length" not in r.headers or path == "/datasets/zoo"
    get = _get(zoo_server, path, params={"b": "true"})
    assert get.headers["content-type"] == r.headers["content-type"]


def test_unknown_dataset_is_a_404_problem(zoo_server: Server) -> None:
    for path in ("/datasets/nope", "/datasets/nope/stream", "/datasets/messages"):
        r = httpx.get(zoo_server.base_url + path, headers=zoo_server.headers())
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"table": "orders"}, "table"),
        ({"idd": "1"}, "idd"),
        ({"id__like": "1"}, "id__like"),
        ({"fields": "id,nope"}, "fields"),
        ({"i2": "40000"}, "i2"),
        ({"u": "not-a-uuid"}, "u"),
        ({"tstz__gt": "yesterday"}, "tstz__gt"),
        ({"j": "{}"}, "j"),
        ({"b__gt": "true"}, "b__gt"),
        ({"i4__prefix": "1"}, "i4__prefix"),
        ({"after": "[1, 2]"}, "after"),
        ({"after": "nope"}, "after"),
        ({"after": "[" * 1000 + "]" * 1000}, "after"),
        ({"after": "[" * 15_000}, "after"),
        ({"after": "[" + '"' + "a" * 15_000 + '"]'}, "after"),
        ({"i4": "٧٩١٩"}, "i4"),  # Arabic-Indic digits: not an integer here
        ({"i4": "1_000"}, "i4"),
        ({"i4": "+7919"}, "i4"),
        ({"i8__in": "1,\uff12"}, "i8__in"),  # a fullwidth digit two
        ({"limit": "1_0"}, "limit"),
        ({"limit": "1" * 5000}, "limit"),  # past Python's 4,300-digit int() guard
        ({"limit": "٣"}, "limit"),
        ({"limit": "1", "format": "xml"}, "format"),
        ({"format": "text"}, "format"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(
    zoo_server: Server, params: dict[str, str], named: str
) -> None:
    r = httpx.get(
        f"{zoo_server.base_url}/datasets/zoo/stream", params=params, headers=zoo_server.headers()
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"].startswith(f"{named}:")


def test_a_value_postgres_rejects_is_a_4xx(zoo_server: Server) -> None:
    r = httpx.get(
        f"{zoo_server.base_url}/datasets/zoo/stream",
        params={"ip": "not-an-address"},
        headers=zoo_server.headers(),
    )
    assert r.status_code == 422, r.text


def test_openapi_has_each_datasets_typed_parameters_and_row_schema(zoo_server: Server) -> None:
    spec = httpx.get(zoo_server.base_url + "/openapi.json").json()
    assert "paths" in spec, spec
    operation = spec["paths"]["/datasets/zoo/stream"]["get"]
    assert operation["tags"] == ["dataset: zoo"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["i2"]["schema"] == {"type": "integer", "minimum": -32768, "maximum": 32767}
    assert parameters["tstz__gte"]["schema"]["pattern"].startswith("^[1-9]")
    assert "t__prefix" in parameters and "i4__prefix" not in parameters
    assert "j__isnull" in parameters and "j" not in parameters
    assert parameters["limit"]["example"] == 100
    standard = spec["paths"]["/datasets/zoo"]["get"]
    row = standard["responses"]["200"]["content"]["application/json"]["schema"]["items"]
    assert row["properties"]["ia"]["type"] == "array"
    assert standard["responses"]["422"]["content"]["application/problem+json"]["example"]
    assert "/datasets/daily" in spec["paths"] and "/messages" not in spec["paths"]


@pytest.mark.parametrize(
    ("path", "query", "named"),
    [
        ("/datasets/zoo/stream", "limit=1&limit=1000000", "limit"),
        ("/datasets/zoo", "limit=1&limit=1000000", "limit"),
        ("/datasets/zoo/stream", "fields=id&fields=t", "fields"),
        ("/datasets/zoo/stream", "format=csv&format=json", "format"),
        ("/datasets/zoo.csv", "after=[1]&after=[200]", "after"),
        ("/datasets/zoo/stream", "i4=5000&i4=6000", "i4"),
        ("/datasets/zoo/stream", "i4__gte=1&i4__gte=200000", "i4__gte"),
        ("/datasets/zoo/stream", "i4__in=3000&i4__in=4000", "i4__in"),
        ("/datasets/zoo/stream", "t__isnull=true&t__isnull=false", "t__isnull"),
        ("/datasets/zoo/stream", "t__prefix=text&t__prefix=x", "t__prefix"),
        ("/datasets/daily/stream", "since=2024-01-19&since=2024-01-01", "since"),
    ],
)
def test_a_repeated_parameter_is_422_naming_it(
    zoo_server: Server, path: str, query: str, named: str
) -> None:
    """The first value is what a proxy, a quota or a cache key reads; a server that takes
    the last (``limit=1&limit=1000000``) lets a client past them. Nothing here takes a
    list by repetition (``fields`` and ``__in`` take commas), so a repeat is refused."""
    r = httpx.get(f"{zoo_server.base_url}{path}?{query}", headers=zoo_server.headers(), timeout=30)
    assert r.status_code == 422, r.text[:300]
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["detail"].startswith(f"{named}: given more than once"), problem
    assert problem["field"] == named


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("after_id=1&after_id=99990", "after_id"),
        ("created_after=2020-01-01T00:00:00Z&created_after=2020-01-02T00:00:00Z", "created_after"),
    ],
)
def test_a_repeated_legacy_parameter_is_422_too(server: Server, query: str, named: str) -> None:
    r = httpx.get(f"{server.base_url}/messages/stream?{query}", headers=server.headers())
    assert r.status_code == 422, r.text[:300]
    assert r.json()["detail"].startswith(f"{named}: given more than once")


def test_two_spellings_of_one_filter_are_both_applied(server: Server, zoo_server: Server) -> None:
    """``i4`` and ``i4__eq``, or a historical name and the filter it stands for, are two
    conditions (the OpenAPI document declares each), not one value overriding another."""
    both = httpx.get(
        f"{server.base_url}/messages?id__gt=99990&after_id=99995&fields=id",
        headers=server.headers(),
    )
    assert [row["id"] for row in both.json()] == [99996, 99997, 99998, 99999, 100000]
    assert _get(zoo_server, "/datasets/zoo?i4=5000&i4__eq=6000").json() == []


def test_different_filters_on_one_column_still_combine(zoo_server: Server) -> None:
    query = "i4__gte=10000&i4__lte=12000&i4__in=11000,12000,99&i4__ne=12000&fields=id"
    assert _get(zoo_server, f"/datasets/zoo?{query}").json() == [{"id": 11}]


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/datasets/", "/datasets"),
        ("/datasets/zoo/?limit=1&format=csv", "/datasets/zoo?limit=1&format=csv"),
        ("/datasets/zoo/stream/", "/datasets/zoo/stream"),
        ("/static-offline-docs", "/static-offline-docs/"),
    ],
)
def test_a_trailing_slash_redirect_stays_on_the_host_the_client_reached(
    zoo_server: Server, path: str, location: str
) -> None:
    """The ``Host`` header is the client's to choose: a ``Location`` built from it sends
    the next request (and, on a cache in front, every client served that answer) to any
    host. A path-only ``Location`` is resolved against the URL really requested."""
    r = httpx.get(
        zoo_server.base_url + path,
        headers={
            **zoo_server.headers(),
            "Host": "evil.example",
            "X-Forwarded-Host": "evil.example",
        },
        follow_redirects=False,
    )
    assert r.status_code == 307, r.text
    assert r.headers["location"] == location
    assert "evil" not in r.text


@pytest.mark.parametrize("path", ["//evil.example/", "//evil.example", "/\\evil.example/"])
def test_a_path_that_looks_like_a_host_is_not_redirected_to(zoo_server: Server, path: str) -> None:
    """``//evil.example`` is a network-path reference: as a ``Location`` it leaves the host."""
    sock = raw_request(zoo_server, path)  # httpx would normalise the path
    received = b""
    try:
        while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
            received += chunk
    finally:
        sock.close()
    head = received.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 404"), head
    assert "location" not in head.lower()


def test_arrow_dates_and_timestamps_beyond_pythons_range_are_exact(
    zoo_server: Server, zoo_url: str
) -> None:
    """BC and five-digit years are exact (as integers since the epoch: Python's datetime
    stops at year 1 and 9999). ``infinity``, which has no Arrow value, is left out here:
    the next test is its refusal on every path."""
    finite = _get(zoo_server, "/datasets/stamps.arrows", params={"id__ne": "2"}).content
    table = pa.ipc.open_stream(finite).read_all()
    got = [
        table.column(c).cast(pa.int64() if c != "dt" else pa.int32()).to_pylist()
        for c in ("ts", "tstz", "dt")
    ]
    epoch = "(extract(epoch FROM {0}) * 1000000)::int8"
    rows = run(
        _fetch(
            zoo_url,
            f"SELECT {epoch.format('ts')}, {epoch.format('tstz')}, dt - date '1970-01-01' "
            "FROM stamps WHERE id <> 2 ORDER BY id",
        )
    )
    assert got == [[r[i] for r in rows] for i in range(3)]


@pytest.mark.parametrize("path", ["binary copy", "copy text", "cursor records"])
def test_an_infinite_timestamp_in_arrow_is_a_422_naming_it_on_every_path(
    zoo_server: Server, copy_text_server: Server, path: str
) -> None:
    """No Arrow value exists for it: each path refuses it the same way, before the first
    batch here (after it, the stream is cut)."""
    server = zoo_server if path == "binary copy" else copy_text_server
    fields = "id,ts,tstz,dt" + (",g" if path == "cursor records" else "")
    infinite = httpx.get(
        f"{server.base_url}/datasets/stamps.arrows",
        params={"id": "2", "fields": fields},
        headers=server.headers(),
        timeout=30,
    )
    assert infinite.status_code == 422, infinite.text
    assert "a timestamp Arrow cannot hold" in infinite.json()["detail"]


def test_a_date_filters_a_timestamp_as_its_midnight_in_utc(zoo_server: Server) -> None:
    def ids(**params: str) -> list[int]:
        r = _get(zoo_server, "/datasets/zoo", params={"fields": "id", **params})
        assert r.status_code == 200, r.text
        return [row["id"] for row in r.json()]

    for column, zone in (("tstz", "Z"), ("ts", "")):
        as_date = ids(**{f"{column}__gte": "2024-01-10", f"{column}__lt": "2024-01-12"})
        as_time = ids(
            **{
                f"{column}__gte": f"2024-01-10T00:00:00{zone}",
                f"{column}__lt": f"2024-01-12T00:00:00{zone}",
            }
        )
        assert as_date == as_time and as_date


def test_a_malformed_timestamp_says_which_forms_are_taken_and_names_a_lost_plus(
    zoo_server: Server,
) -> None:
    bad = httpx.get(
        f"{zoo_server.base_url}/datasets/zoo",
        params={"tstz__gt": "yesterday"},
        headers=zoo_server.headers(),
    )
    assert bad.status_code == 422
    assert "2024-01-01T00:00:00Z" in bad.json()["detail"] and "a date" in bad.json()["detail"]
    # an unencoded + in an offset arrives as a space
    r = httpx.get(
        f"{zoo_server.base_url}/datasets/zoo?tstz__gt=2024-01-01T02:00:00+02:00",
        headers=zoo_server.headers(),
    )
    assert r.status_code == 422 and "%2B" in r.json()["detail"], r.text


def test_a_misspelt_dataset_names_the_closest_the_caller_may_read(zoo_server: Server) -> None:
    for path in ("/datasets/zo0", "/datasets/zo0.csv", "/datasets/zo0/stream"):
        r = httpx.get(zoo_server.base_url + path, headers=zoo_server.headers())
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert "did you mean 'zoo'" in body["detail"], body
        assert body["datasets"][0] == "zoo" and "stamps" in body["datasets"]
    # no credential: a plain 404, no names
    r = httpx.get(zoo_server.base_url + "/datasets/zo0")
    assert r.status_code == 404 and "datasets" not in r.json() and "zoo" not in r.text.lower()


def test_a_suffix_that_is_no_format_names_the_suffixes(zoo_server: Server) -> None:
    r = httpx.get(zoo_server.base_url + "/datasets/zoo.arrow", headers=zoo_server.headers())
    assert r.status_code == 404
    assert "did you mean .arrows?" in r.json()["detail"]
    assert ".parquet" in r.json()["suffixes"]
