"""The format registry: a format is one entry and one encoder. TSV, registered here and
nowhere else (in the server's process, before the app is built), is served on both
routes, in HEAD, as a suffix URL, in ``/datasets`` and in the OpenAPI document."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from app import demo
from app.formats import FORMATS, RowCounter
from tests.support import Server, metric, running

TSV = "text/tab-separated-values"

#: What a plugin would run: no module of the service is touched.
REGISTER_TSV = """
from app import encoders, formats, sql
TAB_COPY = {**sql.CSV_COPY, "delimiter": "\\t"}
formats.register(
    formats.Format(
        "text/tab-separated-values",
        "tsv",
        "copy",
        sql.as_csv,
        lambda columns, rows: encoders.Passthrough(),
        formats.RowCounter.CSV_WITH_HEADER,
        suffixes=("tsv",),
        buffered=formats.Buffered(TAB_COPY),
        copy_options=TAB_COPY,
        description="tab-separated values",
    )
)
"""


@pytest.fixture(scope="module")
def tsv_server(db_url: str) -> Iterator[Server]:
    with running(db_url, before=REGISTER_TSV) as server:
        yield server


def _rows(body: str, delimiter: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body), delimiter=delimiter))


def test_tsv_is_not_registered_in_the_service() -> None:
    assert TSV not in FORMATS


def test_a_server_without_it_refuses_it(server: Server) -> None:
    response = httpx.get(
        f"{server.base_url}/datasets/messages/stream",
        params={"format": "tsv", "limit": 3},
        headers=server.headers(),
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "path", ["/datasets/messages", "/datasets/messages/stream", "/datasets/messages.tsv"]
)
def test_it_is_served_on_both_routes_and_as_a_suffix(tsv_server: Server, path: str) -> None:
    headers = {**tsv_server.headers(), "Prefer": "count=exact"}
    params = {"limit": 5} if path.endswith(".tsv") else {"limit": 5, "format": "tsv"}
    got = httpx.get(f"{tsv_server.base_url}{path}", params=params, headers=headers)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith(TSV)
    assert got.headers["x-total-count"] == "5"
    as_csv = httpx.get(
        f"{tsv_server.base_url}/datasets/messages/stream",
        params={"limit": 5, "format": "csv"},
        headers=headers,
    )
    assert "\t" in got.text
    assert _rows(got.text, "\t") == _rows(as_csv.text, ",")
    assert len(_rows(got.text, "\t")) == 6  # the header and five rows


def test_the_export_counts_its_rows(tsv_server: Server) -> None:
    def sent() -> float:
        return metric(tsv_server, "rowstream_rows_sent_total", format=TSV, dataset="messages")

    before = sent()
    for path in ("/datasets/messages.tsv", "/datasets/messages"):
        params = {"limit": 7} if path.endswith(".tsv") else {"limit": 7, "format": "tsv"}
        got = httpx.get(f"{tsv_server.base_url}{path}", params=params, headers=tsv_server.headers())
        assert got.status_code == 200
    assert sent() - before == 14


def test_head_says_what_a_get_would(tsv_server: Server) -> None:
    for path in ("/datasets/messages.tsv", "/datasets/messages/stream?format=tsv"):
        got = httpx.head(f"{tsv_server.base_url}{path}", headers=tsv_server.headers())
        assert got.status_code == 200
        assert got.headers["content-type"].startswith(TSV)
        assert got.content == b""


def test_it_is_listed_in_datasets(tsv_server: Server) -> None:
    listing = httpx.get(f"{tsv_server.base_url}/datasets", headers=tsv_server.headers()).json()
    (messages,) = [d for d in listing["datasets"] if d["name"] == "messages"]
    assert TSV in messages["formats"]["stream"]
    assert TSV in messages["formats"]["standard"]
    assert messages["links"]["tsv"] == "/datasets/messages.tsv"


def test_it_is_in_the_openapi_document(tsv_server: Server) -> None:
    document = httpx.get(f"{tsv_server.base_url}/openapi.json", headers=tsv_server.headers()).json()
    for path in ("/datasets/messages", "/datasets/messages/stream"):
        operation = document["paths"][path]["get"]
        assert TSV in operation["responses"]["200"]["content"]
        (fmt,) = [p for p in operation["parameters"] if p["name"] == "format"]
        assert "tsv" in fmt["schema"]["enum"]


def test_the_demo_registers_its_text_format_itself() -> None:
    text = demo.TEXT_FORMAT
    assert FORMATS[text.media_type] is text
    assert not text.streamed and text.buffered is None
    assert text.counter is RowCounter.LINES


def test_a_name_or_suffix_already_taken_is_refused() -> None:
    from app import formats

    taken = formats.FORMATS[formats.CSV]
    for clash in (
        replace(taken, media_type="text/x-other"),
        replace(taken, media_type="text/x-other", name="other", suffixes=("stream",)),
    ):
        with pytest.raises(ValueError, match="taken"):
            formats.register(clash)
    assert "text/x-other" not in formats.FORMATS
